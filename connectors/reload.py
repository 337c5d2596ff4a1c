"""Safe hot reload of the rules: a new set that fails validation is rejected with its errors
and the old set keeps serving; events already running finish on the set they started with.

Triggers: ``POST /api/rules/reload``, SIGHUP to the server (``rules-engine serve``), or a
change in the rules directory when watching is enabled (``--watch-rules``).
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify

from rules_engine import RuleFileError, RuleSetInvalid, load_rule_set
from rules_engine.people import Role
from rules_engine.rules.loader import rule_files

from .access import access
from .services import engine
from .services import settings as app_settings

log = logging.getLogger("rules_engine.reload")

# Set by `rules-engine serve`: the gunicorn master to signal so that every worker reloads.
MASTER_PID_VARIABLE = "RULES_ENGINE_SERVER_PID"

blueprint = Blueprint("reload", __name__)


def rules_fingerprint(rules_dir: str) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rule file is added, removed or edited."""
    try:
        return tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size)
                     for path in rule_files([rules_dir]))
    except (RuleFileError, OSError):  # the directory or a file is gone: a change too
        return ()


@blueprint.post("/api/rules/reload")
@access(Role.ADMIN)
def reload_rules() -> Any:
    """Validate the rules directory and serve it if it is clean; 422 with every problem if not."""
    settings = app_settings()
    previous = engine().rules
    try:
        rules = load_rule_set([settings.rules_dir])
    except RuleSetInvalid as invalid:
        log.error("rules reload rejected; still serving version %s:\n%s", previous.version, invalid)
        return jsonify({"error": {"code": "invalid_rules",
                                  "message": f"{len(invalid.errors)} problem(s); still serving "
                                             f"version {previous.version}"},
                        "errors": [e.to_dict() for e in invalid.errors]}), 422
    engine().replace_rules(rules)
    master = os.environ.get(MASTER_PID_VARIABLE)
    if master and master.isdigit() and rules.version != previous.version:
        os.kill(int(master), signal.SIGHUP)  # the other workers reload too
    log.info("rules reloaded: version %s -> %s", previous.version, rules.version)
    return jsonify({"version": rules.version, "previous_version": previous.version,
                    "rules": len(rules), "warnings": [w.to_dict() for w in rules.warnings],
                    "directory": str(Path(settings.rules_dir))})

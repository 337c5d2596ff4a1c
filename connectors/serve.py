"""``rules-engine serve``: the webhook app under gunicorn, checked before any worker starts."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from rules_engine import RuleSet, RuleSetInvalid, Store, load_rule_set
from rules_engine.cli import HelpFormatter

from .config import APP_ENVIRONMENT, ConfigError, Settings


class _ValidatingArbiter(Arbiter):
    """Gunicorn's master, which on SIGHUP restarts the workers (gracefully: requests in
    flight finish on the old rules) only for a rule set that validates."""

    def handle_hup(self) -> None:
        rules_dir = os.environ.get(APP_ENVIRONMENT["rules_dir"], "rules")
        try:
            rules = load_rule_set([rules_dir])
        except RuleSetInvalid as invalid:
            self.log.error("reload refused: the rules are invalid; the workers keep serving the "
                           "current set:\n%s", invalid)
            return
        self.log.info("reloading the workers on rules version %s", rules.version)
        self.app.rules = rules
        super().handle_hup()


def _watch_rules(rules_dir: str, every_seconds: float) -> None:
    """Send SIGHUP to this (master) process whenever the rules directory changes."""
    from .reload import rules_fingerprint

    seen = rules_fingerprint(rules_dir)
    while True:
        time.sleep(every_seconds)
        current = rules_fingerprint(rules_dir)
        if current != seen:
            seen = current
            os.kill(os.getpid(), signal.SIGHUP)


class _Server(BaseApplication):
    """Gunicorn with its options given here; each worker builds its own app.

    The master holds the last rule set that validated, and every worker it forks serves
    that set: a worker started while the files on disk are broken still boots.
    """

    def __init__(self, options: dict[str, Any], rules: RuleSet, config: dict[str, Any], *,
                 threads: int, body_timeout: float) -> None:
        self.options = options
        self.rules = rules
        self.config = config
        self.threads = threads
        self.body_timeout = body_timeout
        super().__init__()

    def run(self) -> None:
        _ValidatingArbiter(self).run()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app
        from .asgi import buffered_wsgi

        app = create_app(self.config, rules=self.rules)
        return buffered_wsgi(app, threads=self.threads, body_timeout=self.body_timeout,
                             max_body_bytes=app.config["MAX_CONTENT_LENGTH"])


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rules-engine serve", description="Serve the webhook app with gunicorn.",
        formatter_class=HelpFormatter,
        epilog="In production, put a TLS-terminating reverse proxy in front (see "
               "docs/operations.md: production topology) and keep --host on loopback or a "
               "private address.")
    parser.add_argument("--host", default=os.environ.get("RULES_ENGINE_HOST", "127.0.0.1"),
                        help="the address to listen on ($RULES_ENGINE_HOST)")
    parser.add_argument("--port", type=int, default=os.environ.get("RULES_ENGINE_PORT", "8000"),
                        help="the port to listen on ($RULES_ENGINE_PORT)")
    parser.add_argument("--workers", type=int,
                        default=os.environ.get("RULES_ENGINE_WORKERS", "2"),
                        help="worker processes ($RULES_ENGINE_WORKERS)")
    parser.add_argument("--threads", type=int,
                        default=os.environ.get("RULES_ENGINE_THREADS", "4"),
                        help="requests each worker runs at once (complete requests only: "
                             "a slow client never holds one; $RULES_ENGINE_THREADS)")
    parser.add_argument("--header-timeout", type=int, default=10,
                        help="seconds a client has to send a request's head (and an idle "
                             "kept-alive connection is kept)")
    parser.add_argument("--body-timeout", type=float, default=30,
                        help="seconds a client has to send a request's body")
    parser.add_argument("--timeout", type=int, default=30, help="worker timeout, seconds")
    parser.add_argument("--rules", help="rules directory ($RULES_ENGINE_RULES_DIR, default rules/)")
    parser.add_argument("--database-url", help="SQLAlchemy URL ($RULES_ENGINE_DATABASE_URL)")
    parser.add_argument("--dev", action="store_true",
                        help="development only, on a loopback --host only: endpoints "
                             "without a secret accept anyone")
    parser.add_argument("--watch-rules", action="store_true",
                        default=os.environ.get("RULES_ENGINE_WATCH_RULES") == "1",
                        help="reload the rules when a file in the rules directory changes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check the settings, the rules and the store, then serve; exit status 2 when they fail."""
    args = build_parser().parse_args(argv)
    if args.dev and args.host not in LOOPBACK:
        print(f"rules-engine serve: refusing to start: --dev serves endpoints without "
              f"authentication, so it binds a loopback address only ({', '.join(LOOPBACK)}), "
              f"not {args.host}", file=sys.stderr)
        return 2
    overrides = {"rules_dir": args.rules, "database_url": args.database_url}
    config = {**{k: v for k, v in overrides.items() if v is not None}, "dev": args.dev}
    try:
        settings = Settings.load(config)
        warnings = settings.check()
        rules = load_rule_set([settings.rules_dir])
        Store(settings.database_url).dispose()  # creates the schema once, before the workers
    except ConfigError as error:
        print(f"rules-engine serve: refusing to start: {error}", file=sys.stderr)
        return 2
    except RuleSetInvalid as invalid:
        print(f"rules-engine serve: the rules are invalid:\n{invalid}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"\n*** WARNING: {warning} ***\n", file=sys.stderr)
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics sums every worker
        metrics_dir = tempfile.mkdtemp(prefix="rules-engine-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        print(f"rules-engine serve: the metrics of every worker in {metrics_dir}", file=sys.stderr)
    if "prometheus_client" in sys.modules:  # it reads the variable once, when imported
        print("rules-engine serve: prometheus_client was imported too early; /metrics would "
              "miss the workers' counts", file=sys.stderr)
        return 2
    from .reload import MASTER_PID_VARIABLE
    for name, value in overrides.items():
        if value is not None:  # the master reads them again on SIGHUP
            os.environ[APP_ENVIRONMENT[name]] = value
    master = os.getpid()
    os.environ[MASTER_PID_VARIABLE] = str(master)  # the master: gunicorn runs here
    if args.watch_rules:
        threading.Thread(target=_watch_rules, args=(settings.rules_dir, 1.0), daemon=True).start()
    try:
        _Server({"bind": f"{args.host}:{args.port}", "workers": args.workers,
                 "worker_class": "connectors.asgi.Worker", "keepalive": args.header_timeout,
                 "timeout": args.timeout, "accesslog": "-", "control_socket_disable": True,
                 "logger_class": "connectors.access_log.RedactingLogger"},
                rules, config, threads=args.threads, body_timeout=args.body_timeout).run()
    finally:
        # A worker leaves through here too when it exits (it was forked inside run()):
        # only the master removes what every worker writes to.
        if metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

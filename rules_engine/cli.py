"""The ``rules-engine`` command line: one small function per subcommand."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from . import queries
from .demo_data import generate_demo_data
from .engine import DEFAULT_MAX_DEPTH, Engine
from .errors import RulesEngineError, RuleSetInvalid, RuleWarning
from .events import parse_event
from .loader import load_rule_set, rule_files
from .metrics import GroupBy, ReportQuery, conversation_report, parse_report_query
from .render import render_trace
from .report_format import to_csv, to_table
from .rule_tests import report, timed_run
from .schema import load_schema
from .store import DEFAULT_DATABASE_URL, Store


def _rules_dir(args: argparse.Namespace) -> str:
    return args.rules or os.environ.get("RULES_ENGINE_RULES_DIR") or "rules"


def _database_url(args: argparse.Namespace) -> str:
    return args.database_url or os.environ.get("RULES_ENGINE_DATABASE_URL") or DEFAULT_DATABASE_URL


def _write_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2)
    out.write("\n")


def _engine(args: argparse.Namespace) -> Engine:
    return Engine(Store(_database_url(args)), load_rule_set([_rules_dir(args)]),
                  max_depth=args.max_depth)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    paths = args.paths or [_rules_dir(args)]
    try:
        rule_set = load_rule_set(paths)
    except RuleSetInvalid as invalid:
        errors = [e for e in invalid.errors if not isinstance(e, RuleWarning)]
        warnings = [e for e in invalid.errors if isinstance(e, RuleWarning)]
        if args.format == "json":
            _write_json(out, {"ok": False, "errors": [e.to_dict() for e in errors],
                              "warnings": [w.to_dict() for w in warnings]})
        else:
            _write_problems(out, errors, warnings)
            out.write(f"{len(errors)} problem(s) found\n")
        return 1
    files = len(rule_files(paths))
    if args.format == "json":
        _write_json(out, {"ok": True, "rules": len(rule_set), "files": files,
                          "version": rule_set.version,
                          "warnings": [w.to_dict() for w in rule_set.warnings]})
    else:
        _write_problems(out, [], rule_set.warnings)
        out.write(f"OK: {len(rule_set)} rule(s) in {files} file(s), version {rule_set.version}"
                  + (f", {len(rule_set.warnings)} warning(s)" if rule_set.warnings else "") + "\n")
    return 0


def _write_problems(out: TextIO, errors: Sequence[RulesEngineError],
                    warnings: Sequence[RulesEngineError]) -> None:
    for error in errors:
        out.write(f"{error}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    _write_json(out, load_schema(args.which))
    return 0


def _read_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    return json.loads(text)


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    try:
        data = _read_json(args.event)
    except (OSError, json.JSONDecodeError) as error:
        out.write(f"{args.event}: cannot read event JSON: {error}\n")
        return 2
    event = parse_event(data)
    result = _engine(args).simulate(event)
    if args.format == "json":
        _write_json(out, result.trace)
    else:
        out.write("Dry run: nothing was written.\n")
        out.write(render_trace(result.trace))
    return 0


def cmd_ingest(args: argparse.Namespace, out: TextIO) -> int:
    engine = _engine(args)
    stream = sys.stdin if args.events == "-" else open(args.events, encoding="utf-8")
    totals: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                result = engine.process(parse_event(json.loads(line)))
            except json.JSONDecodeError as error:
                out.write(f"{args.events}:{number}: rejected: not JSON ({error.msg})\n")
                totals["rejected"] += 1
                continue
            except RulesEngineError as error:
                out.write(f"{args.events}:{number}: rejected: {error}\n")
                totals["rejected"] += 1
                continue
            totals[result.status] += 1
            if result.duplicate:
                continue
            fired.update(result.fired)
            for change in result.changes:
                totals[change["operation"]] += 1
    out.write(
        f"events: {totals['applied']} applied, {totals['duplicate']} duplicate(s) skipped, "
        f"{totals['rejected']} rejected\n"
        f"conversations: {totals['open_conversation']} opened, "
        f"{totals['close_conversation']} closed; contacts created: {totals['create_contact']}\n"
    )
    for rule_id, count in sorted(fired.items(), key=lambda item: (-item[1], item[0])):
        out.write(f"  {count:6d}  {rule_id}\n")
    return 1 if totals["rejected"] else 0


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    now = datetime.now(timezone.utc)
    query = parse_report_query(vars(args), now=now)
    report = conversation_report(Store(_database_url(args)), query, now=now)
    if args.format == "json":
        _write_json(out, report)
    elif args.format == "csv":
        out.write(to_csv(report))
    else:
        out.write(to_table(report))
    return 0


def cmd_demo_data(args: argparse.Namespace, out: TextIO) -> int:
    store = Store(_database_url(args))
    if args.if_empty:
        with store.read() as tx:
            existing = tx.count_conversations()
        if existing:
            out.write(f"the store already holds {existing} conversations: no demo data added\n")
            return 0
    summary = generate_demo_data(store, conversations=args.conversations, days=args.days,
                                 seed=args.seed)
    out.write(f"added {summary.conversations} conversations ({summary.open_now} open now) for "
              f"{summary.contacts} contacts, {summary.since:%Y-%m-%d} .. {summary.until:%Y-%m-%d}\n")
    return 0


def cmd_test(args: argparse.Namespace, out: TextIO) -> int:
    rules = load_rule_set([_rules_dir(args)])
    paths = args.paths or [str(Path(_rules_dir(args)) / "tests")]
    results, seconds = timed_run(rules, paths)
    out.write(report(results, seconds))
    return 0 if results and all(r.passed for r in results) else 1


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    store = Store(_database_url(args))
    trace = queries.event_trace(store, args.event_id)
    if args.format == "json":
        _write_json(out, trace)
        return 0
    try:
        rules = load_rule_set([_rules_dir(args)])
    except RuleSetInvalid:
        rules = None
    out.write(render_trace(trace, rules))
    return 0


def cmd_prune(args: argparse.Namespace, out: TextIO) -> int:
    days = args.keep_days
    if days is None:
        days = int(os.environ.get("RULES_ENGINE_TRACE_RETENTION_DAYS", "30"))
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    removed = Store(_database_url(args)).run(lambda tx: tx.prune_traces(cutoff))
    out.write(f"pruned {removed} trace(s) recorded before {cutoff:%Y-%m-%d %H:%M} UTC "
              f"(kept {days} days)\n")
    return 0


def cmd_db(args: argparse.Namespace, out: TextIO) -> int:
    store = Store(_database_url(args), migrate=args.action == "upgrade", verify=False)
    current, head = store.revisions()
    store.dispose()
    state = "up to date" if current == head else "run `rules-engine db upgrade`"
    out.write(f"schema revision {current or 'none'} (newest {head}): {state}\n")
    return 0 if current == head else 1


def _hand_over(module: str) -> Callable[[argparse.Namespace, TextIO], int]:
    """A command run by an edge module in a fresh interpreter (the core never imports the
    web stack); the global --rules / --database-url travel as environment variables."""

    def command(args: argparse.Namespace, out: TextIO) -> int:
        if args.rules:
            os.environ["RULES_ENGINE_RULES_DIR"] = args.rules
        if args.database_url:
            os.environ["RULES_ENGINE_DATABASE_URL"] = args.database_url
        out.flush()
        os.execv(sys.executable, [sys.executable, "-m", module, *args.options])
        return 0  # not reached

    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rules-engine", description=__doc__)
    parser.add_argument("--rules", help="rules directory (default: $RULES_ENGINE_RULES_DIR or rules/)")
    parser.add_argument("--database-url",
                        help=f"SQLAlchemy URL (default: $RULES_ENGINE_DATABASE_URL or {DEFAULT_DATABASE_URL})")
    parser.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH,
                        help="how deep rules may chain through emitted events (default 5)")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check rule files; exit 1 on any problem")
    validate.add_argument("paths", nargs="*", help="files or directories (default: the rules dir)")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of rule files (or events)")
    schema.add_argument("which", nargs="?", choices=["rules", "event", "rule-tests"], default="rules")
    schema.set_defaults(handler=cmd_schema)

    simulate = commands.add_parser("simulate", help="dry-run one event: what would fire and why")
    simulate.add_argument("event", help="an event JSON file, or - for stdin")
    simulate.add_argument("--format", choices=["text", "json"], default="text")
    simulate.set_defaults(handler=cmd_simulate)

    ingest = commands.add_parser("ingest", help="apply events from a JSON Lines file")
    ingest.add_argument("events", help="a .jsonl file (one event per line), or - for stdin")
    ingest.set_defaults(handler=cmd_ingest)

    report = commands.add_parser("report", help="resolution time and closed count")
    report.add_argument("--since", help="a date (YYYY-MM-DD) or timestamp; default 30 days ago")
    report.add_argument("--until", help="a date (that whole day included) or timestamp; default today")
    report.add_argument("--by", choices=[g.value for g in GroupBy], default="none")
    for name in ReportQuery.FILTERABLE:
        report.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"only this {name}")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table")
    report.set_defaults(handler=cmd_report)

    demo = commands.add_parser("demo-data", help="fill the store with a seeded demo history")
    demo.add_argument("--conversations", type=int, default=6000)
    demo.add_argument("--days", type=int, default=120)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--if-empty", action="store_true",
                      help="add nothing when the store already holds conversations")
    demo.set_defaults(handler=cmd_demo_data)

    test = commands.add_parser("test", help="run the rules' YAML test cases (default: <rules>/tests)")
    test.add_argument("paths", nargs="*")
    test.set_defaults(handler=cmd_test)

    explain = commands.add_parser("explain", help="why an event did what it did (its trace)")
    explain.add_argument("event_id")
    explain.add_argument("--format", choices=["text", "json"], default="text")
    explain.set_defaults(handler=cmd_explain)

    prune = commands.add_parser("prune-traces", help="delete old traces (run it daily)")
    prune.add_argument("--keep-days", type=int,
                       help="default: $RULES_ENGINE_TRACE_RETENTION_DAYS or 30")
    prune.set_defaults(handler=cmd_prune)

    database = commands.add_parser("db", help="the database schema: upgrade it, or show its revision")
    database.add_argument("action", choices=["upgrade", "current"])
    database.set_defaults(handler=cmd_db)

    serve = commands.add_parser(
        "serve", add_help=False,
        help="serve the webhook app with gunicorn (see `rules-engine serve --help`)")
    serve.set_defaults(handler=_hand_over("connectors.serve"))

    worker = commands.add_parser(
        "worker", add_help=False,
        help="deliver the outbox: send_message and http_request (see `rules-engine worker --help`)")
    worker.set_defaults(handler=_hand_over("connectors.outbox"))
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("serve", "worker"):
        args.options = extra  # the edge module parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    stream = out or sys.stdout
    try:
        return int(args.handler(args, stream))
    except RuleSetInvalid as invalid:
        stream.write(f"the rules are invalid:\n{invalid}\n")
        return 1
    except RulesEngineError as error:
        stream.write(f"error: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

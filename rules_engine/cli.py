"""The ``rules-engine`` command line: one small function per subcommand.

Output goes to stdout; every error and warning to stderr, so a redirected report or CSV
holds only the report. Exit status: 0 done, 1 problems found (invalid rules, failed tests,
rejected events), 2 the command could not run (a bad option, a missing or unreachable
database, an unreadable file).
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from rules_engine import outbox, people, queries
from rules_engine.demo_data import generate_demo_data
from rules_engine.domain.errors import (
    RuleFileError,
    RulesEngineError,
    RuleSetInvalid,
    RuleWarning,
)
from rules_engine.domain.timers import duration_option
from rules_engine.engine import DEFAULT_MAX_DEPTH, Engine, Result, firings_summary
from rules_engine.formats.events import parse_event, parse_timestamp
from rules_engine.formats.schema import load_schema
from rules_engine.metrics import (
    GroupBy,
    ReportQuery,
    conversation_report,
    parse_report_query,
    rebuild_rollups,
)
from rules_engine.report_format import to_csv, to_table
from rules_engine.rule_tests import check_test_files, report, rules_folder_of, timed_run
from rules_engine.rules.loader import load_rule_set, rule_files
from rules_engine.rules.ruleset import RuleSet
from rules_engine.store import DEFAULT_DATABASE_URL, Store, StoreNotReady, database_url
from rules_engine.trace.render import render_trace

DESCRIPTION = "Validate, test and run automation rules for customer-messaging conversations."
EXIT_CODES = """exit status:
  0  done
  1  problems found: invalid rules, failed rule tests, rejected events
  2  the command could not run: a bad option, a missing or unreachable database,
     an unreadable file

global options (--rules, --database-url, --max-depth) go before or after the command.
"""


def _rules_dir(args: argparse.Namespace) -> str:
    return args.rules or os.environ.get("RULES_ENGINE_RULES_DIR") or "rules"


def _database_url(args: argparse.Namespace) -> str:
    return database_url(args.database_url)


# What keeps a command from using its database: a URL SQLAlchemy cannot use, a server it
# cannot reach, a schema at another revision (exit status 2).
DATABASE_PROBLEMS = (ArgumentError, NoSuchModuleError, OperationalError, StoreNotReady)


def database_problem(error: Exception, url: str) -> str:
    """What to tell the user about one of ``DATABASE_PROBLEMS`` met at ``url``."""
    if isinstance(error, StoreNotReady):
        return f"error: {error}"
    if isinstance(error, OperationalError):
        return (f"error: cannot reach the database: {str(error.orig).strip()[:300]}\n"
                "(hint: check that it is running and that the URL is right)")
    return (f"error: cannot use the database URL {url!r}: {error}\n"
            "(hint: e.g. sqlite:///rules-engine.db or postgresql+psycopg://user@host/db)")


def _write_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2)
    out.write("\n")


def _engine(args: argparse.Namespace, *, existing: bool = False) -> Engine:
    store = Store.open_existing(_database_url(args)) if existing else Store(_database_url(args))
    return Engine(store, load_rule_set([_rules_dir(args)]), max_depth=args.max_depth)


def _interactive(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


@contextmanager
def _progress(err: TextIO, what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (stderr), nothing otherwise; yields ``advance(n)``."""
    if not _interactive(err):
        yield lambda n: None
        return
    from rich.console import (
        Console,  # only for a terminal: rich takes a while to import
    )
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=err), transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


def _rules_of_tests(args: argparse.Namespace, folders: set[str]) -> str:
    """The rules tests are about: --rules; else the folder their ``tests/`` folder is in;
    else the rules directory."""
    if args.rules:
        return str(args.rules)
    if len(folders) > 1:
        raise RuleFileError(f"these tests belong to different rule sets: {', '.join(sorted(folders))}",
                            hint="test one rule set at a time, or name the rules with --rules")
    return folders.pop() if folders else _rules_dir(args)


def _validate_targets(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The rule files and the test files ``validate`` checks: a ``tests/`` folder or a file
    in one is tests (checked against the rules above it); any other path is rules, and a
    rules folder's ``tests/`` is checked too."""
    rule_paths, test_paths, folders = [], [], set()
    for given in args.paths or [_rules_dir(args)]:
        folder = rules_folder_of(given)
        if folder is not None:
            test_paths.append(given)
            folders.add(folder)
            continue
        rule_paths.append(given)
        if (Path(given) / "tests").is_dir():
            test_paths.append(str(Path(given) / "tests"))
    return rule_paths or [_rules_of_tests(args, folders)], test_paths


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rule_paths, test_paths = _validate_targets(args)
    rule_set: RuleSet | None = None
    try:
        rule_set = load_rule_set(rule_paths)
        errors, warnings = [], list(rule_set.warnings)
    except RuleSetInvalid as invalid:
        errors = [e for e in invalid.errors if not isinstance(e, RuleWarning)]
        warnings = [e for e in invalid.errors if isinstance(e, RuleWarning)]
    tests = check_test_files(test_paths, {r.id for r in rule_set.rules} if rule_set else None)
    errors.extend(tests.problems)
    if errors or rule_set is None:
        if args.format == "json":
            _write_json(out, {"ok": False, "errors": [e.to_dict() for e in errors],
                              "warnings": [w.to_dict() for w in warnings]})
        else:
            _write_problems(err, errors, warnings)
            err.write(f"{len(errors)} problem(s) found\n")
        return 1
    files = len(rule_files(rule_paths))
    if args.format == "json":
        _write_json(out, {"ok": True, "rules": len(rule_set), "files": files,
                          "tests": tests.cases, "test_files": tests.files,
                          "version": rule_set.version, "warnings": [w.to_dict() for w in warnings]})
    else:
        _write_problems(err, [], warnings)
        checked = (f" and {tests.cases} test case(s) in {tests.files} test file(s)"
                   if tests.files else "")
        out.write(f"OK: {len(rule_set)} rule(s) in {files} file(s){checked}, version "
                  f"{rule_set.version}" + (f", {len(warnings)} warning(s)" if warnings else "")
                  + "\n")
    return 0


def _write_problems(out: TextIO, errors: Sequence[RulesEngineError],
                    warnings: Sequence[RulesEngineError]) -> None:
    for error in errors:
        out.write(f"{error}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    _write_json(out, load_schema(args.which))
    return 0


def _read_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    return json.loads(text)


IN_MEMORY = "sqlite://"  # an empty SQLite database that lives as long as the command


def cmd_simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        data = _read_json(args.event)
    except (OSError, json.JSONDecodeError) as error:
        err.write(f"{args.event}: cannot read event JSON: {error}\n")
        return 2
    event = parse_event(data)
    missing = Store.missing_file(_database_url(args))
    if missing is None:
        engine = _engine(args, existing=True)
    else:  # a first try needs no history: an empty state, in memory only
        engine = Engine(Store(IN_MEMORY), load_rule_set([_rules_dir(args)]),
                        max_depth=args.max_depth)
        note = (f"No database at {missing}: simulating on an empty state in memory (no "
                f"history; nothing is created on disk).\n")
        (err if args.format == "json" else out).write(note)
    with engine.store.read() as tx:
        seen_before = tx.is_event_processed(event.id)
    if args.advance is None:
        results: list[Any] = [engine.simulate(event)]
    else:
        results = engine.simulate_then_advance(event, args.advance)
    if args.format == "json":
        traces = [_simulated(result) for result in results]
        _write_json(out, traces[0] if args.advance is None else traces)
        return 0
    out.write(f"Dry run on rules version {engine.rules.version}: nothing was written.\n")
    if seen_before:
        out.write(f"(Event {event.id} was processed before; this is what the current rules "
                  f"would do now. `rules-engine explain {event.id}` shows what happened then.)\n")
    first, *later = results
    out.write(_simulated_text(first))
    if args.advance is not None:
        out.write(f"Then, over the next {args.advance}: {len(later)} timer(s) fire.\n")
        for result in later:
            out.write(_simulated_text(result))
    return 0


def _simulated(result: Result | RulesEngineError) -> dict[str, Any]:
    """A simulated event's trace as JSON: the trace, or why there is none."""
    if isinstance(result, RulesEngineError):
        return {"error": str(result)}
    if result.trace is None:  # a status callback aimed at no message of ours
        return {"status": result.status, "reason": result.reason}
    return dict(result.trace)


def _simulated_text(result: Result | RulesEngineError) -> str:
    if isinstance(result, RulesEngineError):
        return f"error: {result}\n"
    if result.trace is None:
        return f"{result.status}: {result.reason}\n"
    return render_trace(result.trace)


def cmd_tick(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    now = args.now or datetime.now(timezone.utc)
    engine = _engine(args, existing=True)
    firings = []
    for timer, outcome in engine.fire_all_due(now):
        firings.append((timer, outcome))
        due = timer.due_at.isoformat(timespec="seconds")
        if isinstance(outcome, RulesEngineError):
            out.write(f"{timer.id} (due {due}): refused: {outcome}\n")
            continue
        rules = ", ".join(outcome.fired) or "no rule fired"
        out.write(f"{timer.id} (due {due}): {outcome.status}: {rules}\n")
    with engine.store.read() as tx:
        pending = tx.timers(limit=1)
    following = (f"next due at {pending[0].due_at.isoformat(timespec='seconds')}" if pending
                 else "no timer pending")
    out.write(f"tick: {firings_summary(firings)} due by {now.isoformat(timespec='seconds')}; "
              f"{following}\n")
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = _engine(args, existing=True)
    event = parse_event({
        "id": f"cli:{uuid.uuid4()}", "type": "manual", "contact": {"id": args.contact},
        "timestamp": datetime.now(timezone.utc).isoformat(), "actor": args.actor or _login(),
        "params": {**dict(args.param or ()), "rule_id": args.rule}})
    result = engine.process(event)
    assert result.trace is not None
    out.write(render_trace(result.trace))
    return 0


def _login() -> str:
    """Who runs a command here: ``cli:<login name>`` (``cli`` when the system knows none)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _param_option(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=VALUE``."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=VALUE")
    return name, value


def _timestamp_option(text: str) -> datetime:
    """An argparse type: an ISO 8601 timestamp with a time zone."""
    try:
        return parse_timestamp(text)
    except RulesEngineError as error:
        hint = f" (hint: {error.hint})" if error.hint else ""
        raise argparse.ArgumentTypeError(error.message + hint) from None


INGEST_BATCH = 200  # events per transaction (each in its own savepoint)


def cmd_ingest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    engine = _engine(args)
    if args.events == "-":
        lines, total = sys.stdin, None
    else:
        path = Path(args.events)
        lines, total = path.open(encoding="utf-8"), sum(1 for _ in path.open("rb"))
    totals: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    started = time.perf_counter()

    def reject(number: int, why: str) -> None:
        err.write(f"{args.events}:{number}: rejected: {why}\n")
        totals["rejected"] += 1

    def apply(batch: list[tuple[int, Any]]) -> None:
        for (number, _), outcome in zip(batch, engine.process_many([e for _, e in batch])):
            if isinstance(outcome, RulesEngineError):
                reject(number, str(outcome))
                continue
            totals[outcome.status] += 1
            if not outcome.duplicate:
                fired.update(outcome.fired)
                totals.update(change["operation"] for change in outcome.changes)

    with lines, _progress(err, "ingesting", total) as advance:
        batch: list[tuple[int, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                advance(1)
                continue
            try:
                batch.append((number, parse_event(json.loads(line))))
            except json.JSONDecodeError as error:
                reject(number, f"not JSON ({error.msg})")
            except RulesEngineError as error:
                reject(number, str(error))
            if len(batch) >= INGEST_BATCH:
                apply(batch)
                advance(len(batch))
                batch = []
        apply(batch)
        advance(len(batch))
    seconds = time.perf_counter() - started
    events = totals["applied"] + totals["noop"] + totals["duplicate"] + totals["rejected"]
    out.write(
        f"events: {totals['applied'] + totals['noop']} applied, {totals['duplicate']} "
        f"duplicate(s) skipped, {totals['rejected']} rejected in {seconds:.1f}s "
        f"({events / max(seconds, 1e-9):,.0f} events/s)\n"
        f"conversations: {totals['open_conversation']} opened, "
        f"{totals['close_conversation']} closed; contacts created: {totals['create_contact']}\n"
    )
    for rule_id, count in sorted(fired.items(), key=lambda item: (-item[1], item[0])):
        out.write(f"  {count:6d}  {rule_id}\n")
    return 1 if totals["rejected"] else 0


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    now = datetime.now(timezone.utc)
    query = parse_report_query(vars(args), now=now)
    report = conversation_report(Store.open_existing(_database_url(args)), query, now=now)
    if args.format == "json":
        _write_json(out, report)
    elif args.format == "csv":
        out.write(to_csv(report))
    else:
        out.write(to_table(report))
    return 0


def cmd_demo_data(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = Store(_database_url(args))
    if args.if_empty:
        with store.read() as tx:
            existing = tx.count_conversations()
        if existing:
            out.write(f"the store already holds {existing} conversations: no demo data added\n")
            return 0
    started = time.perf_counter()
    with _progress(err, "demo data", args.conversations) as advance:
        summary = generate_demo_data(store, conversations=args.conversations, days=args.days,
                                     seed=args.seed, progress=advance)
    out.write(f"added {summary.conversations} conversations ({summary.open_now} open now) for "
              f"{summary.contacts} contacts, {summary.since:%Y-%m-%d} .. {summary.until:%Y-%m-%d} "
              f"in {time.perf_counter() - started:.1f}s\n")
    return 0


def cmd_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    paths, folders = [], set()
    for given in args.paths or [str(Path(_rules_dir(args)) / "tests")]:
        if (Path(given) / "tests").is_dir():
            given = str(Path(given) / "tests")  # a rules directory: the tests beside its rules
        paths.append(given)
        folder = rules_folder_of(given)
        if folder is not None:
            folders.add(folder)
    rules_dir = _rules_of_tests(args, folders)
    rule_set = load_rule_set([rules_dir])
    out.write(f"rule set: {rules_dir} ({len(rule_set)} rule(s), version {rule_set.version})\n")
    results, seconds = timed_run(rule_set, paths)
    out.write(report(results, seconds))
    if not results:
        err.write(f"no test cases found in {', '.join(paths)}\n")
    return 0 if results and all(r.passed for r in results) else 1


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = Store.open_existing(_database_url(args))
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


def cmd_events(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    events = queries.recent_events(Store.open_existing(_database_url(args)), limit=args.recent,
                                   contact_id=args.contact)
    if args.format == "json":
        _write_json(out, events)
        return 0
    for event in events:
        fired = ", ".join(event["fired"]) or "-"
        changes = ", ".join(event["changes"]) or "no change"
        out.write(f"{event['received_at'][:19]}  {event['event_id']}  {event['type']}  "
                  f"{event['channel'] or '-'}  contact {event['contact_id']}  fired: {fired}  "
                  f"({changes})\n")
    if not events:
        err.write("no events recorded" + (f" for contact {args.contact}" if args.contact else "")
                  + "\n")
    return 0


def cmd_prune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    days = args.keep_days
    if days is None:
        try:
            days = _whole_number(os.environ.get("RULES_ENGINE_TRACE_RETENTION_DAYS", "30"), least=0)
        except argparse.ArgumentTypeError as error:
            err.write(f"error: RULES_ENGINE_TRACE_RETENTION_DAYS: {error}\n")
            return 2
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    started = time.perf_counter()
    removed = Store.open_existing(_database_url(args)).run(lambda tx: tx.prune_traces(cutoff))
    out.write(f"pruned {removed} trace(s) recorded before {cutoff:%Y-%m-%d %H:%M} UTC "
              f"(kept {days} days) in {time.perf_counter() - started:.1f}s\n")
    return 0


def cmd_db(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.action == "rebuild-rollups":
        return _rebuild_rollups(args, out)
    store = Store(_database_url(args), migrate=args.action == "upgrade", verify=False)
    current, head = store.revisions()
    store.dispose()
    state = "up to date" if current == head else "run `rules-engine db upgrade`"
    out.write(f"schema revision {current or 'none'} (newest {head}): {state}\n")
    return 0 if current == head else 1


def _rebuild_rollups(args: argparse.Namespace, out: TextIO) -> int:
    store = Store.open_existing(_database_url(args))
    started = time.perf_counter()
    try:
        rebuilt = rebuild_rollups(store)
    finally:
        store.dispose()
    out.write(f"rebuilt the report rollups from {rebuilt['resolution']} closed and "
              f"{rebuilt['first_response']} first-answered conversations: {rebuilt['rows']} "
              f"rows, in one transaction, in {time.perf_counter() - started:.1f}s\n")
    return 0


def cmd_outbox(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = Store(_database_url(args))
    try:
        if args.action == "retry":
            ids = outbox.retry(store, status=args.status, channel=args.channel, kind=args.kind)
            err.write(f"{len(ids)} row(s) queued again" + (f": {_ids(ids)}" if ids else "") + "\n")
        elif args.action == "resume":
            outbox.resume(store, args.channel)
            err.write(f"channel {args.channel} resumed: its waiting rows go out now\n")
        else:
            _list_outbox(args, store, out, err)
    finally:
        store.dispose()
    return 0


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(f"#{n}" for n in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


OUTBOX_COLUMNS = ("id", "channel", "status", "attempts", "next_attempt_at",
                  "platform_message_id", "error")


def _list_outbox(args: argparse.Namespace, store: Store, out: TextIO, err: TextIO) -> None:
    rows = outbox.list_outbound(store, status=args.status, channel=args.channel,
                                kind=args.kind, limit=args.limit)
    shown = [{key: row[key] for key in OUTBOX_COLUMNS} for row in rows]
    if args.format == "json":
        _write_json(out, shown)
        return
    for row in shown:
        error = row["error"]
        said = (f"{error['kind']}{' ' + error['code'] if error['code'] else ''}: {error['message']}"
                if error else "")
        target = row["channel"] or "http"
        due = row["next_attempt_at"][:19] if row["status"] == "pending" else ""
        out.write(f"#{row['id']:<6} {target:<10} {row['status']:<10} {row['attempts']:>3}  "
                  f"{due:<19}  {row['platform_message_id'] or '':<24}  {said}\n")
    for pause in outbox.pauses(store):
        err.write(f"channel {pause['channel']} is paused since {pause['paused_at'][:19]}: "
                  f"{pause['message']} (rules-engine outbox resume {pause['channel']})\n")
    if not rows:
        err.write("no outbox rows match\n")


def cmd_users(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = Store(_database_url(args))
    now = datetime.now(timezone.utc)
    try:
        if args.action == "add":
            user, token = people.add_user(store, args.name, people.Role(args.role), now=now)
            out.write(token + "\n")  # alone on stdout, so that a script can capture it
            err.write(f"added {user.role} '{user.name}'; the token above is shown only once: "
                      "give it to them through a safe channel\n")
        elif args.action == "revoke":
            user = people.revoke_user(store, args.name, now=now)
            err.write(f"revoked '{user.name}': their token and dashboard sessions no longer "
                      "work\n")
        elif args.action == "set":
            user = people.set_presence(store, args.name, _presence(args))
            cap = "no cap" if user.max_open is None else f"at most {user.max_open} open"
            err.write(f"'{user.name}' is {user.availability} ({cap})\n")
        elif args.format == "json":
            _write_json(out, [user.to_dict() for user in people.list_users(store)])
        else:
            users = people.list_users(store)
            width = max([len(u.name) for u in users] + [4])
            for user in users:
                revoked = f"  revoked {user.revoked_at:%Y-%m-%d %H:%M}" if user.revoked_at else ""
                cap = "" if user.max_open is None else f"  max {user.max_open} open"
                out.write(f"{user.name:<{width}}  {user.role:<6}  {user.availability:<9}  added "
                          f"{user.created_at:%Y-%m-%d %H:%M}{cap}{revoked}\n")
            if not users:
                err.write("no users yet: rules-engine users add NAME --role admin|agent|viewer\n")
    finally:
        store.dispose()
    return 0


def _presence(args: argparse.Namespace) -> dict[str, Any]:
    """What ``users set`` changes: availability and/or max_open (None: no cap)."""
    changes: dict[str, Any] = {}
    if args.availability is not None:
        changes["availability"] = args.availability
    if args.no_max_open:
        changes["max_open"] = None
    elif args.max_open is not None:
        changes["max_open"] = args.max_open
    if not changes:
        raise people.PeopleError("nothing to change",
                                 hint="--available or --away, --max-open N or --no-max-open")
    return changes


def cmd_teams(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = Store(_database_url(args))
    try:
        if args.action == "add":
            added = people.join_team(store, args.team, args.names)
            err.write(f"team {args.team}: added {', '.join(added) or 'nobody new'}\n")
        elif args.action == "remove":
            removed = people.leave_team(store, args.team, args.names)
            err.write(f"team {args.team}: removed {', '.join(removed) or 'nobody (not on it)'}\n")
        else:
            _list_teams(args, store, out, err)
    finally:
        store.dispose()
    return 0


def _list_teams(args: argparse.Namespace, store: Store, out: TextIO, err: TextIO) -> None:
    found = people.teams(store)
    if args.format == "json":
        _write_json(out, {team: [member.to_dict() for member in members]
                          for team, members in found.items()})
        return
    for team, members in found.items():
        out.write(f"{team}\n")
        for member in members:
            cap = "" if member.max_open is None else f" of {member.max_open}"
            out.write(f"  {member.name:<20} {member.availability:<9}  "
                      f"{member.open_conversations}{cap} open\n")
    if not found:
        err.write("no teams yet: rules-engine teams add TEAM USER...\n")


def _hand_over(module: str) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    """A command run by an edge module in a fresh interpreter (the core never imports the
    web stack); the global --rules / --database-url travel as environment variables."""

    def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        if args.rules:
            os.environ["RULES_ENGINE_RULES_DIR"] = args.rules
        if args.database_url:
            os.environ["RULES_ENGINE_DATABASE_URL"] = args.database_url
        out.flush()
        os.execv(sys.executable, [sys.executable, "-m", module, *args.options])
        return 0  # not reached

    return command


def _whole_number(text: str, *, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is less than {least}")
    return value


def _at_least(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _whole_number(text, least=least)

    parse.__name__ = f"whole number >= {least}"
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and adds each option's default to its help, unless there
    is none to tell (None, a flag's False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default, text = action.default, action.help or ""
        if default is None or default is False or default is argparse.SUPPRESS \
                or "default" in text.lower():
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL,
                                                              argparse.ZERO_OR_MORE):
            return action.help  # a positional that must be given
        return f"{text} (default: %(default)s)"


def _global_options(*, top: bool) -> argparse.ArgumentParser:
    """--rules, --database-url, --max-depth: accepted before or after the command (the
    command's copy leaves the value given before it alone unless given again)."""
    options = argparse.ArgumentParser(add_help=False)
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    options.add_argument("--rules", default=default(None), metavar="DIR",
                         help="rules directory ($RULES_ENGINE_RULES_DIR, else rules/)")
    options.add_argument("--database-url", default=default(None), metavar="URL",
                         help="SQLAlchemy URL ($RULES_ENGINE_DATABASE_URL, else "
                              f"{DEFAULT_DATABASE_URL})")
    options.add_argument("--max-depth", type=_at_least(0), default=default(DEFAULT_MAX_DEPTH),
                         metavar="N", help="how deep rules may chain through emitted events "
                                           f"(default: {DEFAULT_MAX_DEPTH})")
    return options


def _outbox_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", help="only this channel's rows")
    parser.add_argument("--kind", help="only rows whose error is of this kind: transient, "
                                       "rate_limited, permanent, auth, outside_window, opted_out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rules-engine", description=DESCRIPTION, epilog=EXIT_CODES,
                                     formatter_class=HelpFormatter,
                                     parents=[_global_options(top=True)])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _global_options(top=False)

    def command(name: str, help: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                                   formatter_class=HelpFormatter, parents=[common], **options)

    validate = command("validate", "check rule files and their tests; exit 1 on any problem")
    validate.add_argument("paths", nargs="*",
                          help="rule files or directories (a directory's tests/ is checked too), "
                               "or test files in a tests/ folder (checked against the rules "
                               "above it); default: the rules dir")
    validate.add_argument("--format", choices=["text", "json"], default="text",
                          help="text for people, json for tools")
    validate.set_defaults(handler=cmd_validate)

    schema = command("schema", "print a JSON Schema: rule files, events or rule tests")
    schema.add_argument("which", nargs="?", choices=["rules", "event", "rule-tests"],
                        default="rules", help="which schema")
    schema.set_defaults(handler=cmd_schema)

    simulate = command("simulate", "dry-run one event with the current rules: what would fire "
                                   "and why; writes nothing")
    simulate.add_argument("event", help="an event JSON file, or - for stdin")
    simulate.add_argument("--format", choices=["text", "json"], default="text",
                          help="a tree for people, or the trace as JSON")
    simulate.add_argument("--advance", type=duration_option, metavar="DURATION",
                          help="then move the clock on (e.g. 25h) and fire the timers due by then")
    simulate.set_defaults(handler=cmd_simulate)

    tick = command("tick", "fire every timer (idle clocks, waits) due now, once, and exit")
    tick.add_argument("--now", type=_timestamp_option, metavar="ISO-8601",
                      help="fire what is due at this time instead (e.g. 2026-11-25T10:00:00Z)")
    tick.set_defaults(handler=cmd_tick)

    run = command("run", "run a rule whose trigger is manual on one contact, as a person would "
                         "from the inbox; prints its trace")
    run.add_argument("rule", help="the rule's id")
    run.add_argument("--contact", type=int, required=True, metavar="ID", help="the contact's id")
    run.add_argument("--as", dest="actor", metavar="NAME",
                     help="who runs it, as the trace records it (default: cli:<login name>)")
    run.add_argument("--param", type=_param_option, action="append", metavar="NAME=VALUE",
                     help="a detail the rule reads as params.NAME (repeatable)")
    run.set_defaults(handler=cmd_run)

    ingest = command("ingest", "apply events from a JSON Lines file (progress on a terminal)")
    ingest.add_argument("events", help="a .jsonl file (one event per line), or - for stdin")
    ingest.set_defaults(handler=cmd_ingest)

    report = command("report", "resolution time and closed count")
    report.add_argument("--since", help="a date (YYYY-MM-DD) or timestamp; default 30 days ago")
    report.add_argument("--until", help="a date (that whole day included) or timestamp; "
                                        "default today")
    report.add_argument("--by", choices=[g.value for g in GroupBy], default="none",
                        help="slice the figures")
    for name in ReportQuery.FILTERABLE:
        report.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"only this {name}")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table",
                        help="output format")
    report.set_defaults(handler=cmd_report)

    demo = command("demo-data", "fill the store with a seeded demo history")
    demo.add_argument("--conversations", type=_at_least(1), default=6000,
                      help="about how many conversations")
    demo.add_argument("--days", type=_at_least(1), default=120, help="over how many past days")
    demo.add_argument("--seed", type=int, default=7, help="the random seed")
    demo.add_argument("--if-empty", action="store_true",
                      help="add nothing when the store already holds conversations")
    demo.set_defaults(handler=cmd_demo_data)

    test = command("test", "run the rules' YAML test cases")
    test.add_argument("paths", nargs="*",
                      help="test files or folders, or a rules directory (its tests/); tests in "
                           "a tests/ folder run against the rules above it unless --rules is "
                           "given; default: <rules>/tests")
    test.set_defaults(handler=cmd_test)

    explain = command("explain", "why an event did what it did (its trace)")
    explain.add_argument("event_id", help="e.g. facebook:<mid>, viber:<message_token>, "
                                          "telegram:<update_id> (see `rules-engine events`)")
    explain.add_argument("--format", choices=["text", "json"], default="text",
                         help="a tree for people, or the trace as JSON")
    explain.set_defaults(handler=cmd_explain)

    events = command("events", "list recently processed events: ids, types, what fired")
    events.add_argument("--recent", type=_at_least(1), default=20, metavar="N",
                        help="how many, newest first")
    events.add_argument("--contact", type=_at_least(1), metavar="ID", help="only this contact's")
    events.add_argument("--format", choices=["text", "json"], default="text",
                        help="output format")
    events.set_defaults(handler=cmd_events)

    prune = command("prune-traces", "delete old traces (run it daily; the event ledger stays)")
    prune.add_argument("--keep-days", type=_at_least(0),
                       help="keep this many days of traces ($RULES_ENGINE_TRACE_RETENTION_DAYS, "
                            "else 30)")
    prune.set_defaults(handler=cmd_prune)

    database = command("db", "the database schema: upgrade it, or show its revision; rebuild "
                              "the report rollups from the conversations")
    database.add_argument("action", choices=["upgrade", "current", "rebuild-rollups"],
                          help="what to do")
    database.set_defaults(handler=cmd_db)

    users = command("users", "people who use the API and the dashboard: add (prints the new "
                             "token once), list, revoke, set (availability, capacity)")
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = user_actions.add_parser("add", help="add a user and print their token, alone on stdout",
                                  formatter_class=HelpFormatter)
    add.add_argument("name", help="the user's name, as reports and traces show it")
    add.add_argument("--role", required=True, choices=[str(role) for role in people.Role],
                     help="viewer: reports and dashboard; agent: also open, close and reply "
                          "as themselves; admin: everything, and on behalf of others")
    user_actions.add_parser("list", help="every user and role, revoked ones too",
                            formatter_class=HelpFormatter).add_argument(
        "--format", choices=["table", "json"], default="table", help="output format")
    user_actions.add_parser("revoke", help="revoke a user's token and sessions",
                            formatter_class=HelpFormatter).add_argument(
        "name", help="the user's name")
    presence = user_actions.add_parser(
        "set", help="a user's availability (balanced assignment gives the away no new "
                    "conversations) and capacity", formatter_class=HelpFormatter)
    presence.add_argument("name", help="the user's name")
    present = presence.add_mutually_exclusive_group()
    present.add_argument("--available", dest="availability", action="store_const",
                         const="available", help="takes new conversations")
    present.add_argument("--away", dest="availability", action="store_const", const="away",
                         help="takes none")
    capacity = presence.add_mutually_exclusive_group()
    capacity.add_argument("--max-open", type=_at_least(0), metavar="N",
                          help="holds at most N open conversations")
    capacity.add_argument("--no-max-open", action="store_true", help="no cap of their own")
    users.set_defaults(handler=cmd_users)

    teams = command("teams", "who is on which team, for assign {team, strategy}: list (with "
                             "no ACTION), add, remove")
    teams.add_argument("--format", choices=["text", "json"], default="text",
                       help="text for people, json for tools")
    teams.set_defaults(handler=cmd_teams, action="list")
    team_actions = teams.add_subparsers(dest="action", metavar="ACTION")
    for action, what in (("add", "put users on a team"), ("remove", "take users off a team")):
        change = team_actions.add_parser(action, help=what, formatter_class=HelpFormatter)
        change.add_argument("team", help="the team, as rules name it")
        change.add_argument("names", nargs="+", metavar="USER", help="users' names")

    box = command("outbox", "the outbox: list rows (with no ACTION), retry failed ones, "
                            "resume a paused channel")
    _outbox_filters(box)
    box.add_argument("--status", choices=[str(s) for s in outbox.STATUSES],
                     help="only rows in this status")
    box.add_argument("--limit", type=_at_least(1), default=100, help="at most this many rows")
    box.add_argument("--format", choices=["text", "json"], default="text",
                     help="text for people, json for tools")
    box.set_defaults(handler=cmd_outbox, action="list")
    box_actions = box.add_subparsers(dest="action", metavar="ACTION")
    again = box_actions.add_parser("retry", help="queue failed (or suppressed) rows again, "
                                                 "attempts and age starting over",
                                   formatter_class=HelpFormatter)
    _outbox_filters(again)
    again.add_argument("--status", choices=[str(s) for s in outbox.RETRYABLE], default="failed",
                       help="which rows")
    box_actions.add_parser("resume", help="call a paused channel again",
                           formatter_class=HelpFormatter).add_argument(
        "channel", help="the channel, e.g. whatsapp")

    serve = commands.add_parser(
        "serve", add_help=False,
        help="serve the webhook app with gunicorn (see `rules-engine serve --help`)")
    serve.set_defaults(handler=_hand_over("connectors.serve"))

    worker = commands.add_parser(
        "worker", add_help=False,
        help="deliver the outbox: send_message and http_request (see `rules-engine worker --help`)")
    worker.set_defaults(handler=_hand_over("connectors.outbox"))
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (see ``EXIT_CODES``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("serve", "worker"):
        args.options = extra  # the edge module parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    out, err = out or sys.stdout, err or sys.stderr
    try:
        return int(args.handler(args, out, err))
    except RuleSetInvalid as invalid:
        err.write(f"the rules are invalid:\n{invalid}\n")
        return 1
    except DATABASE_PROBLEMS as error:
        err.write(database_problem(error, _database_url(args)) + "\n")
        return 2
    except RulesEngineError as error:
        err.write(f"error: {error}\n")
        return 1
    except OSError as error:
        if isinstance(error, BrokenPipeError):  # e.g. `| head`: the reader has had enough
            _silence_stdout()
            return 0
        err.write(f"error: {error.filename or ''}: {error.strerror or error}\n")
        return 2
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the final flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())

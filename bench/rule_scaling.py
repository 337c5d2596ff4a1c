"""Benchmark: an event's cost depends on the rules whose trigger matches, not on the total.

Runs side by side in one process:
1. the full engine (SQLite file store) over the same events with 10 matching rules plus
   0, 1,000 and 10,000 unrelated rules (other triggers and channels);
2. condition evaluation alone: our compile-once, bounded evaluation against simpleeval
   used as its README shows (a new evaluator parsing the expression on every call).

Also prints how long each rule set takes to load (parse, validate, compile and the static
checks). Prints ratios; run with ``python bench/rule_scaling.py [--events N]``.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from simpleeval import EvalWithCompoundTypes

from rules_engine import Engine, Store, load_rule_set, parse_event
from rules_engine.domain.model import EventType
from rules_engine.language.context import roots_for
from rules_engine.language.expressions import compile_expression

MATCHING = """\
  - id: match-{i}
    trigger: {{event: message.received, channels: [facebook]}}
    conditions: ["contains(message.text, 'refund') or {i} > 100"]
    actions: [{{add_tag: {{tag: t{i}}}}}]
"""
UNRELATED = [
    "  - id: other-{i}\n    trigger: {{event: message.received, channels: [viber]}}\n"
    "    conditions: [\"contains(message.text, 'x{i}')\"]\n    actions: [{{add_tag: {{tag: o{i}}}}}]\n",
    "  - id: other-{i}\n    trigger: {{event: welcome, channels: [viber]}}\n"
    "    actions: [{{assign: {{team: t{i}}}}}]\n",
    "  - id: other-{i}\n    trigger: {{event: conversation.closed}}\n"
    "    conditions: [\"conversation.team == 'x{i}'\"]\n    actions: [{{add_tag: {{tag: o{i}}}}}]\n",
]


def write_rules(directory: Path, unrelated: int) -> Path:
    directory.mkdir()
    text = "rules:\n" + "".join(MATCHING.format(i=i) for i in range(10))
    text += "".join(UNRELATED[i % 3].format(i=i) for i in range(unrelated))
    (directory / "rules.yaml").write_text(text, "utf-8")
    return directory


def engine_rate(workdir: Path, unrelated: int, events: int) -> tuple[float, float]:
    """(events/s through the engine, seconds to load and check the rule set)."""
    directory = write_rules(workdir / f"rules-{unrelated}", unrelated)
    loading = time.perf_counter()
    rules = load_rule_set([directory])
    loaded = time.perf_counter() - loading
    store = Store(f"sqlite:///{workdir / f'bench-{unrelated}.db'}")
    engine = Engine(store, rules)
    batch = [parse_event({"id": f"e{unrelated}-{n}", "type": "message.received",
                          "channel": "facebook", "contact": {"external_id": f"u{n % 50}"},
                          "message": {"text": "I want a refund"}}) for n in range(events)]
    engine.catalog(rules)  # once per rule-set version (its trace catalog), not per event
    started = time.perf_counter()
    for event in batch:
        engine.process(event)
    elapsed = time.perf_counter() - started
    store.dispose()
    return events / elapsed, loaded


def selection_rate(workdir: Path, unrelated: int, rounds: int) -> float:
    """Candidate lookup plus condition evaluation only (no store): events per second."""
    rules = load_rule_set([workdir / f"rules-{unrelated}"])
    gc.freeze()  # as the engine does with the rule set it serves (Engine.replace_rules)
    context = {"message": {"text": "I want a refund"}, "contact": {}, "conversation": {},
               "params": {}, "channel": "facebook", "event": {}}
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for _ in range(rounds):
        for rule in rules.candidates(EventType.MESSAGE_RECEIVED, "facebook"):
            rule.condition.holds(context, now, {})
    return rounds / (time.perf_counter() - started)


def evaluation_ratio(rounds: int) -> tuple[float, float]:
    source = "lower(message.text) in ('thanks', 'thank you') or contains(message.text, 'refund')"
    names = {"message": {"text": "I want a refund"}}
    compiled = compile_expression(source, roots_for(EventType.MESSAGE_RECEIVED))
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for _ in range(rounds):
        compiled.evaluate(names, now=now)
    ours = rounds / (time.perf_counter() - started)
    functions = {"lower": str.lower, "contains": lambda a, b: b.lower() in a.lower()}
    started = time.perf_counter()
    for _ in range(rounds):
        EvalWithCompoundTypes(names=names, functions=functions).eval(source)
    peer = rounds / (time.perf_counter() - started)
    return ours, peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        print(f"{'unrelated rules':>16} {'engine events/s':>16} {'ratio':>7} "
              f"{'selection+eval /s':>18} {'ratio':>7} {'load + checks s':>16}")
        base_engine = base_selection = 0.0
        for unrelated in (0, 1_000, 10_000):
            engine, loaded = engine_rate(workdir, unrelated, args.events)
            selection = selection_rate(workdir, unrelated, args.rounds)
            base_engine = base_engine or engine
            base_selection = base_selection or selection
            print(f"{unrelated:>16,} {engine:>16,.0f} {engine / base_engine:>7.2f} "
                  f"{selection:>18,.0f} {selection / base_selection:>7.2f} {loaded:>16.2f}")
    ours, peer = evaluation_ratio(args.rounds)
    print(f"\ncondition evaluation: compiled once {ours:,.0f}/s vs simpleeval parsing per call "
          f"{peer:,.0f}/s: {ours / peer:.1f}x")


if __name__ == "__main__":
    main()

"""Benchmark: one 3-clause condition, evaluated by our compiled sandbox, by zen-engine's
compiled expression (Rust), by CPython's ``eval`` of compiled code (no sandbox at all, the
floor) and by simpleeval (our reference), side by side in one run.

    pip install zen-engine   # for this benchmark only; it is not a dependency
    python bench/condition_speed.py [--number 200000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
import timeit
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules_engine import compile_condition  # noqa: E402

SOURCE = "contains(message.text, 'refund') and 'vip' in contact.tags and conversation.is_open"
ZEN_SOURCE = ("contains(lower(message.text), 'refund') and 'vip' in contact.tags "
              "and conversation.is_open")
CONTEXT = {"message": {"text": "Hello, I would like a REFUND for order 42", "id": "m-1"},
           "contact": {"tags": ["customer", "vip"], "name": "Ana"},
           "conversation": {"is_open": True}}


def best_of(function, number: int, rounds: int) -> float:
    """Microseconds per call, the best of ``rounds`` runs (the least disturbed)."""
    return min(timeit.repeat(function, number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    ours = compile_condition(SOURCE, trigger="message.received")
    expression = ours.expression
    code = compile("contains(message['text'], 'refund') and 'vip' in contact['tags'] "
                   "and conversation['is_open']", "<floor>", "eval")
    namespace = {"contains": lambda text, part: part.lower() in text.lower(), **CONTEXT}
    assert ours.evaluate(CONTEXT, now=now) is True and eval(code, namespace) is True
    results = {
        "ours (compiled, sandboxed)": best_of(lambda: ours.evaluate(CONTEXT, now=now),
                                              args.number, args.rounds),
        "simpleeval (our reference)": best_of(
            lambda: expression.evaluate_reference(CONTEXT, now=now), args.number // 10,
            args.rounds),
        "CPython eval (no sandbox)": best_of(lambda: eval(code, namespace), args.number,
                                             args.rounds),
    }
    try:
        import zen
    except ImportError:
        print("zen-engine is not installed (pip install zen-engine): its row is left out")
    else:
        compiled = zen.compile_expression(ZEN_SOURCE)
        assert compiled.evaluate(CONTEXT) is True
        results["zen-engine (compiled, Rust)"] = best_of(lambda: compiled.evaluate(CONTEXT),
                                                         args.number, args.rounds)
    mine = results["ours (compiled, sandboxed)"]
    print(f"condition: {SOURCE}")
    for name, micros in results.items():
        print(f"  {name:<30}{micros:8.2f} us   ours / this: {mine / micros:5.2f}")


if __name__ == "__main__":
    main()

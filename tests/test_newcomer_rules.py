"""The five rules a new admin wrote from scratch (issue 21), with what cost them time: one
`rules-engine validate` run now names each problem, with its place and the fix."""
from __future__ import annotations

import subprocess
import sys

SUPPORT = """\
business_hours:
  timezone: Europe/Berlin
  weekly: {mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"],
           thu: ["09:00-17:00"], fri: ["09:00-17:00"]}
  holidays: ["2026-12-25"]
rules:
  - id: open-on-message
    trigger: {event: message.received}
    conditions: ["not conversation.is_open"]
    actions:
      - open_conversation: {team: support}
  - id: close-idle
    trigger: {event: conversation.idle, for: 24h}
    actions:
      - close_conversation: {note: "closed after a quiet day"}
  - id: out-of-hours
    trigger: {event: message.received}
    conditions: ["not in_business_hours"]
    actions:
      - send_message: {text: "We are closed; we answer tomorrow from 9:00."}
  - id: refund
    trigger: {event: message.received}
    conditions: ["message.text contains 'refund'", "message.body != ''"]
    actions:
      - add_tag: refund
      - assign: {team: billing}
  - id: route-new
    trigger: {event: conversation.opened}
    actions:
      - assign: {team: support}
  - id: done
    trigger: {event: dialogflow.fulfillment}
    conditions: ["params.RB_MARKDONE == true"]
    actions:
      - close_conversation: "done"
"""


def validate(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rules_engine.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_one_validate_run_names_what_cost_the_newcomer_time(tmp_path):
    (tmp_path / "support.yaml").write_text(SUPPORT, "utf-8")
    done = validate(tmp_path)
    assert done.returncode == 1
    said = done.stderr
    expected = [
        # the hint that used to break the rule now writes the working call
        ("support.yaml:18:", "[out-of-hours]", "call it: `not in_business_hours()`"),
        ("support.yaml:23:", "[refund]", "write `contains(message.text, 'refund')`"),
        ("support.yaml:23:", "[refund]", "did you mean `message.text`?"),
        ("support.yaml:35:", "[done]", "write `close_conversation: {note: done}`"),
    ]
    for where, rule, hint in expected:
        line = next((line for line in said.splitlines() if where in line and rule in line
                     and hint in line), None)
        assert line is not None, f"{where} {rule} {hint}\n{said}"
    # the first run was refused: fix what it said, then the dead rules and the overwrite
    fixed = (SUPPORT.replace('"not in_business_hours"', '"not in_business_hours()"')
             .replace("\"message.text contains 'refund'\", \"message.body != ''\"",
                      "\"contains(message.text, 'refund')\", \"message.text != ''\"")
             .replace('close_conversation: "done"', "close_conversation: {note: done}"))
    (tmp_path / "support.yaml").write_text(fixed, "utf-8")
    done = validate(tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = done.stderr
    for rule, said in [
        ("[open-on-message]", "this rule can never fire on message.received: "
                              "'not conversation.is_open' is always false there"),
        ("[open-on-message]", "open_conversation does nothing here"),
        ("[done]", "close_conversation does nothing here: when RB_MARKDONE is true"),
        ("[done]", "write `flag(params.RB_MARKDONE)`"),
        ("[route-new]", "'route-new' (conversation.opened) sets the team after 'refund' "
                        "(message.received) set it (team billing)"),
    ]:
        assert any(rule in line and said in line for line in warnings.splitlines()), \
            f"{rule} {said}\n{warnings}"
    assert "[close-idle]" not in warnings  # the one rule that was right all along
    assert "OK: 6 rule(s) in 1 file(s)" in done.stdout

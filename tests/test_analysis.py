"""Static checks at validation time: cycles, rules that never fire, open and close in one pass."""
from __future__ import annotations

import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules_engine import RuleSetInvalid, load_rule_set
from rules_engine.domain.errors import RuleWarning
from rules_engine.rules.analysis import _channels_meet, _edges, _emits

from .test_validation import run_cli


def load(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text), "utf-8")
    return load_rule_set([path])


def warnings_of(tmp_path, text: str) -> list[str]:
    return [str(w) for w in load(tmp_path, text).warnings]


CONDITIONAL_CYCLE = """
    rules:
      - id: ping
        trigger: {event: contact.tag_added}
        conditions: ["params.tag == 'ping'"]
        actions: [{add_tag: {tag: pong}}]
      - id: pong
        trigger: {event: contact.tag_added}
        conditions: ["params.tag == 'pong'"]
        actions: [{remove_tag: {tag: ping}}, {set_field: {name: n, value: 1}}]
      - id: field-back-to-tag
        trigger: {event: contact.field_set}
        conditions: ["params.name == 'n'"]
        actions: [{add_tag: {tag: ping}}]
"""


def test_a_cycle_with_conditions_is_a_warning_naming_its_rules(tmp_path):
    [warning] = warnings_of(tmp_path, CONDITIONAL_CYCLE)
    assert "may trigger one another in a loop" in warning
    assert "ping -> pong -> field-back-to-tag -> ping" in warning


def test_a_cycle_no_condition_can_break_is_an_error(tmp_path):
    with pytest.raises(RuleSetInvalid) as caught:
        load(tmp_path, """
            rules:
              - id: tag-on-assign
                trigger: {event: conversation.assigned}
                actions: [{add_tag: {tag: touched}}]
              - id: assign-on-tag
                trigger: {event: contact.tag_added}
                actions: [{assign: {team: support}}]
        """)
    [error] = [e for e in caught.value.errors if not isinstance(e, RuleWarning)]
    assert "no condition to stop them: tag-on-assign -> assign-on-tag -> tag-on-assign" in str(error)
    assert error.line == 3 and error.rule_id == "tag-on-assign"


def test_a_self_loop_is_found(tmp_path):
    [warning] = warnings_of(tmp_path, """
        rules:
          - id: counter
            trigger: {event: contact.field_set}
            conditions: ["params.name == 'count' and params.value < 10"]
            actions: [{set_field: {name: count, expr: "params.value + 1"}}]
    """)
    assert "counter -> counter" in warning


def test_channels_that_never_meet_make_no_cycle(tmp_path):
    assert warnings_of(tmp_path, """
        rules:
          - id: viber-assign
            trigger: {event: contact.tag_added, channels: [viber]}
            actions: [{assign: {team: a}}]
          - id: facebook-tag
            trigger: {event: conversation.assigned, channels: [facebook]}
            actions: [{add_tag: {tag: x}}]
    """) == []


@pytest.mark.parametrize("condition", ["false", "'1 > 2'", "{all: [conversation.is_open, '2 < 1']}",
                                       "{not: true}"])
def test_constant_false_conditions_never_fire(tmp_path, condition):
    [warning] = warnings_of(tmp_path, f"""
        rules:
          - id: parked
            trigger: {{event: message.received}}
            conditions: {condition}
            actions: [{{add_tag: {{tag: x}}}}]
    """)
    assert "can never fire: its conditions are always false" in warning


def test_a_welcome_rule_on_a_channel_without_welcome_events(tmp_path):
    warnings = warnings_of(tmp_path, """
        rules:
          - id: slack-welcome
            trigger: {event: welcome, channels: [slack]}
            actions: [{assign: {team: a}}]
          - id: mixed-welcome
            trigger: {event: welcome, channels: [viber, webchat]}
            actions: [{add_tag: {tag: w}}]
    """)
    assert any("[slack-welcome]" in w and "can never fire: slack send no welcome event" in w
               for w in warnings)
    assert any("[mixed-welcome]" in w and "never fires on: webchat" in w for w in warnings)


def test_a_trigger_nothing_emits(tmp_path):
    [warning] = warnings_of(tmp_path, """
        rules:
          - id: on-assign
            trigger: {event: conversation.assigned}
            actions: [{add_tag: {tag: assigned}}]
    """)
    assert "nothing emits conversation.assigned" in warning


def test_open_and_close_in_the_same_pass(tmp_path):
    warnings = warnings_of(tmp_path, """
        rules:
          - id: both
            trigger: {event: welcome}
            actions: [{open_conversation: {}}, {close_conversation: {}}]
          - id: opener
            trigger: {event: message.received, channels: [facebook]}
            actions: [{open_conversation: {}}]
          - id: closer
            trigger: {event: message.received}
            conditions: ["contains(message.text, 'bye')"]
            actions: [{close_conversation: {}}]
          - id: closes-what-opens
            trigger: {event: conversation.opened, channels: [viber]}
            actions: [{close_conversation: {}}]
    """)
    assert any("[both]" in w and "opens and closes a conversation in the same pass" in w
               for w in warnings)
    assert any("'opener' opens and 'closer' closes" in w and "both on message.received" in w
               for w in warnings)
    assert any("'both' opens and 'closes-what-opens' closes" in w for w in warnings)
    assert not any("'opener' opens and 'closes-what-opens'" in w for w in warnings)  # facebook vs viber


def test_validate_prints_warnings_and_still_exits_0(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(CONDITIONAL_CYCLE), "utf-8")
    status, output = run_cli("validate", str(path))
    assert status == 0
    assert output.splitlines()[0].startswith(f"warning: {path}:3:")
    assert "1 warning(s)" in output


def test_disabled_rules_are_left_out_of_the_checks(tmp_path):
    parked = CONDITIONAL_CYCLE.replace("      - id: pong\n",
                                       "      - id: pong\n        enabled: false\n")
    warnings = warnings_of(tmp_path, parked)
    assert warnings and not any("pong" in w for w in warnings)
    assert any("nothing emits contact.field_set" in w for w in warnings)  # pong set the field


@pytest.mark.parametrize("condition", ["'VIP' in contact.tags", "contains(contact.tags, 'Vip')",
                                       "not 'VIP' in contact.tags"])
def test_a_tag_looked_for_in_another_case_than_the_rules_write_it(tmp_path, condition):
    [warning] = warnings_of(tmp_path, f"""
        rules:
          - id: mark
            trigger: {{event: message.received}}
            conditions: ["contains(message.text, 'urgent')"]
            actions: [{{add_tag: vip}}]
          - id: route
            trigger: {{event: message.received}}
            conditions: [{condition!r}]
            actions: [{{assign: {{user: susan}}}}]
    """)
    assert "[route] conditions/0:" in warning and "they add 'vip'" in warning
    assert "(hint: write 'vip')" in warning


def test_a_tag_in_the_case_the_rules_write_it_is_quiet(tmp_path):
    assert warnings_of(tmp_path, """
        rules:
          - id: mark
            trigger: {event: message.received}
            actions: [{add_tag: [vip, VIP-Gold]}]
          - id: route
            trigger: {event: contact.tag_added}
            conditions: ["params.tag == 'VIP-Gold' or 'vip' in contact.tags or 'other' in contact.tags"]
            actions: [{assign: {user: susan}}]
    """) == []


def test_a_rule_setting_what_rules_before_it_set_is_told_of_the_nearest(tmp_path):
    warnings = warnings_of(tmp_path, """
        rules:
          - id: first
            trigger: {event: welcome}
            actions: [{assign: {team: a}}]
          - id: second
            trigger: {event: welcome}
            actions: [{assign: {team: b}}]
          - id: third
            trigger: {event: welcome}
            actions: [{assign: {team: c}}]
    """)
    assert len(warnings) == 2, warnings
    assert "'second' (welcome) sets the team after 'first' (welcome) set it (team a)" in warnings[0]
    assert "'third' (welcome) sets the team after 'second' (welcome) set it (team b)" in warnings[1]


def test_a_thousand_rules_setting_one_thing_give_a_warning_each_not_one_per_pair(tmp_path):
    """Every pair was a warning (half a million here, and minutes of loading for 10,000
    rules); each rule now names the one whose value it replaces."""
    text = "rules:\n" + "".join(
        f"  - id: r{n}\n    trigger: {{event: welcome, channels: [viber]}}\n"
        f"    actions: [{{assign: {{team: t{n}}}}}]\n" for n in range(1000))
    path = tmp_path / "rules.yaml"
    path.write_text(text, "utf-8")
    warnings = [w.message for w in load_rule_set([path]).warnings]
    assert len(warnings) == 999
    assert all(f"'r{n}' (welcome) sets the team after 'r{n - 1}'" in warning
               for n, warning in zip(range(1, 1000), warnings))


EVENTS = ["welcome", "message.received", "contact.tag_added", "contact.field_set",
          "conversation.opened", "conversation.closed"]
ACTIONS = ["{add_tag: {tag: t}}", "{set_field: {name: f, value: 1}}", "{open_conversation: {}}",
           "{close_conversation: {}}", "{assign: {team: x}}"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(EVENTS),
                          st.none() | st.sets(st.sampled_from(["viber", "facebook"]), min_size=1),
                          st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2)),
                min_size=1, max_size=12))
def test_the_rules_each_rule_can_start_are_those_found_by_trying_every_pair(tmp_path, specs):
    """The index by trigger finds exactly the edges that trying every pair of rules finds."""
    text = "rules:\n"
    for n, (event, channels, actions) in enumerate(specs):
        where = "" if channels is None else f", channels: [{', '.join(sorted(channels))}]"
        text += (f"  - id: r{n}\n    trigger: {{event: {event}{where}}}\n"
                 f"    conditions: [\"contact.name == 'n{n}'\"]\n"
                 f"    actions: [{', '.join(actions)}]\n")
    path = tmp_path / "rules.yaml"
    path.write_text(text, "utf-8")
    rules = list(load_rule_set([path]).rules)
    every_pair = {rule.id: [target.id for target in rules if target.event in _emits(rule)
                            and _channels_meet(rule.channels, target.channels)]
                  for rule in rules}
    assert {rule_id: [target.id for target in targets]
            for rule_id, targets in _edges(rules).items()} == every_pair

"""Balanced assignment (``assign: {team, strategy, available_only, max_open}``): the choice,
its static checks, teams and availability through the command line and the users' API, and
4 gunicorn workers sharing one rotation on PostgreSQL."""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from connectors import create_app
from rules_engine import people
from rules_engine.domain.balancing import Member, Roster, Strategy, choose

from . import webhook_payloads as p
from .conftest import POSTGRES_URL, message
from .test_cli_as_a_user import cli, no_traceback
from .test_server import post_signed_event, start_server, stop_server
from .test_validation import run_cli

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)


def roster(*members: Member, last: str | None = None) -> Roster:
    return Roster("support", members, last)


# -- the choice ------------------------------------------------------------------------

def test_round_robin_takes_the_next_free_member_after_the_last_one():
    team = roster(Member("alice", True, None, 0), Member("bob", False, None, 0),
                  Member("carol", True, 2, 2), Member("dan", True, None, 9), last="alice")
    chosen = choose(team, Strategy.ROUND_ROBIN, available_only=True, max_open=None)
    assert chosen.member == "dan"  # bob is away, carol is at her own capacity
    assert choose(team, Strategy.ROUND_ROBIN, available_only=False, max_open=None).member == "bob"
    assert choose(team, Strategy.ROUND_ROBIN, available_only=True, max_open=5).member == "alice"


def test_least_open_takes_the_least_busy_ties_in_rotation_order():
    team = roster(Member("alice", True, None, 3), Member("bob", True, None, 1),
                  Member("carol", True, None, 1), last="bob")
    assert choose(team, Strategy.LEAST_OPEN, available_only=True, max_open=None).member == "carol"


def test_nobody_free_says_why_for_each_member():
    team = roster(Member("alice", False, None, 0), Member("bob", True, 4, 4),
                  Member("carol", True, None, 5))
    chosen = choose(team, Strategy.ROUND_ROBIN, available_only=True, max_open=5)
    assert chosen.member is None
    assert chosen.reason == ("nobody on team support is free (alice is away; bob holds 4 open "
                             "(max 4); carol holds 5 open (max 5))")
    assert choose(roster(), Strategy.LEAST_OPEN, available_only=True,
                  max_open=None).reason == "team support has no members"


def test_a_conversation_held_by_a_member_of_the_team_is_left_as_it_is(store, make_engine):
    for name in ("alice", "bob"):
        people.add_user(store, name, people.Role.AGENT, now=NOW)
    people.join_team(store, "support", ["alice", "bob"])
    engine = make_engine("teams: [support]\nrules:\n  - id: balance\n"
                         "    trigger: {event: message.received}\n    actions:\n"
                         "      - assign: {team: support, strategy: round_robin}\n")
    first = engine.process(message("held-1", "hi"))
    again = engine.process(message("held-1", "still there?"))
    assert [c["detail"] for c in first.changes if c["operation"] == "assign"] == [
        f"assigned conversation {first.conversation_id} to user alice and team support "
        "(round_robin: alice is next in the rotation)"]
    assert not [c for c in again.changes if c["operation"] == "assign"]
    assert engine.process(message("held-2", "hi")).changes[-1]["detail"].endswith(
        "(round_robin: bob is next in the rotation)")


# -- static checks ---------------------------------------------------------------------

RULE = "rules:\n  - id: a\n    trigger: {event: welcome}\n    actions:\n      - assign: %s\n"


@pytest.mark.parametrize("teams, assign, message, hint", [
    ("teams: [support, billing]\n", "{team: suport}", "unknown team 'suport'",
     "did you mean `support`?"),
    ("", "{team: support, strategy: round_robin}",
     "unknown team 'support': a strategy chooses among a declared team",
     "declare it in a rule file: teams: [support]"),
    ("teams: [support]\n", "{user: susan, strategy: round_robin}",
     "a strategy chooses a member of a team, but `user` names the assignee",
     "give team: instead of user:"),
    ("teams: [support]\n", "{team: support, max_open: 5}", "max_open only applies with a strategy",
     "add strategy: round_robin"),
    ("teams: [support]\n", "{team: support, strategy: fastest}", "unknown value 'fastest'",
     "round_robin"),
])
def test_validate_flags_a_balanced_assign_that_cannot_work(tmp_path, teams, assign, message, hint):
    rules = tmp_path / "rules.yaml"
    rules.write_text(teams + RULE % assign, "utf-8")
    status, output = run_cli("validate", str(rules))
    assert status == 1
    line = next(line for line in output.splitlines() if message in line)
    assert line.startswith(f"{rules}:{6 if teams else 5}:") and "[a]" in line and hint in line


def test_a_team_is_not_checked_until_teams_are_declared(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE % "{team: anything}", "utf-8")
    assert run_cli("validate", str(rules))[0] == 0


# -- the command line ------------------------------------------------------------------

def test_teams_and_availability_from_the_command_line(tmp_path):
    url = ("--database-url", f"sqlite:///{tmp_path / 'store.db'}")
    for name in ("alice", "bob"):
        assert cli(*url, "users", "add", name, "--role", "agent").returncode == 0
    added = cli(*url, "teams", "add", "support", "alice", "bob")
    assert added.returncode == 0 and "added alice, bob" in added.stderr
    away = cli(*url, "users", "set", "alice", "--away", "--max-open", "3")
    assert away.returncode == 0 and "'alice' is away (at most 3 open)" in away.stderr
    listed = cli(*url, "teams")
    assert listed.stdout == ("support\n  alice                away       0 of 3 open\n"
                             "  bob                  available  0 open\n")
    nothing = cli(*url, "users", "set", "bob")
    assert nothing.returncode == 1 and "--available or --away" in nothing.stderr
    unknown = cli(*url, "teams", "add", "support", "zed")
    assert unknown.returncode == 1 and "no active user 'zed'" in unknown.stderr
    no_traceback(unknown)
    removed = cli(*url, "teams", "remove", "support", "bob")
    assert "removed bob" in removed.stderr
    assert "bob" not in cli(*url, "teams").stdout


# -- the users' API --------------------------------------------------------------------

@pytest.fixture
def api(tmp_path, clean_environment, database_url):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("rules: []\n", "utf-8")
    app = create_app({**p.SECRETS, "rules_dir": str(rules), "database_url": database_url})
    store = app.extensions["rules_engine"].store
    tokens = {name: people.add_user(store, name, role, now=NOW)[1]
              for name, role in (("alice", people.Role.AGENT), ("bob", people.Role.AGENT),
                                 ("boss", people.Role.ADMIN))}
    yield app.test_client(), {name: {"Authorization": f"Bearer {token}"}
                              for name, token in tokens.items()}
    store.dispose()


def test_an_agent_sets_their_own_availability_and_an_admin_the_rest(api):
    client, as_ = api
    assert client.put("/api/teams/support/members/alice", headers=as_["boss"]).status_code == 201
    assert client.put("/api/teams/support/members/alice", headers=as_["boss"]).status_code == 200
    assert client.put("/api/teams/support/members/bob", headers=as_["alice"]).status_code == 403
    mine = client.patch("/api/users/alice", json={"availability": "away"}, headers=as_["alice"])
    assert mine.status_code == 200 and mine.json["availability"] == "away"
    other = client.patch("/api/users/bob", json={"availability": "away"}, headers=as_["alice"])
    assert other.status_code == 403 and "only their own" in other.json["error"]["message"]
    cap = client.patch("/api/users/alice", json={"max_open": 5}, headers=as_["alice"])
    assert cap.status_code == 403 and cap.json["error"]["path"] == "max_open"
    set_by_admin = client.patch("/api/users/alice", json={"max_open": 5}, headers=as_["boss"])
    assert set_by_admin.json["max_open"] == 5
    bad = client.patch("/api/users/alice", json={"availability": "busy"}, headers=as_["boss"])
    assert bad.status_code == 400 and bad.json["error"]["path"] == "availability"
    assert client.get("/api/teams", headers=as_["bob"]).json == {"support": [
        {"name": "alice", "availability": "away", "max_open": 5, "open_conversations": 0}]}
    assert client.delete("/api/teams/support/members/alice", headers=as_["boss"]).status_code == 200
    gone = client.delete("/api/teams/support/members/alice", headers=as_["boss"])
    assert gone.status_code == 404 and client.get("/api/teams", headers=as_["bob"]).json == {}


# -- 4 worker processes on PostgreSQL ----------------------------------------------------

TEAM = ("ana", "ben", "cy", "dee", "eve")  # eve is away
RULES = """\
teams: [support, night]
rules:
  - id: balance
    trigger: {event: message.received, channels: [whatsapp]}
    conditions: ["conversation.assignee == null"]
    actions:
      - assign: {team: support, strategy: round_robin, available_only: true, max_open: 50}
  - id: to-the-night-team
    trigger: {event: message.received, channels: [telegram]}
    actions:
      - assign: {team: night, strategy: least_open, available_only: true}
  - id: nobody-free
    trigger: {event: conversation.unassignable}
    actions:
      - add_tag: {tag: waiting}
"""
BATCH = 5  # events per request: one transaction each


@pytest.fixture
def four_workers(database_url, tmp_path, store):
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL only: RULES_ENGINE_TEST_DATABASE_URL is not set")
    for name in TEAM:
        people.add_user(store, name, people.Role.AGENT, now=NOW)
    people.join_team(store, "support", list(TEAM))
    people.set_presence(store, "eve", {"availability": "away"})
    people.join_team(store, "night", ["eve"])
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES, "utf-8")
    process, base = start_server(database_url, 4, tmp_path / "server.log", rules_dir=rules)
    yield base
    stop_server(process)


def _messages(channel: str, visitors: list[str], tag: str) -> list[dict]:
    return [{"id": f"{tag}-{visitor}", "type": "message.received", "channel": channel,
             "contact": {"external_id": visitor}, "message": {"text": "hello"}}
            for visitor in visitors]


def _post_together(base: str, bodies: list[list[dict]]) -> None:
    """Post the bodies from 16 threads released together; each must be applied."""
    barrier = threading.Barrier(16)

    def post(thread: int) -> list[int]:
        barrier.wait()
        return [post_signed_event(base, body).status_code for body in bodies[thread::16]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = [status for part in pool.map(post, range(16)) for status in part]
    assert statuses == [200] * len(bodies)


def _send(base: str, first: int, count: int) -> None:
    """``count`` new WhatsApp contacts write, ``BATCH`` to a request."""
    events = _messages("whatsapp", [f"wa-{n}" for n in range(first, first + count)], "new")
    _post_together(base, [events[n:n + BATCH] for n in range(0, len(events), BATCH)])


def _assigned(store) -> Counter[str]:
    with store.read() as tx:
        rows = tx.connection.execute(text(
            "SELECT assignee, count(*) FROM conversations WHERE closed_at IS NULL "
            "AND team = 'support' GROUP BY assignee")).all()
    return Counter({assignee: count for assignee, count in rows})


def test_four_workers_share_the_rotation_and_nobody_goes_over_capacity(four_workers, store):
    _send(four_workers, 0, 198)  # below capacity: round robin spreads them evenly
    spread = _assigned(store)
    assert sum(spread.values()) == 198 and set(spread) == {"ana", "ben", "cy", "dee"}
    assert max(spread.values()) - min(spread.values()) <= 1
    _send(four_workers, 198, 1802)  # 2,000 in all, for 4 x 50 free places
    held = _assigned(store)
    assert held == {"ana": 50, "ben": 50, "cy": 50, "dee": 50, None: 1800}  # eve: none
    with store.read() as tx:
        waiting = tx.connection.execute(text(
            "SELECT count(*) FROM contact_tags WHERE tag = 'waiting'")).scalar_one()
        reasons = tx.connection.execute(text(
            "SELECT count(*) FROM event_traces WHERE CAST(trace AS TEXT) LIKE "
            "'%nobody on team support is free (ana holds 50 open (max 50); ben holds 50 open%'"
        )).scalar_one()
    assert waiting == 1800 and reasons == 1800


def test_batches_crossing_on_the_same_contacts_and_team_never_fail(four_workers, store):
    """Each body locks its contacts in its own order, then the team's rotation: crossing
    bodies deadlock on PostgreSQL, which aborts one; it runs again (40P01 is transient)."""
    rounds = 6
    for round_ in range(rounds):  # 8 pairs of crossing bodies, released together
        pairs = [(f"tg-{n}-a", f"tg-{n}-b") for n in range(8)]
        _post_together(four_workers, [
            body for a, b in pairs for body in (_messages("telegram", [a, b], f"r{round_}x"),
                                                _messages("telegram", [b, a], f"r{round_}y"))])
    with store.read() as tx:
        night = tx.connection.execute(text(
            "SELECT count(*) FROM conversations WHERE team = 'night' AND assignee IS NULL "
            "AND closed_at IS NULL")).scalar_one()
        events = tx.connection.execute(text(
            "SELECT count(*) FROM processed_events WHERE type = 'message.received'")).scalar_one()
    assert night == 16 and events == rounds * 16 * 2

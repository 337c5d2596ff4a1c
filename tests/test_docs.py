"""The README stays short and its tour stays true; every docs page is in the site's nav."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from rules_engine import load_rule_set, parse_event

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def _heredoc(text: str, name: str) -> str:
    """The body of `cat > NAME <<'TAG' ... TAG` in a README block."""
    match = re.search(rf"cat > {re.escape(name)} <<'(\w+)'\n(.*?)\n\1\n", text, re.S)
    assert match, f"the README writes no {name}"
    return match.group(2)


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml names a Python function with a `!!python/name:` tag; read it as null."""


_IgnoreTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _nav_pages(entries: list) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_the_readme_is_read_in_five_minutes():
    assert len(README.read_text().splitlines()) < 160


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_IgnoreTags)  # noqa: S506
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav))


def test_the_sites_home_is_the_readme_with_links_relative_to_docs():
    mirrored = README.read_text().replace("](docs/", "](")
    assert (DOCS / "index.md").read_text() == mirrored, (
        "docs/index.md mirrors README.md: sed -e 's#](docs/#](#g' README.md > docs/index.md")


def test_every_link_from_the_readme_into_the_repository_exists():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_ci_runs_the_readmes_test_command_as_written():
    setup = _section(README.read_text(), "Set-up: two commands on a fresh machine")
    commands = re.findall(r"```sh\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_tours_rule_validates_and_its_event_parses(tmp_path):
    tour = _section(README.read_text(), "A five-minute tour")
    rule_file = tmp_path / "refunds.yaml"
    rule_file.write_text(_heredoc(tour, "my-rules/refunds.yaml") + "\n")
    rules = load_rule_set([rule_file])
    assert [rule.id for rule in rules.rules] == ["refunds-to-billing"]
    event = parse_event(json.loads(_heredoc(tour, "refund.json")))
    assert event.id == "tour-1"


def test_the_rule_references_counts_are_the_example_rules_and_their_tests():
    from rules_engine.rule_tests import check_test_files
    from rules_engine.rules.loader import rule_files

    docs = (DOCS / "rules.md").read_text()
    rules = load_rule_set([ROOT / "rules"])
    checked = check_test_files([ROOT / "rules" / "tests"], None)
    assert f"rule set: rules ({len(rules)} rule(s), version " in docs
    assert (f"OK: {len(rules)} rule(s) in {len(rule_files(ROOT / 'rules'))} file(s) and "
            f"{checked.cases} test case(s) in {checked.files} test file(s), version") in docs

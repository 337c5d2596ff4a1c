"""Business hours: parsing and its messages, ``contains`` across days, holidays and DST changes."""
from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules_engine.language.business_hours import (
    DAYS,
    BusinessHours,
    BusinessHoursError,
    parse_business_hours,
)

OFFICE = {"timezone": "UTC",
          "weekly": {day: ["09:00-12:30", "13:30-18:00"] for day in DAYS[:4]}
          | {"fri": ["09:00-12:30", "20:00-24:00"], "sat": []}}  # sun left out: closed too


def parse(raw: object) -> BusinessHours:
    hours, errors = parse_business_hours(raw)
    assert errors == [] and hours is not None
    return hours


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def problems(raw: object) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, rendered error) of every problem, checking that no definition comes with them."""
    hours, errors = parse_business_hours(raw)
    assert hours is None and errors
    return [(error.path, str(error)) for error in errors]


def with_changes(**changes: object) -> dict[str, object]:
    """OFFICE with keys replaced (a value of ... removes the key)."""
    return {key: value for key, value in (OFFICE | changes).items() if value is not ...}


# --- contains --------------------------------------------------------------------------------

@pytest.mark.parametrize(("instant", "open_"), [
    ("2026-11-02T10:00", True),    # Monday morning
    ("2026-11-02T13:00", False),   # Monday lunch break
    ("2026-11-04T16:45", True),    # Wednesday afternoon
    ("2026-11-02T07:00", False),   # before opening
    ("2026-11-02T19:00", False),   # after closing
    ("2026-11-07T10:00", False),   # Saturday: []
    ("2026-11-08T10:00", False),   # Sunday: left out
    ("2026-11-06T21:00", True),    # Friday evening range
])
def test_open_on_weekdays_and_closed_on_closed_days(instant, open_):
    assert parse(OFFICE).contains(utc(instant)) is open_


@pytest.mark.parametrize(("instant", "open_"), [
    ("2026-11-02T08:59:59.999999", False),
    ("2026-11-02T09:00:00", True),          # start inclusive
    ("2026-11-02T12:29:59.999999", True),
    ("2026-11-02T12:30:00", False),         # end exclusive
    ("2026-11-02T13:30:00", True),
    ("2026-11-02T17:59:59", True),
    ("2026-11-02T18:00:00", False),
    ("2026-11-06T23:59:59.999999", True),   # "20:00-24:00" runs to the end of Friday...
    ("2026-11-07T00:00:00", False),         # ...and no further: Saturday is closed
])
def test_boundaries(instant, open_):
    assert parse(OFFICE).contains(utc(instant)) is open_


def test_a_range_from_midnight_opens_at_midnight():
    hours = parse({"timezone": "UTC", "weekly": {"sat": ["00:00-06:00"]}})
    assert hours.contains(utc("2026-11-07T00:00"))
    assert not hours.contains(utc("2026-11-06T23:59:59"))


def test_instants_in_any_offset_are_compared_in_the_zone():
    hours = parse(OFFICE)  # in UTC: 09:30 open, then 12:30 closed
    assert hours.contains(datetime(2026, 11, 2, 14, 30, tzinfo=timezone(timedelta(hours=5))))
    assert not hours.contains(datetime(2026, 11, 2, 7, 30, tzinfo=timezone(timedelta(hours=-5))))


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        parse(OFFICE).contains(datetime(2026, 11, 2, 10, 0))


def test_a_holiday_is_closed_all_day_by_the_zone_s_own_calendar():
    every_day = {day: ["00:00-24:00"] for day in DAYS}
    tokyo = parse({"timezone": "Asia/Tokyo", "weekly": every_day, "holidays": ["2026-12-25"]})
    assert tokyo.contains(utc("2026-12-24T14:59"))       # Dec 24, 23:59 in Tokyo
    assert not tokyo.contains(utc("2026-12-24T15:00"))   # still Dec 24 in UTC, Dec 25 00:00 in Tokyo
    assert not tokyo.contains(utc("2026-12-25T14:59"))   # Dec 25, 23:59 in Tokyo
    assert tokyo.contains(utc("2026-12-25T15:00"))       # Dec 26 in Tokyo
    london = parse({"timezone": "UTC", "weekly": every_day, "holidays": ["2026-12-25"]})
    assert london.contains(utc("2026-12-24T15:00"))


PARIS = {"timezone": "Europe/Paris", "weekly": {"mon": ["09:00-18:00"], "sun": ["02:00-03:00"]}}


@pytest.mark.parametrize(("instant", "open_"), [
    # Spring: clocks go 02:00 -> 03:00 on Sunday 2026-03-29 (CET +1 -> CEST +2).
    ("2026-03-30T07:00", True),    # Monday after: 09:00 CEST
    ("2026-03-23T07:00", False),   # a week before: 08:00 CET
    ("2026-03-30T15:59", True),    # 17:59 CEST
    ("2026-03-23T16:59", True),    # 17:59 CET
    ("2026-03-23T17:00", False),   # 18:00 CET
    # Autumn: clocks go 03:00 -> 02:00 on Sunday 2026-10-25 (CEST +2 -> CET +1).
    ("2026-10-26T08:00", True),    # Monday after: 09:00 CET
    ("2026-10-26T07:30", False),   # 08:30 CET
    ("2026-10-19T07:30", True),    # a week before: 09:30 CEST
    ("2026-10-26T16:30", True),    # 17:30 CET
    ("2026-10-19T16:30", False),   # 18:30 CEST
    # The hour 02:00-03:00 does not exist on 2026-03-29...
    ("2026-03-29T00:59", False),   # 01:59 CET
    ("2026-03-29T01:00", False),   # 03:00 CEST
    # ...and happens twice on 2026-10-25.
    ("2026-10-24T23:59", False),   # 01:59 CEST
    ("2026-10-25T00:00", True),    # 02:00 CEST
    ("2026-10-25T00:59", True),    # 02:59 CEST
    ("2026-10-25T01:00", True),    # 02:00 CET, again
    ("2026-10-25T01:59", True),    # 02:59 CET
    ("2026-10-25T02:00", False),   # 03:00 CET
])
def test_daylight_saving_changes_in_paris(instant, open_):
    assert parse(PARIS).contains(utc(instant)) is open_


@pytest.mark.parametrize(("instant", "open_"), [
    # DST starts Sunday 2026-03-08 (EST -5 -> EDT -4).
    ("2026-03-09T13:00", True),    # Monday after: 09:00 EDT
    ("2026-03-02T13:00", False),   # a week before: 08:00 EST
    ("2026-03-02T14:00", True),    # 09:00 EST
    ("2026-03-09T21:59", True),    # 17:59 EDT
    ("2026-03-09T22:00", False),   # 18:00 EDT
    ("2026-03-02T22:00", True),    # 17:00 EST
    # DST ends Sunday 2026-11-01 (EDT -4 -> EST -5).
    ("2026-11-02T14:00", True),    # Monday after: 09:00 EST
    ("2026-11-02T13:30", False),   # 08:30 EST
    ("2026-10-26T13:30", True),    # a week before: 09:30 EDT
    ("2026-11-02T22:30", True),    # 17:30 EST
    ("2026-10-26T22:30", False),   # 18:30 EDT
])
def test_daylight_saving_changes_in_new_york(instant, open_):
    hours = parse({"timezone": "America/New_York", "weekly": {"mon": ["09:00-18:00"]}})
    assert hours.contains(utc(instant)) is open_


def test_to_dict_gives_back_the_definition():
    hours = parse({"timezone": "Europe/Paris", "weekly": {"mon": ["13:30-18:00", "09:00-12:30"]},
                   "holidays": ["2027-01-01", date(2026, 12, 25), "2027-01-01"]})
    assert hours.to_dict() == {
        "timezone": "Europe/Paris",
        "weekly": {"mon": ["09:00-12:30", "13:30-18:00"], "tue": [], "wed": [], "thu": [],
                   "fri": [], "sat": [], "sun": []},
        "holidays": ["2026-12-25", "2027-01-01"],
    }
    assert parse(hours.to_dict()) == hours


# --- validation ------------------------------------------------------------------------------

def test_the_error_names_its_place_and_shows_the_fix():
    [error] = parse_business_hours(with_changes(weekly={"mon": ["08:00-09:00", "9:00-18:00"]}))[1]
    assert isinstance(error, BusinessHoursError)
    assert error.path == ("weekly", "mon", 1)
    assert error.message == '"9:00-18:00" is not HH:MM-HH:MM'
    assert error.hint == 'write "09:00-18:00"'
    assert str(error) == 'weekly/mon/1: "9:00-18:00" is not HH:MM-HH:MM (hint: write "09:00-18:00")'


@pytest.mark.parametrize(("raw", "path", "expected"), [
    # the mapping and its keys
    (["09:00-18:00"], (), "expected the keys timezone and weekly, got a list"),
    (None, (), "got nothing"),
    (with_changes(timezon="UTC"), ("timezon",), "did you mean `timezone`?"),
    (with_changes(hours={}), ("hours",), "the keys are timezone, weekly and holidays"),
    # timezone
    (with_changes(timezone=...), ("timezone",), "the time zone is missing (hint: add timezone: "),
    (with_changes(timezone=1), ("timezone",), "expected a time-zone name, got the number 1"),
    (with_changes(timezone=""), ("timezone",), 'unknown time zone ""'),
    (with_changes(timezone="Europe/Pariss"), ("timezone",), "did you mean `Europe/Paris`?"),
    (with_changes(timezone="Mars/Olympus"), ("timezone",), 'use an IANA name such as "Europe/Paris"'),
    (with_changes(timezone="Europe"), ("timezone",), 'unknown time zone "Europe"'),
    (with_changes(timezone="../x"), ("timezone",), 'unknown time zone "../x"'),
    (with_changes(timezone="Europe/../Europe/Paris"), ("timezone",), "unknown time zone"),
    (with_changes(timezone="/usr/share/zoneinfo/UTC"), ("timezone",), "unknown time zone"),
    (with_changes(timezone="zone.tab"), ("timezone",), "unknown time zone"),
    (with_changes(timezone="localtime"), ("timezone",), "unknown time zone"),
    # weekly
    (with_changes(weekly=...), ("weekly",), "the opening hours are missing"),
    (with_changes(weekly=["09:00-18:00"]), ("weekly",), "expected the days with their opening hours"),
    (with_changes(weekly={"monday": []}), ("weekly", "monday"),
     'unknown day "monday": the days are mon, tue, wed, thu, fri, sat, sun (hint: write mon)'),
    (with_changes(weekly={"Wednesday": []}), ("weekly", "Wednesday"), "(hint: write wed)"),
    (with_changes(weekly={"lundi": []}), ("weekly", "lundi"), "the days are mon, tue, wed"),
    (with_changes(weekly={"mon": "09:00-18:00"}), ("weekly", "mon"),
     '"09:00-18:00" must be in a list (hint: write ["09:00-18:00"], or [] for a closed day)'),
    (with_changes(weekly={"sat": None}), ("weekly", "sat"), "got nothing (hint: write [] for a closed day)"),
    # one range
    (with_changes(weekly={"mon": [900]}), ("weekly", "mon", 0), "the number 900 is not a time range"),
    (with_changes(weekly={"mon": ["9-18"]}), ("weekly", "mon", 0), 'hint: write "09:00-18:00"'),
    (with_changes(weekly={"mon": ["09:00 - 18:00"]}), ("weekly", "mon", 0), 'hint: write "09:00-18:00"'),
    (with_changes(weekly={"mon": ["9am-6pm"]}), ("weekly", "mon", 0),
     '"9am-6pm" is not HH:MM-HH:MM (hint: write it like "09:00-18:00")'),
    (with_changes(weekly={"mon": ["09:00-25:00"]}), ("weekly", "mon", 0), "25:00 is not a time of day"),
    (with_changes(weekly={"mon": ["09:60-18:00"]}), ("weekly", "mon", 0), "09:60 is not a time of day"),
    (with_changes(weekly={"mon": ["09:00-24:01"]}), ("weekly", "mon", 0), "24:01 is not a time of day"),
    (with_changes(weekly={"mon": ["24:00-24:00"]}), ("weekly", "mon", 0), "does not end after it starts"),
    (with_changes(weekly={"mon": ["10:00-10:00"]}), ("weekly", "mon", 0), "does not end after it starts"),
    (with_changes(weekly={"fri": ["22:00-06:00"]}), ("weekly", "fri", 0),
     ('"22:00-06:00" does not end after it starts (hint: a range cannot cross midnight: '
      'split it into "22:00-24:00" and "00:00-06:00" on the next day)')),
    (with_changes(weekly={"fri": ["22:00-00:00"]}), ("weekly", "fri", 0),
     'to stay open until midnight, write "22:00-24:00"'),
    # ranges of a day
    (with_changes(weekly={"mon": ["12:00-14:00", "09:00-12:30"]}), ("weekly", "mon", 1),
     '"09:00-12:30" overlaps "12:00-14:00" (hint: merge them into "09:00-14:00")'),
    (with_changes(weekly={"mon": ["09:00-18:00", "09:00-18:00"]}), ("weekly", "mon", 1),
     '"09:00-18:00" overlaps "09:00-18:00"'),
    # holidays
    (with_changes(holidays="2026-12-25"), ("holidays",), "expected a list of dates, got text"),
    (with_changes(holidays=None), ("holidays",), "got nothing"),
    (with_changes(holidays=["2026-02-30"]), ("holidays", 0), '"2026-02-30" is not a day of the calendar'),
    (with_changes(holidays=["2026-13-01"]), ("holidays", 0), "is not a day of the calendar"),
    (with_changes(holidays=["25/12/2026"]), ("holidays", 0), '"25/12/2026" is not a date written YYYY-MM-DD'),
    (with_changes(holidays=["20261225"]), ("holidays", 0), "is not a date written YYYY-MM-DD"),
    (with_changes(holidays=["2026-12-25T00:00"]), ("holidays", 0), "is not a date written YYYY-MM-DD"),
    (with_changes(holidays=[datetime(2026, 12, 25)]), ("holidays", 0), "a datetime is not a date"),
    (with_changes(holidays=[2026]), ("holidays", 0), "the number 2026 is not a date"),
])
def test_each_problem_is_reported_at_its_path(raw, path, expected):
    [(found_path, text)] = problems(raw)
    assert found_path == path
    assert expected in text


def test_valid_variants_are_accepted():
    parse(with_changes(weekly={}))                                             # never open
    parse(with_changes(weekly={"mon": ["09:00-12:00", "12:00-18:00"]}))        # touching is fine
    parse(with_changes(weekly={"mon": ["00:00-24:00"]}))
    parse(with_changes(holidays=[]))
    parse(with_changes(holidays=["2026-12-25", "2026-12-25", date(2026, 12, 25)]))  # duplicates
    parse(with_changes(timezone="America/Argentina/Buenos_Aires"))


def test_every_problem_of_a_definition_is_reported_together():
    raw = {
        "timezone": "Europe/Pari",
        "weekly": {"mon": ["9:00-18:00", "08:00-10:00"], "tues": [], "fri": ["22:00-06:00", 5]},
        "holidays": ["2026-12-25", "2026-02-30"],
        "holiday": [],
    }
    assert [path for path, _ in problems(raw)] == [
        ("holiday",),
        ("timezone",),
        ("weekly", "tues"),
        ("weekly", "mon", 0),
        ("weekly", "fri", 0),
        ("weekly", "fri", 1),
        ("holidays", 1),
    ]


def test_overlaps_name_every_pair_in_written_order():
    raw = with_changes(weekly={"mon": ["10:00-11:00", "00:00-24:00", "12:00-13:00", "12:30-14:00"]})
    assert [(path, text.split(" (hint")[0]) for path, text in problems(raw)] == [
        (("weekly", "mon", 1), 'weekly/mon/1: "00:00-24:00" overlaps "10:00-11:00"'),
        (("weekly", "mon", 2), 'weekly/mon/2: "12:00-13:00" overlaps "00:00-24:00"'),
        (("weekly", "mon", 3), 'weekly/mon/3: "12:30-14:00" overlaps "00:00-24:00"'),
    ]


# --- properties ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Asia/Kathmandu",
         "America/St_Johns", "Australia/Lord_Howe", "Pacific/Apia", "Pacific/Kiritimati"]
MINUTES = st.one_of(st.integers(0, 96).map(lambda quarter: quarter * 15), st.integers(0, 1440))


def _clock(minute: int) -> str:
    return f"{minute // 60:02}:{minute % 60:02}"


@st.composite
def day_ranges(draw: st.DrawFn) -> list[str]:
    """Non-overlapping ranges (some touching) in any order: consecutive pairs of sorted minutes."""
    bounds = sorted(draw(st.sets(MINUTES, max_size=8)))
    pairs = [pair for pair in itertools.pairwise(bounds) if draw(st.booleans())]
    return draw(st.permutations([f"{_clock(start)}-{_clock(end)}" for start, end in pairs]))


DEFINITIONS = st.fixed_dictionaries({
    "timezone": st.sampled_from(ZONES),
    "weekly": st.dictionaries(st.sampled_from(DAYS), day_ranges()),
    "holidays": st.lists(st.dates(date(2019, 12, 25), date(2041, 1, 5)).map(date.isoformat), max_size=20),
})
INSTANTS = st.builds(
    lambda day, minute, second, offset: (datetime.combine(day, datetime.min.time(), timezone(offset))
                                         + timedelta(minutes=minute, seconds=second)),
    st.dates(date(2020, 1, 1), date(2040, 12, 31)),
    MINUTES,
    st.one_of(st.just(0), st.integers(0, 59)),
    st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(hours=5, minutes=30)]),
)


def reference_contains(definition: dict, at: datetime) -> bool:
    """The naive way: local wall clock by zoneinfo, seconds since local midnight against each range."""
    local = at.astimezone(ZoneInfo(definition["timezone"]))
    if local.date().isoformat() in definition["holidays"]:
        return False
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][local.isoweekday() - 1]
    for text in definition["weekly"].get(day, []):
        start, end = (int(clock[:2]) * 3600 + int(clock[3:]) * 60 for clock in text.split("-"))
        if start <= seconds < end:
            return True
    return False


@settings(max_examples=500, deadline=None, derandomize=True)
@given(DEFINITIONS, st.lists(INSTANTS, min_size=1, max_size=10), st.data())
def test_contains_agrees_with_a_naive_reference(definition, instants, data):
    near = [(at.date() + timedelta(days=shift)).isoformat() for at in instants for shift in (-1, 0, 1)]
    definition = definition | {"holidays": definition["holidays"]
                               + data.draw(st.lists(st.sampled_from(near), max_size=5))}
    hours = parse(definition)
    for at in instants:
        assert hours.contains(at) is reference_contains(definition, at), at
    assert parse(hours.to_dict()) == hours


WORDS = st.sampled_from(["timezone", "weekly", "holidays", *DAYS, "Europe/Paris", "UTC", "../x", "",
                         "09:00-18:00", "22:00-06:00", "24:00-24:00", "9-18", "2026-12-25", "2026-02-30"])
JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | WORDS | st.dates(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(WORDS | st.text() | st.integers(), children, max_size=5),
    max_leaves=30,
)
SHAPED_JUNK = st.fixed_dictionaries({}, optional={
    "timezone": st.sampled_from(ZONES) | JSON_LIKE,
    "weekly": st.dictionaries(WORDS, st.lists(WORDS | JSON_LIKE, max_size=4) | JSON_LIKE) | JSON_LIKE,
    "holidays": st.lists(WORDS | JSON_LIKE, max_size=4) | JSON_LIKE,
})


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(JSON_LIKE | SHAPED_JUNK)
def test_parse_never_raises_on_junk(raw):
    hours, errors = parse_business_hours(raw)
    assert (hours is None) == bool(errors)
    for error in errors:
        assert isinstance(error, BusinessHoursError) and error.message and str(error)
        assert isinstance(error.path, tuple) and all(isinstance(part, str | int) for part in error.path)
    if hours is not None:
        assert parse(hours.to_dict()) == hours

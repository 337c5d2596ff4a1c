"""Business hours: opening times per weekday in one IANA time zone, minus holidays.

Admins write them under the ``business_hours`` key of a rule file::

    business_hours:
      timezone: Europe/Paris
      weekly: {mon: ["09:00-12:30", "13:30-18:00"], sat: []}
      holidays: ["2026-12-25"]

``parse_business_hours`` checks every part and reports all problems at once;
``BusinessHours.contains`` says whether an instant falls within the hours.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from rules_engine.domain.errors import did_you_mean

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # in datetime.weekday() order
KEYS = ("timezone", "weekly", "holidays")

Path = tuple[str | int, ...]
Ranges = tuple[tuple[int, int], ...]

_RANGE = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
# What admins write instead: "9:00-18:00", "9-18", "09h00 - 18h00"...
_LOOSE_RANGE = re.compile(
    r"\s*([0-9]{1,2})(?:[:.hH]([0-9]{2}))?\s*[-–—]\s*([0-9]{1,2})(?:[:.hH]([0-9]{2}))?\s*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EXAMPLE_RANGE = '"09:00-18:00"'


class BusinessHoursError(Exception):
    """One problem in a ``business_hours`` definition, at ``path`` inside it."""

    def __init__(self, message: str, path: Path = (), hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.hint = hint

    def __str__(self) -> str:
        where = "/".join(str(part) for part in self.path)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


@dataclass(frozen=True)
class BusinessHours:
    """A parsed definition. ``weekly`` holds seven tuples of (start, end) minutes, Monday first."""

    zone: ZoneInfo
    weekly: tuple[Ranges, ...]
    holidays: frozenset[date]

    def contains(self, at: datetime) -> bool:
        """Whether the aware instant ``at`` is within the hours (start inclusive, end exclusive)."""
        if at.utcoffset() is None:
            raise ValueError("business hours need a timezone-aware datetime")
        local = at.astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly[local.weekday()])

    def to_dict(self) -> dict[str, object]:
        """The definition as admins write it (every day listed, holidays sorted)."""
        return {
            "timezone": self.zone.key,
            "weekly": {day: [f"{_clock(start)}-{_clock(end)}" for start, end in ranges]
                       for day, ranges in zip(DAYS, self.weekly)},
            "holidays": sorted(day.isoformat() for day in self.holidays),
        }


def parse_business_hours(raw: object) -> tuple[BusinessHours | None, list[BusinessHoursError]]:
    """Check a parsed ``business_hours`` value: the definition, or every problem found."""
    if not isinstance(raw, Mapping):
        return None, [BusinessHoursError(
            f"business_hours: expected the keys timezone and weekly, got {_kind(raw)}",
            hint='write timezone: Europe/Paris and weekly: {mon: ["09:00-18:00"]} under it')]
    errors: list[BusinessHoursError] = []
    for key in raw:
        if key not in KEYS:
            errors.append(BusinessHoursError(
                f'unknown key "{key}"', (_key(key),),
                hint=did_you_mean(str(key), KEYS) or "the keys are timezone, weekly and holidays"))
    zone = _timezone(raw, errors)
    weekly = _weekly(raw, errors)
    holidays = _holidays(raw.get("holidays", []), errors)
    if errors or zone is None or weekly is None:
        return None, errors
    return BusinessHours(zone, weekly, holidays), []


Errors = list[BusinessHoursError]


def _timezone(raw: Mapping[object, object], errors: Errors) -> ZoneInfo | None:
    if "timezone" not in raw:
        errors.append(BusinessHoursError("the time zone is missing", ("timezone",),
                                         hint="add timezone: Europe/Paris (an IANA time-zone name)"))
        return None
    name = raw["timezone"]
    if not isinstance(name, str):
        errors.append(BusinessHoursError(
            f"expected a time-zone name, got {_kind(name)}", ("timezone",),
            hint='write an IANA name such as "Europe/Paris"'))
        return None
    if name != "localtime":  # the server's own zone, which would change with the machine
        try:
            return ZoneInfo(name)
        # ValueError: "", "../x", "/x", not a zone file; OSError: a directory inside the tzdata package
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    errors.append(BusinessHoursError(
        f'unknown time zone "{name}"', ("timezone",),
        hint=did_you_mean(name, _zone_names()) or 'use an IANA name such as "Europe/Paris"'))
    return None


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - {"localtime"}


def _weekly(raw: Mapping[object, object], errors: Errors) -> tuple[Ranges, ...] | None:
    if "weekly" not in raw:
        errors.append(BusinessHoursError("the opening hours are missing", ("weekly",),
                                         hint='add weekly: {mon: ["09:00-18:00"], ...}'))
        return None
    weekly = raw["weekly"]
    if not isinstance(weekly, Mapping):
        errors.append(BusinessHoursError(
            f"expected the days with their opening hours, got {_kind(weekly)}", ("weekly",),
            hint='write weekly: {mon: ["09:00-18:00"], sat: []}'))
        return None
    for day in weekly:
        if day not in DAYS:
            prefix = str(day)[:3].lower()
            errors.append(BusinessHoursError(
                f'unknown day "{day}": the days are {", ".join(DAYS)}', ("weekly", _key(day)),
                hint=f"write {prefix}" if prefix in DAYS else did_you_mean(str(day), DAYS)))
    return tuple(_day(weekly.get(day, []), ("weekly", day), errors) for day in DAYS)


def _day(value: object, path: Path, errors: Errors) -> Ranges:
    if isinstance(value, str):
        errors.append(BusinessHoursError(
            f'"{value}" must be in a list', path, hint=f'write ["{value}"], or [] for a closed day'))
        return ()
    if not isinstance(value, list | tuple):
        errors.append(BusinessHoursError(
            f"expected a list of opening hours such as [{_EXAMPLE_RANGE}], got {_kind(value)}",
            path, hint="write [] for a closed day"))
        return ()
    spans = sorted((span, index) for index, text in enumerate(value)
                   if (span := _range(text, path + (index,), errors)) is not None)
    furthest: tuple[tuple[int, int], int] | None = None  # of the ranges seen, the one ending last
    overlaps: list[tuple[int, int, BusinessHoursError]] = []  # to report them in written order
    for span, index in spans:
        if furthest is not None and span[0] < furthest[0][1]:
            first, second = sorted((furthest[1], index))
            merged = f"{_clock(furthest[0][0])}-{_clock(max(span[1], furthest[0][1]))}"
            overlaps.append((second, first, BusinessHoursError(
                f'"{value[second]}" overlaps "{value[first]}"',
                path + (second,), hint=f'merge them into "{merged}"')))
        if furthest is None or span[1] > furthest[0][1]:
            furthest = (span, index)
    errors.extend(error for *_, error in sorted(overlaps, key=lambda overlap: overlap[:2]))
    return tuple(span for span, _ in spans)


def _range(text: object, path: Path, errors: Errors) -> tuple[int, int] | None:
    """``"HH:MM-HH:MM"`` as (start, end) minutes of the day, or None after recording the problem."""
    if not isinstance(text, str):
        errors.append(BusinessHoursError(f"{_kind(text)} is not a time range", path,
                                         hint=f"write it in quotes, such as {_EXAMPLE_RANGE}"))
        return None
    match = _RANGE.fullmatch(text)
    if match is None:
        loose = _LOOSE_RANGE.fullmatch(text)
        fix = loose and f"{int(loose[1]):02}:{loose[2] or '00'}-{int(loose[3]):02}:{loose[4] or '00'}"
        hint = f'write "{fix}"' if fix and _range(fix, path, []) else f"write it like {_EXAMPLE_RANGE}"
        errors.append(BusinessHoursError(f'"{text}" is not HH:MM-HH:MM', path, hint=hint))
        return None
    hours, minutes = (int(match[1]), int(match[3])), (int(match[2]), int(match[4]))
    for clock, hour, minute in zip((text[:5], text[6:]), hours, minutes):
        if not (hour <= 23 and minute <= 59 or (hour, minute) == (24, 0)):
            errors.append(BusinessHoursError(
                f'"{text}": {clock} is not a time of day', path,
                hint='hours go from 00 to 23 and minutes from 00 to 59; "24:00" may end a day'))
            return None
    start, end = hours[0] * 60 + minutes[0], hours[1] * 60 + minutes[1]
    if start < end:
        return start, end
    if end == 0:
        hint = f'to stay open until midnight, write "{text[:5]}-24:00"'
    elif start > end:
        hint = (f'a range cannot cross midnight: split it into "{text[:5]}-24:00" '
                f'and "00:00-{text[6:]}" on the next day')
    else:
        hint = "remove it, or make it end after it starts"
    errors.append(BusinessHoursError(f'"{text}" does not end after it starts', path, hint=hint))
    return None


def _holidays(value: object, errors: Errors) -> frozenset[date]:
    if not isinstance(value, list | tuple):
        errors.append(BusinessHoursError(
            f"expected a list of dates, got {_kind(value)}", ("holidays",),
            hint='write holidays: ["2026-12-25"], or leave the key out'))
        return frozenset()
    days = set()
    for index, item in enumerate(value):
        if isinstance(item, date) and not isinstance(item, datetime):  # YAML's unquoted 2026-12-25
            days.add(item)
        elif not isinstance(item, str) or not _DATE.fullmatch(item):
            shown = f'"{item}"' if isinstance(item, str) else _kind(item)
            errors.append(BusinessHoursError(f"{shown} is not a date written YYYY-MM-DD",
                                             ("holidays", index), hint='write it like "2026-12-25"'))
        else:
            try:
                days.add(date.fromisoformat(item))
            except ValueError:
                errors.append(BusinessHoursError(
                    f'"{item}" is not a day of the calendar', ("holidays", index),
                    hint="check the month (01 to 12) and the day of the month"))
    return frozenset(days)


def _clock(minute: int) -> str:
    return f"{minute // 60:02}:{minute % 60:02}"


def _key(key: object) -> str | int:
    """A mapping key as a path part: as written when it can be (to find it in the source map)."""
    return key if isinstance(key, str | int) else str(key)


def _kind(value: object) -> str:
    """What a value is, in an admin's words."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (yes/no)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a set of keys"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"

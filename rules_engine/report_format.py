"""Rendering a conversation report as an aligned terminal table (rich) or as CSV."""
from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from rules_engine.metrics import STATISTICS

COLUMNS = ("closed", *STATISTICS, "responded", *(f"first_resp_{name}" for name in STATISTICS),
           "open_now", "oldest_open")


def duration(seconds: float | None) -> str:
    """``3725`` -> ``1h 02m``; ``None`` -> ``-``."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _statistics(figures: dict[str, Any], block: str) -> list[float | None]:
    """Mean, median, p90 and max of one duration block (``resolution_seconds``, ...)."""
    return [figures[block][name] for name in STATISTICS]


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(("(none)" if g["key"] is None else str(g["key"])), g) for g in report["groups"]]
    return rows + [("TOTAL", report["totals"])]


TABLE_WIDTH = 100  # the table fits a terminal this wide (a long group name wraps)


def _moment(text: str) -> str:
    """``2026-11-04T00:00:00+00:00`` -> ``2026-11-04 00:00`` (UTC; seconds when there are)."""
    moment = datetime.fromisoformat(text).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")


def _section(report: dict[str, Any], heading: str, columns: Sequence[str],
             cells: Callable[[dict[str, Any]], list[str]]) -> str:
    """One block of the table: a heading, then a line per group and the total."""
    from rich import box  # only here: every other command starts without importing rich
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(report["by"] if report["by"] != "none" else "", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    rows = _rows(report)
    for number, (key, figures) in enumerate(rows):
        table.add_row(key, *cells(figures), end_section=number == len(rows) - 2)
    buffer = io.StringIO()
    Console(file=buffer, width=TABLE_WIDTH, color_system=None, force_terminal=False).print(table)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
    return heading + "\n" + "\n".join(lines) + "\n"


def _resolution(figures: dict[str, Any]) -> list[str]:
    return [str(figures["closed"]), *map(duration, _statistics(figures, "resolution_seconds")),
            "-" if figures["open_now"] is None else str(figures["open_now"]),
            duration(figures["open_age_seconds"]["max"])]


def _first_response(figures: dict[str, Any]) -> list[str]:
    return [str(figures["responded"]),
            *map(duration, _statistics(figures, "first_response_seconds"))]


def to_table(report: dict[str, Any]) -> str:
    """Aligned tables (rich) at most ``TABLE_WIDTH`` wide: resolution time (and the
    conversations open now), then first response time; a line per group and a total,
    durations as ``1h 02m``."""
    title = f"Conversations, {_moment(report['since'])} .. {_moment(report['until'])} UTC"
    if report["filters"]:
        title += ", where " + ", ".join(f"{k}={v}" for k, v in report["filters"].items())
    return "\n".join([
        textwrap.fill(title, TABLE_WIDTH),
        _section(report, "Resolution time of those closed, and those open now:",
                 ["closed", *STATISTICS, "open now", "oldest open"], _resolution),
        _section(report, "First response time of those first answered:",
                 ["responded", *STATISTICS], _first_response)])


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return) written with a leading ``'``, as OWASP advises;
    numbers and other texts as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(report: dict[str, Any]) -> str:
    """CSV with a header row, one row per group and a total; times in seconds. The first
    eight columns are those of earlier releases; the first-response ones follow them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report["by"] if report["by"] != "none" else "group", "closed",
                     *(f"{name}_seconds" for name in STATISTICS),
                     "open_now", "open_max_age_seconds", "responded",
                     *(f"first_response_{name}_seconds" for name in STATISTICS),
                     "since", "until"])
    for key, figures in _rows(report):
        writer.writerow([csv_cell(key), figures["closed"], *_statistics(figures, "resolution_seconds"),
                         "" if figures["open_now"] is None else figures["open_now"],
                         figures["open_age_seconds"]["max"], figures["responded"],
                         *_statistics(figures, "first_response_seconds"),
                         report["since"], report["until"]])
    return out.getvalue()

"""Rendering a conversation report as an aligned terminal table (rich) or as CSV."""
from __future__ import annotations

import csv
import io
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


def to_table(report: dict[str, Any]) -> str:
    """An aligned table (rich): one line per group and a total, durations as ``1h 02m``."""
    from rich import box  # only here: every other command starts without importing rich
    from rich.console import Console
    from rich.table import Table

    title = f"Conversations closed (or first answered) {report['since']} .. {report['until']}"
    if report["filters"]:
        title += " where " + ", ".join(f"{k}={v}" for k, v in report["filters"].items())
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(report["by"] if report["by"] != "none" else "", no_wrap=True)
    for column in COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    rows = _rows(report)
    for number, (key, figures) in enumerate(rows):
        table.add_row(
            key, str(figures["closed"]), *map(duration, _statistics(figures, "resolution_seconds")),
            str(figures["responded"]),
            *map(duration, _statistics(figures, "first_response_seconds")),
            "-" if figures["open_now"] is None else str(figures["open_now"]),
            duration(figures["open_age_seconds"]["max"]), end_section=number == len(rows) - 2)
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None, force_terminal=False).print(table)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
    return title + "\n" + "\n".join(lines) + "\n"


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

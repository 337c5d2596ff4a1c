"""Rendering a conversation report as an aligned terminal table or as CSV."""
from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = ("closed", "mean", "median", "p90", "max", "open_now", "oldest_open")


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


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(("(none)" if g["key"] is None else str(g["key"])), g) for g in report["groups"]]
    return rows + [("TOTAL", report["totals"])]


def to_table(report: dict[str, Any]) -> str:
    """An aligned table: one line per group and a total, durations as ``1h 02m``."""
    header = (report["by"] if report["by"] != "none" else "", *COLUMNS)
    lines = [header]
    for key, figures in _rows(report):
        resolution = figures["resolution_seconds"]
        lines.append((
            key, str(figures["closed"]), duration(resolution["mean"]), duration(resolution["median"]),
            duration(resolution["p90"]), duration(resolution["max"]),
            "-" if figures["open_now"] is None else str(figures["open_now"]),
            duration(figures["open_age_seconds"]["max"]),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                  for i, cell in enumerate(line)).rstrip()
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    title = f"Conversations closed {report['since']} .. {report['until']}"
    if report["filters"]:
        title += " where " + ", ".join(f"{k}={v}" for k, v in report["filters"].items())
    return title + "\n" + "\n".join(rendered) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    """CSV with a header row, one row per group and a total; times in seconds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report["by"] if report["by"] != "none" else "group", "closed",
                     "mean_seconds", "median_seconds", "p90_seconds", "max_seconds",
                     "open_now", "open_max_age_seconds", "since", "until"])
    for key, figures in _rows(report):
        resolution = figures["resolution_seconds"]
        writer.writerow([key, figures["closed"], resolution["mean"], resolution["median"],
                         resolution["p90"], resolution["max"],
                         "" if figures["open_now"] is None else figures["open_now"],
                         figures["open_age_seconds"]["max"], report["since"], report["until"]])
    return out.getvalue()

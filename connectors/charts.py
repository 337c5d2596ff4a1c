"""Server-side SVG bar charts: no script, no CDN, nothing leaves the machine."""
from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def _nice_ceiling(value: float) -> float:
    """1, 2, 5 x 10^n at or above ``value`` (at least 1), for a readable axis."""
    if value <= 1:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, test_id: str,
              width: int = 720, height: int = 220, label_every: int = 1) -> Markup:
    """An accessible SVG bar chart; each bar carries its label and value (``<title>``)."""
    left, bottom, top = 44, 36, 12
    plot_width, plot_height = width - left - 8, height - bottom - top
    ceiling = _nice_ceiling(max((value for _, value in bars), default=0))
    slot = plot_width / max(len(bars), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(title)}" data-testid="{escape(test_id)}" '
             f'class="chart">', f"<title>{escape(title)}</title>"]
    for fraction in (0, 0.5, 1):
        y = top + plot_height * (1 - fraction)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                     f"{ceiling * fraction:g}</text>")
    for index, (label, value) in enumerate(bars):
        bar_height = plot_height * (value / ceiling)
        x = left + index * slot + slot * 0.1
        y = top + plot_height - bar_height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{bar_height:.1f}" '
            f'class="bar" data-label="{escape(label)}" data-value="{value:g}">'
            f"<title>{escape(label)}: {value:g}</title></rect>")
        if index % label_every == 0:
            parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{height - bottom + 16}" '
                         f'text-anchor="middle" class="axis">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

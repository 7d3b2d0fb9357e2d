"""Small terminal charts for `approvalctl stats`: the response-time distribution as
horizontal bars and the last 24 hours of decisions as a column chart, one character per hour.

Unicode block characters (U+2581-U+2588) where stdout can encode them; plain ASCII (`#`,
`.:-=+*#`) on a stream that cannot (`LANG=C`, `PYTHONIOENCODING=ascii`). The charts carry only
numbers and our own labels, never agent text.
"""

from __future__ import annotations

import sys
from typing import Any

from ..durations import format_duration
from .app import can_encode

BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII_LEVELS = " .:-=+*##"
BAR_WIDTH = 40


def _levels() -> str:
    return BLOCKS if can_encode(sys.stdout, BLOCKS) else ASCII_LEVELS


def bar(count: int, most: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar `count/most` of `width` characters, in eighths where possible."""
    if most <= 0 or count <= 0:
        return ""
    levels = _levels()
    if levels is ASCII_LEVELS:
        return "#" * max(1, round(width * count / most))
    eighths = max(1, round(width * 8 * count / most))
    return "█" * (eighths // 8) + (levels[eighths % 8] if eighths % 8 else "")


def column(values: list[int]) -> str:
    """One character per value, its height proportional to the largest (a sparkline)."""
    levels = _levels()
    most = max(values, default=0)
    if most <= 0:
        return ("·" if levels is BLOCKS else "_") * len(values)
    top = len(levels) - 1
    zero = "·" if levels is BLOCKS else "_"  # an empty hour is visible, not a gap
    return "".join(zero if v == 0 else levels[max(1, round(top * v / most))] for v in values)


def histogram_lines(histogram: list[dict[str, Any]]) -> list[str]:
    """`<= 5s  ████ 12` rows for the response-time buckets (empty buckets included)."""
    most = max((b["count"] for b in histogram), default=0)
    lines, low = [], None
    for b in histogram:
        label = f"<= {format_duration(b['le'])}" if b["le"] is not None else \
            f"> {format_duration(low)}"
        low = b["le"]
        lines.append(f"  {label:>9} {bar(b['count'], most):<{BAR_WIDTH}} {b['count']}")
    return lines


def decisions_lines(hours: list[dict[str, Any]]) -> list[str]:
    """Two sparklines (approved, rejected), oldest hour on the left, and the hour scale."""
    approved = [h["approved"] for h in hours]
    rejected = [h["rejected"] for h in hours]
    return [f"  approved {column(approved)} {sum(approved)}",
            f"  rejected {column(rejected)} {sum(rejected)}",
            f"           {'-24h':<{len(hours) - 3}}now"]


def print_charts(data: dict[str, Any]) -> None:
    """Both charts on stdout, each under a one-line title."""
    if data.get("response_time_histogram") is None:
        return
    out = ["", "response time (decided requests)"]
    out += histogram_lines(data["response_time_histogram"])
    out += ["", "decisions in the last 24 h, per hour"]
    out += decisions_lines(data["decisions_per_hour"])
    sys.stdout.write("\n".join(out) + "\n")

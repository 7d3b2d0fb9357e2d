"""Parse and format the short durations users type: `30s`, `10m`, `2h`, `7d`."""

from __future__ import annotations

import re

from .errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> float:
    """Seconds in `text` (`90s`, `10m`, `1h30m`, `7d`; a bare number means seconds)."""
    raw = str(text).strip().lower()
    if not raw:
        raise InvalidInput(f"invalid {what} '': expected e.g. 30s, 10m, 2h, 7d")
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise InvalidInput(
                f"invalid {what} {text!r}: expected e.g. 30s, 10m, 2h, 7d"
            ) from None
    if seconds != seconds or seconds in (float("inf"),):  # NaN / inf
        raise InvalidInput(f"invalid {what} {text!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidInput(f"invalid {what} {text!r}: must be greater than zero")
    return seconds


def format_duration(seconds: float | None) -> str:
    """A compact human form: `45s`, `12m`, `3h05m`, `2d04h`."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"

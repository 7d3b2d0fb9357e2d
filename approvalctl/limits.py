"""The limits a client cannot talk its way past: HTTP connection limits and per-key quotas.

Both come from the config file (`http_limits:` and `quotas:` mappings, see docs/api.md
"Limits") and are validated here, once, when settings are loaded: a typo or a nonsense value
stops `serve` (or the CLI) with one line naming the key, instead of silently meaning "no
limit". Durations accept the CLI's forms (`10s`, `2m`) or a number of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidInput


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP connection may cost the server before it is authenticated.

    max_header_bytes: request line plus header block, in bytes (431 beyond it).
    max_headers: number of header fields (431 beyond it).
    header_timeout: seconds from the connection (or the first byte of the next request on a
        kept-alive connection) until its header block is complete; then 408 and close.
    keep_alive_timeout: seconds an idle kept-alive connection stays open between requests.
    body_timeout: seconds an authenticated request's body may take to arrive in full (a
        body trickled a byte at a time would otherwise hold a connection for ever); then
        408 and close.
    max_connections: open connections per server process; more are answered 503 and closed.
    """

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    body_timeout: float = 10.0
    max_connections: int = 10_000


@dataclass(frozen=True)
class Quotas:
    """Per-key limits, each None (off) or a positive number.

    create_rate: requests created per second per key (bursts up to the rate, at least 1).
    max_pending: pending requests per requesting user (the key's name, or the local user).
    max_waits: concurrent long-polls (and event streams) per key.
    max_response_bytes: serialised size of one list page; a page stops early, with a
        next_cursor, when the next item would pass it.
    """

    create_rate: float | None = 10.0
    max_pending: int | None = 1000
    max_waits: int | None = 100
    max_response_bytes: int | None = 4 * 1024 * 1024


_INTS = {"max_header_bytes", "max_headers", "max_connections", "max_pending", "max_waits",
         "max_response_bytes"}
_SECONDS = {"header_timeout", "keep_alive_timeout", "body_timeout"}


def _parse(cls: type, data: Any, section: str, where: str, nullable: bool) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: {section} must be a mapping of limits")
    known = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            raise InvalidInput(f"{where}: unknown setting {section}.{name!r} (known: "
                               f"{', '.join(known)})")
        what = f"{where}: {section}.{name}"
        if value is None or value is False:
            if not nullable:
                raise InvalidInput(f"{what} cannot be switched off")
            values[name] = None
            continue
        if name in _SECONDS and isinstance(value, str):
            from .durations import parse_duration

            value = parse_duration(value, what=what)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidInput(f"{what} must be a number greater than zero"
                               + (" (or null for no limit)" if nullable else "")
                               + f", got {value!r}")
        if name in _INTS:
            if value != int(value):
                raise InvalidInput(f"{what} must be a whole number, got {value!r}")
            value = int(value)
        values[name] = value
    return cls(**values)


def http_limits_from(data: Any, where: str = "config") -> HttpLimits:
    """HttpLimits from the `http_limits:` mapping (None: the defaults); InvalidInput names
    the first bad key. These limits cannot be switched off, only changed."""
    return _parse(HttpLimits, data, "http_limits", where, nullable=False)


def quotas_from(data: Any, where: str = "config") -> Quotas:
    """Quotas from the `quotas:` mapping (None: the defaults); a key set to null is off."""
    return _parse(Quotas, data, "quotas", where, nullable=True)

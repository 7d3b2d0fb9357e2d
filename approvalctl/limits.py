"""The limits a client cannot talk its way past: HTTP connection limits and per-key quotas.

Both come from the config file (`http_limits:` and `quotas:` mappings, see docs/api.md
"Limits"). What each key may be is declared once, in config.SCHEMA (checked when settings
are loaded: a typo or a nonsense value stops `serve` or the CLI with one line naming the
key, instead of silently meaning "no limit"); this module only builds the dataclasses.
Durations accept the CLI's forms (`10s`, `2m`) or a number of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


def _build(cls: type, data: Any, section: str, where: str) -> Any:
    """`cls` from a mapping config.SCHEMA allows (checked here too, for settings built in
    code): durations parsed, counts made ints, null or false (quotas only) meaning off."""
    from .config import WHOLE_LIMITS, validate_config

    if data is None:
        return cls()
    validate_config({section: data}, where)
    values: dict[str, Any] = {}
    for name, value in data.items():
        if value is None or value is False:
            values[name] = None
        elif isinstance(value, str):
            from .durations import parse_duration

            values[name] = parse_duration(value, what=f"{where}: {section}.{name}")
        else:
            values[name] = int(value) if name in WHOLE_LIMITS else value
    return cls(**values)


def http_limits_from(data: Any, where: str = "config") -> HttpLimits:
    """HttpLimits from the `http_limits:` mapping (None: the defaults); InvalidInput names
    the first bad key. These limits cannot be switched off, only changed."""
    return _build(HttpLimits, data, "http_limits", where)


def quotas_from(data: Any, where: str = "config") -> Quotas:
    """Quotas from the `quotas:` mapping (None: the defaults); a key set to null is off."""
    return _build(Quotas, data, "quotas", where)

"""Schemathesis hooks for tests/test_schemathesis.py: keep generated requests fast and
meaningful without changing whether they are valid.

- A valid `wait` (0-60 s) on a pending request would hold each case for up to a minute:
  valid waits are capped at 0.3 s (still valid; long-polls are tested on their own).
- `cursor` is an opaque token the server issues for one listing direction; a random but
  well-formed one gets the letter for the listing it is sent with (still well-formed), so
  the case tests paging instead of tripping over a token no server would have issued.
Invalid values are left exactly as generated, so negative cases stay negative.
"""

from __future__ import annotations

import re

import schemathesis

_CURSOR = re.compile(r"[ad][0-9a-z]{26}")


@schemathesis.hook
def before_call(context, case, kwargs) -> None:  # type: ignore[no-untyped-def]
    query = case.query
    if not isinstance(query, dict):
        return
    wait = query.get("wait")
    if wait is not None and not isinstance(wait, bool):
        try:
            seconds = float(wait)
        except (TypeError, ValueError):
            seconds = None
        if seconds is not None and 0 <= seconds <= 60:
            query["wait"] = min(seconds, 0.3)
    cursor = query.get("cursor")
    if isinstance(cursor, str) and _CURSOR.fullmatch(cursor):
        status = query.get("status", "pending")
        query["cursor"] = ("a" if status == "pending" else "d") + cursor[1:]

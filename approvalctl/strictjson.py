"""Strict JSON input: what every JSON document from outside (CLI `--args`, HTTP bodies)
is parsed with.

RFC 8259 §4 says object names SHOULD be unique and leaves duplicates to the parser;
Python's `json` keeps the last one. An agent could then show an operator one value and have
another one stored (`{"cmd": "ls", "cmd": "rm -rf /"}`), so a duplicated name anywhere in the
document is refused here, as are the non-JSON constants `NaN`, `Infinity` and `-Infinity`
(DESIGN.md §10). Errors are `InvalidInput` with one line naming the problem.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import (
    DuplicateKey,
    InvalidInput,
)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: The raw strict decoder (raises DuplicateKey, json.JSONDecodeError, ValueError).
decode = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constants).decode


def describe(exc: BaseException) -> str:
    """One line saying why `decode` refused a document: ``"duplicate key 'cmd' in a JSON
    object"``, ``"Expecting value at line 1 column 1"``, ``"nested too deeply"``, or the
    refusal's own text (NaN/Infinity, integers with thousands of digits)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def loads(text: str, what: str = "JSON") -> Any:
    """`text` parsed as JSON, refusing duplicate keys at any depth and NaN/Infinity.

    Raises InvalidInput (``"{what}: duplicate key 'cmd' in a JSON object"``, ``"{what} is
    not valid JSON: …"``) for anything else than one strict JSON document.
    """
    try:
        return decode(text)
    except DuplicateKey as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidInput(f"{what} is not valid JSON: {describe(exc)}") from None

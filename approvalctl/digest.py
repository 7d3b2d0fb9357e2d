"""The digest that binds an approval to one exact call.

`digest(tool_name, arguments)` is ``"sha256:" + hex(SHA-256(JCS({"tool_name": …,
"arguments": …})))``, JCS being the JSON Canonicalization Scheme of RFC 8785 (sorted keys by
UTF-16 code units, ECMAScript number formatting, minimal string escapes). Every JSON form of
a request carries it; a consumer presents it to prove it is about to run the very call the
operator saw. Canonicalisation is done by the maintained `rfc8785` package
(Trail of Bits), whose own suite runs the RFC's published vectors; tests/test_digest.py runs
them again here. The common case (no floats, keys in the BMP) goes through the standard
library's C encoder, which writes those values byte for byte as JCS does (tests/test_digest.py
compares the two on generated values).

Pure: no I/O, no imports from the rest of approvalctl.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

PREFIX = "sha256:"
#: How many hex digits people are shown (`show`, confirmations, Slack, e-mail).
SHORT = 12


class DigestError(ValueError):
    """The arguments hold a value JCS cannot represent (NaN, ±Infinity, an integer beyond
    ±2**53, a non-JSON type)."""


#: The largest integer an IEEE-754 double holds exactly (RFC 8785 section 3.2.2.3, I-JSON).
MAX_SAFE_INTEGER = 2**53 - 1
_NON_BMP = "\U00010000"
_stdlib = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False).encode


def _stdlib_is_canonical(value: Any) -> bool:
    """Whether the standard library's C encoder (sorted keys, no spaces, no ASCII escaping)
    writes `value` byte for byte as RFC 8785 does. True only for exact dicts with string
    keys of Basic Multilingual Plane characters (then code-point order, which `sort_keys`
    uses, is the UTF-16 code-unit order JCS sorts by), lists, strings, booleans, null and
    integers within ±(2**53-1) (written as the same decimal digits ECMAScript prints).
    Strings escape alike in both: backslash, quote, b f n r t as two-character escapes and
    the other control characters (below U+0020) as six-character ones with lower-case hex,
    everything else as itself. Floats (ECMAScript
    number text is not Python's repr) and any other type or subclass are False."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and max(key) >= _NON_BMP):
                return False
            if not _stdlib_is_canonical(item):
                return False
        return True
    if kind is list:
        return all(_stdlib_is_canonical(item) for item in value)
    return False


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value.

    Values the standard library's encoder provably writes the same way (see
    `_stdlib_is_canonical`) are encoded by it, several times faster; everything else (floats,
    keys outside the BMP, lone surrogates) by `rfc8785`. Raises DigestError for values JCS
    cannot represent.
    """
    try:
        if _stdlib_is_canonical(value):
            return _stdlib(value).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        pass  # a lone surrogate, or nested too deeply: rfc8785 decides (and refuses)
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise DigestError(f"not representable as canonical JSON (RFC 8785): {exc}") from None


def digest(tool_name: str, arguments: Any) -> str:
    """``"sha256:<64 hex>"`` over the canonical JSON of ``{"tool_name", "arguments"}``."""
    body = canonical({"tool_name": tool_name, "arguments": arguments})
    return PREFIX + hashlib.sha256(body).hexdigest()


def short(value: str) -> str:
    """The first 12 hex digits of a digest, as people are shown it (``sha256:0123abcd4567``)."""
    if value.startswith(PREFIX):
        return PREFIX + value[len(PREFIX):len(PREFIX) + SHORT]
    return value[:SHORT]

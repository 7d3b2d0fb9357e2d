"""The digest that binds an approval to one exact call.

`digest(tool_name, arguments)` is ``"sha256:" + hex(SHA-256(JCS({"tool_name": …,
"arguments": …})))``, JCS being the JSON Canonicalization Scheme of RFC 8785 (sorted keys by
UTF-16 code units, ECMAScript number formatting, minimal string escapes). Every JSON form of
a request carries it; a consumer presents it to prove it is about to run the very call the
operator saw. Canonicalisation is done by the maintained `rfc8785` package
(Trail of Bits), whose own suite runs the RFC's published vectors; tests/test_digest.py runs
them again here.

Pure: no I/O, no imports from the rest of approvalctl.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

PREFIX = "sha256:"
#: How many hex digits people are shown (`show`, confirmations, Slack, e-mail).
SHORT = 12


class DigestError(ValueError):
    """The arguments hold a value JCS cannot represent (NaN, ±Infinity, an integer beyond
    ±2**53, a non-JSON type)."""


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value.

    Raises DigestError for values JCS cannot represent.
    """
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

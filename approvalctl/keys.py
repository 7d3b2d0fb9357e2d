"""API key format: recognisable, self-checking, stored only as a hash.

    actl_<key id: 10 chars>_<secret: 32 chars><checksum: 6 chars>

The prefix lets secret scanners and people recognise a key; the CRC32 checksum lets a typo
be refused without touching the database; only SHA-256 of the whole key is stored (the
secret has 190 bits of entropy, so a slow password hash would add nothing) and it is
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

PREFIX = "actl_"
_ALPHABET = string.ascii_letters + string.digits
_ID_LEN, _SECRET_LEN, _CHECK_LEN = 10, 32, 6


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _b62(zlib.crc32(body.encode()), _CHECK_LEN)


def generate() -> tuple[str, str]:
    """A new (key_id, full key)."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(_ID_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))
    body = f"{PREFIX}{key_id}_{secret}"
    return key_id, body + _checksum(body)


def parse(key: str) -> str | None:
    """The key id of a well-formed key, or None for anything malformed or mistyped."""
    if not key.startswith(PREFIX) or len(key) != len(PREFIX) + _ID_LEN + 1 + _SECRET_LEN \
            + _CHECK_LEN:
        return None
    body, check = key[:-_CHECK_LEN], key[-_CHECK_LEN:]
    if not hmac.compare_digest(_checksum(body), check):
        return None
    key_id = body[len(PREFIX):len(PREFIX) + _ID_LEN]
    if body[len(PREFIX) + _ID_LEN] != "_":
        return None
    return key_id


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(key), stored_digest)

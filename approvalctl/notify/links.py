"""Decision links: signed URLs in a message that open an Approve or Reject page on `serve`.

A link is `{public_url}/d/{token}`. The token is `v1.PAYLOAD.MAC`:

    PAYLOAD  base64url (no padding) of compact JSON {"r": request id, "d": its digest,
             "a": "approve" | "reject", "c": the recipient identity, "x": the request's
             expires_at, "k": the signing key's id}
    MAC      base64url of HMAC-SHA256(key, "approvalctl-link.v1." + PAYLOAD)  (RFC 2104)

The key is a random 32-byte secret kept in the database (`server_secrets`, name
`link_key`), made on first use and replaced by `approvalctl links rotate-secret` (every link
sent before then stops working). Only the server and the notification worker read it.

What makes a link safe to put in a chat message:
- it names one request, its digest and one action: it cannot decide anything else;
- it expires with the request (the page refuses it after `expires_at`, and the decision
  itself is refused by the service once the request is no longer pending);
- it is single-use because a decision moves the request out of `pending` (one compare-and-set
  decides; a second use, or the other action's link, or the CLI, finds it decided);
- the decision is recorded as made by the recipient identity (`decided_by`), so the audit
  trail says which channel's link decided, and the self-approval rule applies to it.

Recipient identities: `slack` (the configured Slack webhook), `email:ADDR[,ADDR…]` (the
configured recipients), `ntfy:TOPIC`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import Forbidden, InvalidInput

KEY_NAME = "link_key"
PREFIX = "v1"
ACTIONS = ("approve", "reject")
#: A token longer than this is refused before any decoding (a client controls it).
MAX_TOKEN = 2048
MAX_IDENTITY = 200


def new_key() -> str:
    """A fresh signing key: 32 random bytes, hex."""
    return secrets.token_hex(32)


def key_id(key: str) -> str:
    """A short public name of `key`, carried in tokens so a rotated key is named as such."""
    return hashlib.sha256(("approvalctl-link-key-id." + key).encode()).hexdigest()[:8]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode(), f"approvalctl-link.{PREFIX}.{payload}".encode(),
                         hashlib.sha256).digest())


@dataclass(frozen=True)
class Link:
    """What a verified token says."""

    request_id: str
    digest: str
    action: str
    recipient: str
    expires_at: str


def make_token(key: str, request_id: str, digest: str, action: str, recipient: str,
               expires_at: str) -> str:
    """A signed token for `action` on one request by `recipient` (see the module doc)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown link action {action!r}")
    body = json.dumps({"r": request_id, "d": digest, "a": action, "c": recipient,
                       "x": expires_at, "k": key_id(key)}, separators=(",", ":"),
                      sort_keys=True)
    payload = _b64(body.encode())
    return f"{PREFIX}.{payload}.{_mac(key, payload)}"


def read_token(key: str, token: str) -> Link:
    """The claims of a token signed with `key`.

    Raises InvalidInput for a token that is not one at all (wrong shape, too long) and
    Forbidden for one whose signature does not match (tampered, or signed with a key that
    has since been rotated). Expiry and the request's state are the caller's to check.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise InvalidInput("this is not a decision link")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise InvalidInput("this is not a decision link")
    if not hmac.compare_digest(_mac(key, parts[1]).encode(), parts[2].encode()):
        try:
            claims = json.loads(_unb64(parts[1]))
            rotated = isinstance(claims, dict) and claims.get("k") != key_id(key)
        except (ValueError, binascii.Error):
            rotated = False
        raise Forbidden("this link was signed with a key that has since been rotated"
                        if rotated else "this link's signature does not match (altered?)")
    claims = json.loads(_unb64(parts[1]))  # signed by us: well-formed
    return Link(request_id=str(claims["r"]), digest=str(claims["d"]), action=claims["a"],
                recipient=str(claims["c"]), expires_at=str(claims["x"]))


def form_check(key: str, token: str) -> str:
    """The page's own field for the form that POSTs `token`: only the server can make it,
    so a POST needs the page the server rendered, not just a URL."""
    return _b64(hmac.new(key.encode(), f"approvalctl-link-form.{token}".encode(),
                         hashlib.sha256).digest())


def recipient_of(channel: str, target: Any) -> str | None:
    """The identity a channel's links decide as (None: the channel carries no links)."""
    kind = channel.split(":", 1)[0]
    if kind == "slack":
        return "slack"
    if kind == "email":
        return ("email:" + ",".join(target.to))[:MAX_IDENTITY]
    if kind == "ntfy":
        return f"ntfy:{target.topic}"[:MAX_IDENTITY]
    return None


def url_for(public_url: str, token: str) -> str:
    return public_url.rstrip("/") + "/d/" + token


def links_for(public_url: str, key: str, request: dict[str, Any], recipient: str
              ) -> dict[str, str] | None:
    """`{"approve": URL, "reject": URL}` for a pending request with a digest, else None."""
    if request.get("status") != "pending" or not request.get("digest") \
            or not request.get("expires_at") or not request.get("id"):
        return None
    return {action: url_for(public_url, make_token(
        key, str(request["id"]), str(request["digest"]), action, recipient,
        str(request["expires_at"]))) for action in ACTIONS}

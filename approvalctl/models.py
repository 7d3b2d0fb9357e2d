"""The approval request, its states and the legal moves between them.

Field names here are the contract: they are the database columns, the JSON keys of
`--json` output and the HTTP bodies alike (see docs/design.md section 3).
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"

STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED)
FINAL_STATUSES = frozenset({APPROVED, REJECTED, EXPIRED, CANCELLED})
RISKS = ("low", "medium", "high")

#: Every legal transition. Nothing leaves a final state.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, REJECTED, EXPIRED, CANCELLED}),
    APPROVED: frozenset(),
    REJECTED: frozenset(),
    EXPIRED: frozenset(),
    CANCELLED: frozenset(),
}

#: Outcomes a human decided, which count towards response time.
DECIDED_BY_HUMAN = frozenset({APPROVED, REJECTED})


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


# ---------------------------------------------------------------- time


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_iso(moment: datetime) -> str:
    """Fixed-width UTC text (`2026-11-26T11:22:02.123Z`), so text order is time order."""
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"  # cheaper than strftime


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------- ids
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_id_lock = threading.Lock()
_last = {"ms": 0, "seq": 0}


# Ids need to be unique, not secret: a generator seeded from the OS (and re-seeded in a
# forked child) instead of os.urandom, whose system call releases the GIL; in the server
# that hands the interpreter to the event loop in the middle of every database job. A
# private one, so that random.seed() anywhere else in the process cannot repeat ids.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
_bits = _rng.getrandbits


def new_id(now: datetime | None = None) -> str:
    """A 26-character ULID-style id in lower-case Crockford base32, sorted by creation time.

    48 bits of milliseconds, a 10-bit sequence that starts at a random point each
    millisecond and counts up within it (so ids from one process are strictly increasing),
    then 70 random bits. Ids made in the same millisecond differ by the 12th character, so
    short prefixes stay unique enough to type.
    """
    ms = int((now or utcnow()).timestamp() * 1000)
    with _id_lock:
        if ms <= _last["ms"]:
            ms, seq = _last["ms"], _last["seq"] + 1
            if seq > 1023:  # more than ~500 ids in one millisecond: borrow the next one
                ms, seq = ms + 1, _bits(9)
        else:
            seq = _bits(9)
        _last["ms"], _last["seq"] = ms, seq
    value = (ms << 80) | (seq << 70) | _bits(70)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def normalise_id(text: str) -> str:
    """Ids are typed by people: accept upper case and the Crockford look-alikes."""
    return text.strip().lower().replace("i", "1").replace("l", "1").replace("o", "0")


def id_prefix(id_or_prefix: Any) -> str:
    """A request id or id prefix as typed, normalised (`normalise_id`): the one check of
    what may name a request, for the service and the client alike. InvalidInput if it is
    empty, longer than an id (26) or not only letters and digits."""
    from .errors import InvalidInput

    prefix = normalise_id(str(id_or_prefix))
    if not prefix or len(prefix) > 26 or not prefix.isalnum():
        raise InvalidInput(f"invalid request id {id_or_prefix!r}")
    return prefix


# ---------------------------------------------------------------- the request
@dataclass
class ApprovalRequest:
    id: str
    tool_name: str
    arguments: dict[str, Any]
    reason: str | None
    risk: str
    user_id: str
    status: str
    created_at: str
    expires_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    decision_note: str | None = None
    #: "sha256:<hex>" over the RFC 8785 canonical {tool_name, arguments} (digest.py);
    #: None only for a legacy row whose arguments JCS cannot represent.
    digest: str | None = None
    #: When an approval must have been consumed by (decided_at + use_within); approved only.
    use_by: str | None = None
    #: When the approval was used (POST .../consume); at most once.
    consumed_at: str | None = None

    FIELDS = (
        "id", "tool_name", "arguments", "reason", "risk", "user_id", "status",
        "created_at", "expires_at", "decided_at", "decided_by", "decision_note",
        "digest", "use_by", "consumed_at",
    )

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy was a large share of the API's cost
        # per request. `arguments` is plain JSON data, so a shallow copy of it is enough. The
        # instance dict holds exactly the fields, in FIELDS order (the dataclass __init__
        # sets them so), and copying it is cheaper than a getattr per field.
        data = self.__dict__.copy()
        if len(data) != len(self.FIELDS):  # an extra attribute was hung on it: fields only
            data = {name: getattr(self, name) for name in self.FIELDS}
        data["arguments"] = dict(self.arguments) if isinstance(self.arguments, dict) \
            else self.arguments
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovalRequest:
        values: dict[str, Any] = {k: data.get(k) for k in cls.FIELDS}
        return cls(**values)


@dataclass
class Page:
    """One page of a listing; `next_cursor` is None on the last page."""

    items: list[ApprovalRequest]
    next_cursor: str | None = None


@dataclass
class Principal:
    """Who is acting: an API key's owner, or the local operator at the terminal."""

    name: str
    role: str
    local: bool = False


@dataclass
class Change:
    """Everything one state change writes, applied by a store in a single transaction.

    The service decides what goes in here; a store only makes it durable atomically.
    """

    request_id: str
    actor: str
    action: str  # create | approve | reject | cancel | expire | prune
    from_status: str | None
    to_status: str
    at: str
    detail: dict[str, Any] = field(default_factory=dict)
    counters: list[tuple[str, str, float]] = field(default_factory=list)
    outbox: list[tuple[str, str]] = field(default_factory=list)  # (channel, event) rows
    # Set by the store from the row the change leaves (audit row format 2): the request's
    # digest and the hash of its whole row (audit.state_hash).
    digest: str | None = None
    state: str | None = None


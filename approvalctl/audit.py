"""The hash chain that makes the audit trail tamper-evident, and the checks built on it.

Each row's hash covers its own fields and the previous row's hash, so editing, deleting or
reordering any row behind the tool's back breaks the chain at that row. The triggers in the
schema refuse UPDATE and DELETE; the chain catches whoever drops the triggers first.

Row formats (the `format` column): format 1 rows (written before migration 0008) hash
`HASHED_FIELDS_V1`; format 2 rows also hash the request's `digest` and `state`, a hash of
the request row exactly as the change left it (`STATE_FIELDS`). `cross_check` compares every
request row with its last audit row, so editing a request (its status, arguments, decider…)
is caught too. What the chain cannot catch — the newest rows deleted, or the whole chain
recomputed — anchors do: a `(seq, hash)` kept outside the database (`check_anchor`).

Pure: no I/O; the store feeds rows in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS_V1 = ("seq", "at", "actor", "action", "request_id", "from_status", "to_status",
                    "detail")
HASHED_FIELDS = HASHED_FIELDS_V1 + ("format", "digest", "state")
#: The row format written now.
FORMAT = 2
#: The request fields `state` covers, in this order. Fixed here, not taken from the model,
#: so that columns added later do not change the hash of rows already written.
STATE_FIELDS = ("id", "tool_name", "arguments", "reason", "risk", "user_id", "status",
                "created_at", "expires_at", "decided_at", "decided_by", "decision_note",
                "digest", "use_by", "consumed_at")
#: The action of the audit row that records a request removed by `prune`.
PRUNE = "prune"
#: Actions whose actor is the request's `decided_by`.
DECIDING_ACTIONS = frozenset({"approve", "reject", "cancel"})
MAX_ANCHORS = 100
_ANCHOR = re.compile(r"(\d{1,18}):([0-9a-f]{64})")

# One encoder, built once: json.dumps with options builds a new encoder on every call, which
# dominated verifying millions of rows. The output is byte-for-byte the same.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash of one audit row after `prev_hash` (hex SHA-256 over a JSON array)."""
    fields = HASHED_FIELDS if row.get("format", 1) == FORMAT else HASHED_FIELDS_V1
    body = _encode([prev_hash, *(row[f] for f in fields)])
    return hashlib.sha256(body.encode()).hexdigest()


def state_hash(values: Sequence[Any]) -> str:
    """Hex SHA-256 of a request row: `values` in STATE_FIELDS order, `arguments` as the
    stored JSON text."""
    return hashlib.sha256(_encode(list(values)).encode()).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    bad_seq: int | None = None
    problem: str | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_bad_seq": self.bad_seq,
                "problem": self.problem, "request_id": self.request_id}


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> VerifyResult:
    """Walk the rows in `seq` order and name the first one that breaks the chain."""
    prev_hash, prev_seq, count, newest_format = GENESIS, 0, 0, 1
    for row in rows:
        count += 1
        seq = row["seq"]
        if seq <= prev_seq:
            return VerifyResult(False, count, seq, f"row {seq} is out of order after {prev_seq}")
        if row["prev_hash"] != prev_hash:
            what = "a row before it was deleted or changed" if seq != prev_seq + 1 or \
                count > 1 else "the chain does not start at the first row"
            if seq != prev_seq + 1:
                what = f"rows {prev_seq + 1}..{seq - 1} are missing"
            return VerifyResult(False, count, seq, f"row {seq} does not follow its predecessor: "
                                                   f"{what}")
        fmt = row.get("format", 1)
        if fmt not in (1, FORMAT) or fmt < newest_format:
            # an older format after a newer one: someone rewrote rows to escape the checks
            return VerifyResult(False, count, seq, f"row {seq} has row format {fmt} after "
                                                   f"format {newest_format} rows")
        newest_format = fmt
        if row_hash(prev_hash, row) != row["hash"]:
            return VerifyResult(False, count, seq, f"row {seq} ({row['action']} of request "
                                f"{row['request_id']}) was modified after it was written",
                                row["request_id"])
        prev_hash, prev_seq = row["hash"], seq
    return VerifyResult(True, count)


# ---------------------------------------------------------------- anchors
def parse_anchor(text: str) -> tuple[int, str]:
    """`SEQ:HASH` (as `audit anchor` prints it) -> (seq, hash). ValueError if malformed."""
    m = _ANCHOR.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"invalid anchor {text!r}: expected SEQ:HASH, e.g. 42:<64 hex digits>")
    return int(m.group(1)), m.group(2)


def check_anchor(seq: int, expected: str, found: str | None, head_seq: int) -> str | None:
    """Why the chain no longer holds row `seq` with hash `expected` (None if it does);
    `found` is the hash stored at `seq` now (None: no such row), `head_seq` the newest."""
    if seq == 0:
        return None if expected == GENESIS else "anchor 0 must have the genesis hash"
    if found is None:
        return (f"anchored row {seq} is gone (the chain ends at row {head_seq}): the newest "
                "rows were deleted")
    if found != expected:
        return (f"anchored row {seq} no longer has hash {expected[:12]}… (now {found[:12]}…): "
                "the chain was rewritten")
    return None


# ---------------------------------------------------------------- requests vs audit rows
def last_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The last row of each request from audit rows ordered by (request_id, seq), with
    `history` set to what is wrong with that request's history (None: nothing).

    A history starts with the creation, and each row starts from the status the row before
    left: a row appended at the end of the chain with a recomputed hash cannot turn a
    rejection into an approval, because no legal move leaves a final status.
    """
    last: dict[str, Any] | None = None
    for row in rows:
        if last is not None and row["request_id"] == last["request_id"]:
            if last["history"] is None:
                last = {**row, "history": _step(last, row)}
            else:
                last = {**row, "history": last["history"]}
            continue
        if last is not None:
            yield last
        first = None if row["action"] == "create" and row["from_status"] is None else (
            f"the history of request {row['request_id']} starts with audit row {row['seq']} "
            f"({row['action']}), not with its creation")
        last = {**row, "history": first}
    if last is not None:
        yield last


def _step(prev: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    from .models import FINAL_STATUSES, can_transition

    rid, seq = row["request_id"], row["seq"]
    if row["from_status"] != prev["to_status"]:
        return (f"audit row {seq} ({row['action']}) moves request {rid} from "
                f"{row['from_status']!r}, but row {prev['seq']} left it {prev['to_status']!r}")
    if row["action"] == PRUNE:
        ok = row["from_status"] in FINAL_STATUSES
    else:  # a row that changes nothing (e.g. a use of an approval) keeps the status
        ok = row["from_status"] == row["to_status"] or \
            can_transition(row["from_status"], row["to_status"])
    if not ok or prev["action"] == PRUNE:
        return (f"audit row {seq} ({row['action']}) moves request {rid} from "
                f"{row['from_status']!r} to {row['to_status']!r}, which no change can do")
    return None


@dataclass
class Finding:
    request_id: str
    problem: str
    seq: int | None = None


def cross_check(requests: Iterable[Mapping[str, Any]],
                last: Iterable[Mapping[str, Any]]) -> Finding | None:
    """The first request that disagrees with its last audit row.

    `requests` (dicts with at least STATE_FIELDS, `arguments` as stored text) and `last`
    (each request's last audit row) are both ordered by request id, and are merged: memory
    stays flat whatever the number of rows. A request without audit rows, and audit rows of a
    request that is gone (unless its last row records a prune), are findings.
    """
    reqs, audits = iter(requests), iter(last)
    r, a = next(reqs, None), next(audits, None)
    while r is not None or a is not None:
        if a is not None and a.get("history") and (r is None or a["request_id"] <= r["id"]):
            return Finding(a["request_id"], a["history"], a["seq"])
        if a is None or (r is not None and r["id"] < a["request_id"]):
            return Finding(r["id"], f"request {r['id']} has no audit rows: it was inserted "  # type: ignore[index]
                           "behind the tool's back")
        if r is None or a["request_id"] < r["id"]:
            if a["action"] != PRUNE:
                return Finding(a["request_id"], f"request {a['request_id']} is missing but "
                               f"audit row {a['seq']} says it is {a['to_status']}: it was "
                               "deleted behind the tool's back", a["seq"])
            a = next(audits, None)
            continue
        problem = compare(r, a)
        if problem:
            return Finding(r["id"], f"request {r['id']}: {problem}", a["seq"])
        r, a = next(reqs, None), next(audits, None)
    return None


def compare(req: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """What in request row `req` differs from `row`, its last audit row (None: nothing)."""
    seq = row["seq"]
    if row["action"] == PRUNE:
        return f"audit row {seq} records it as pruned, yet the row exists"
    if req["status"] != row["to_status"]:
        return (f"status is {req['status']!r} but audit row {seq} ({row['action']}) left it "
                f"{row['to_status']!r}")
    if row.get("format", 1) == FORMAT:
        if req.get("digest") is not None and req["digest"] != row["digest"]:
            # the stored digest is what a consumer must present: it may not drift either
            return (f"its stored digest {str(req['digest'])[:19]}… differs from audit row "
                    f"{seq}'s {str(row['digest'])[:19]}…")
        if state_hash([req[f] for f in STATE_FIELDS]) == row["state"]:
            return None
        from .digest import DigestError, digest

        try:
            now = digest(req["tool_name"], json.loads(req["arguments"]))
        except (ValueError, DigestError):
            now = "unreadable"
        if now != row["digest"]:
            return (f"tool_name/arguments changed since audit row {seq} (digest "
                    f"{str(row['digest'])[:19]}… then, {now[:19]}… now)")
    detail = row["detail"]
    if isinstance(detail, str):
        detail = json.loads(detail)
    if row["action"] in DECIDING_ACTIONS:
        if req["decided_by"] != row["actor"]:
            return (f"decided_by is {req['decided_by']!r} but audit row {seq} was written by "
                    f"{row['actor']!r}")
        if req["decided_at"] != row["at"]:
            return f"decided_at is {req['decided_at']} but audit row {seq} says {row['at']}"
        if req["decision_note"] != detail.get("note"):
            return f"decision_note differs from audit row {seq}"
    if row.get("format", 1) == FORMAT:
        return (f"the row differs from its state recorded in audit row {seq} (reason, risk, "
                "user_id, times or decision fields were edited)")
    return None

"""The durable metric counters: their names, labels and buckets, and what each change adds.

Counters live in the database and are bumped in the same transaction as the change that
causes them, so every process agrees on them and a restart loses nothing. The Prometheus
side (`approvalctl.metrics`) only reads them. Checks that write nothing else (RBAC checks on
reads) are buffered in memory in a `CounterBuffer`: the store owns one for the process (its
`tally`, written with the next change or by `flush_counters`), and each unit of work of the
server's write path has its own (written with its commit, dropped with its rollback).
"""

from __future__ import annotations

import threading

from .models import DECIDED_BY_HUMAN, EXPIRED

REQUESTS_TOTAL = "approval_requests_total"
RESPONSE_TIME = "approval_response_time_seconds"
TIMEOUT_TOTAL = "approval_timeout_total"
CONSUMED = "approval_consumed_total"
RBAC_CHECKS = "rbac_permission_checks_total"
ROLE_ASSIGNMENTS = "rbac_role_assignments_total"
NOTIFY_DELIVERIES = "notification_deliveries_total"
#: Requests a policy rule decided without a person, by action and rule name (rule names
#: are operator-chosen and bounded in number, so the label set stays small).
POLICY_DECISIONS = "approval_policy_decisions_total"

RESPONSE_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600)

Counter = tuple[str, str, float]  # (name, labels as 'k=v,k2=v2', delta)


def labels(**kv: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(kv.items()))


def for_status(status: str) -> list[Counter]:
    """A request entered `status`."""
    out: list[Counter] = [(REQUESTS_TOTAL, _status_label(status), 1)]
    if status == EXPIRED:
        out.append((TIMEOUT_TOTAL, "", 1))
    return out


def for_decision(status: str, response_seconds: float) -> list[Counter]:
    """A request was decided `response_seconds` after it was created."""
    out = for_status(status)
    if status in DECIDED_BY_HUMAN:
        out.extend(row for bound, row in _BUCKET_ROWS if response_seconds <= bound)
        out.append(_INF_ROW)
        out.append((RESPONSE_TIME + "_sum", "", response_seconds))
        out.append(_COUNT_ROW)
    return out


# Every change adds these rows: their label strings are built once, not per change.
_BUCKET_ROWS: tuple[tuple[int, Counter], ...] = tuple(
    (bound, (RESPONSE_TIME + "_bucket", labels(le=str(bound)), 1)) for bound in RESPONSE_BUCKETS)
_INF_ROW: Counter = (RESPONSE_TIME + "_bucket", labels(le="+Inf"), 1)
_COUNT_ROW: Counter = (RESPONSE_TIME + "_count", "", 1)
_STATUS_LABELS: dict[str, str] = {}


def _status_label(status: str) -> str:
    label = _STATUS_LABELS.get(status)
    if label is None:  # statuses are the model's few names: the cache stays that small
        label = _STATUS_LABELS.setdefault(status, labels(status=status))
    return label


def merge(counters: list[Counter]) -> list[Counter]:
    """Add up deltas to the same series, so a batch writes each row once."""
    totals: dict[tuple[str, str], float] = {}
    for name, lab, delta in counters:
        totals[(name, lab)] = totals.get((name, lab), 0) + delta
    return [(n, lab, d) for (n, lab), d in totals.items()]


class CounterBuffer:
    """Counter deltas not yet written, for events that write nothing else (RBAC checks).

    Thread-safe: the process's buffer (`store.tally`) is added to from the event loop and
    the database thread alike. Nothing module-global: each store and each unit of work
    owns its own.
    """

    __slots__ = ("_lock", "_deltas")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deltas: list[Counter] = []

    def add(self, name: str, lab: str, delta: float = 1) -> None:
        """Buffer one delta of the series (name, labels)."""
        with self._lock:
            self._deltas.append((name, lab, delta))

    def take(self) -> list[Counter]:
        """Everything buffered, merged per series; the buffer is left empty."""
        with self._lock:
            deltas, self._deltas = self._deltas, []
        return merge(deltas)

    def put_back(self, deltas: list[Counter]) -> None:
        """Deltas taken for a write that did not happen (they are written later)."""
        with self._lock:
            self._deltas.extend(deltas)


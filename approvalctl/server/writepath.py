"""The server's write path: every change the HTTP API makes to a request (create, decide,
require, cancel, consume, a decision link), to an API key or to the policy rules, as a
job in a unit of work on one database thread, with group commit. Its invariants, all in
one place (each is tested in tests/test_writepath.py, on SQLite and PostgreSQL):

1. One thread. Every blocking service call of the process runs on the database thread, in
   the order queued (`DatabaseThread`). SQLite allows one writer at a time, and with a pool
   of threads its busy handler sleeps in steps that add up to a long tail; on PostgreSQL one
   thread with group commit did more than several threads (docs/benchmarks.md, "Figures
   behind the code"). Reads never enter a unit of work: they are submitted without
   `write=True`, run alone, and write nothing of their own. The API-key and policy-rule
   changes are jobs like the request changes; the sweep (a batch of expiries and
   reminders) runs alone on this thread, and `prune` and `audit verify` on a thread apart.

2. One job shape. A change is a job: a callable given the `UnitOfWork` (store/unit.py) it
   runs in, which makes its reads and writes through `uow.store`. The HTTP API's job is
   `WriteJob`: it looks the caller's API key up *inside* the unit of work, so in the same
   transaction that makes the change, and a key revoked, expired or unknown before that
   transaction began is refused (401). The principal is read once per unit (`uow.memo`):
   every call in a group was queued before the group's transaction began.

3. One order of errors. A `WriteJob` answers, in this order: the key's own problem (401),
   then the per-key rate limit and quotas (429), then the request's own problem (a 4xx
   found while reading the request, carried in as `refusal`, or raised by the service).
   A missing or malformed key is refused before any job (401 too), since it needs no
   database.

4. Group commit. Write jobs queued together (up to MAX_GROUP) run in one unit of work and
   share its commit: a change's cost is mostly its COMMIT (the request, its indexes, audit
   row, counters and outbox pages written to the WAL and flushed). A job queued alone runs
   in a unit of its own.

5. Nobody is answered before the commit. Results are handed back only once the unit of
   work committed; a failed commit fails every call in it (503), and nothing of it stays.

6. A spoiled group runs again, call by call. Calls in a group run without savepoints. A
   call that fails part-way through its writes (or a read failing, which may have aborted
   the transaction) spoils the unit: it is rolled back whole and every call in it runs
   again alone, in a unit of its own, and each caller gets the answer of that second run.
   So a call may run twice, and must be safe to re-run. What makes it safe: nothing of the
   first run survives the rollback (request rows, audit rows, counters, outbox rows,
   idempotency keys are all in the transaction); the service's changes are
   compare-and-sets that read the state afresh; and what lives outside the database is
   done once per job, not per run (below). A call run alone that loses a race on a unique
   key (PostgreSQL: another process's insert of the same idempotency key committed first)
   is run once more, and then finds the winner's row.

7. Counted once. The rate limit and quotas (`create_rate`) are checked once per job, on
   its first run; a refusal is remembered, so a re-run refuses again without counting
   again (`WriteJob.admitted`). The RBAC-check counters of the calls in a unit go to the
   unit's own buffer (`uow.tally`): written with its commit, dropped with its rollback, so
   a spoiled group's are dropped and its re-runs count each check once. Counters the
   process buffered outside any unit (RBAC checks on reads, `store.tally`) are written by
   the next commit, and put back if that commit fails.

8. Change notification follows the commit. `on_commit` runs on this thread after every
   unit of work (wakeups.py reads what changed), never before.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from ..errors import ApprovalctlError, GroupSpoiled, Unavailable, UniqueViolation
from ..store.unit import UnitOfWork

log = logging.getLogger("approvalctl.server")

MAX_GROUP = 64

#: (the call — with write=True a job taking the UnitOfWork — its future — a
#: concurrent.futures.Future, or an asyncio.Future from submit_async — and whether it is a
#: write that may share a commit)
_Item = tuple[Callable[..., Any], Any, bool]
_Outcome = tuple[Any, bool, Any]  # (future, succeeded, result or exception)
_SERVICE = object()  # uow.memo key of the service bound to the unit


def service_in(uow: UnitOfWork, service: Any) -> Any:
    """`service` (an ApprovalService) working through `uow.store`: a shallow copy made
    once per unit of work, so the service's calls read and write in the unit."""
    bound = uow.memo.get(_SERVICE)
    if bound is None:
        bound = copy.copy(service)
        bound.store = uow.store
        uow.memo[_SERVICE] = bound
    return bound


class WriteJob:
    """One change on behalf of an API key, as the database thread runs it (invariants 2, 3
    and 7 of the module docstring).

    `func` is an ApprovalService function taking (service, principal, *args, **kwargs) —
    e.g. `ApprovalService.decide`; with `secret` None (decision links, which carry their
    own proof) it is called without a principal. `refusal` is the request's own problem
    found before the job was queued: raised after the key and the limits were checked.
    `admit(principal)` checks the rate limit and quotas (raises QuotaExceeded); it runs
    once per job however many times the job runs.
    """

    __slots__ = ("service", "secret", "func", "args", "kwargs", "refusal", "admit",
                 "admitted")

    def __init__(self, service: Any, secret: str | None,
                 func: Callable[..., Any] | None = None, args: tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, *,
                 refusal: ApprovalctlError | None = None,
                 admit: Callable[[Any], None] | None = None) -> None:
        if func is None and refusal is None:
            raise ValueError("a WriteJob needs a service call or a refusal")
        self.service = service
        self.secret = secret
        self.func = func
        self.args = args
        self.kwargs = kwargs or {}
        self.refusal = refusal
        self.admit = admit
        self.admitted = False

    def __call__(self, uow: UnitOfWork) -> Any:
        service = service_in(uow, self.service)
        principal = None
        if self.secret is not None:
            principal = uow.memo.get(self.secret)
            if principal is None:
                principal = service.principal_of(self.secret)  # 401
                uow.memo[self.secret] = principal
            if not self.admitted:
                self.admitted = True
                if self.admit is not None:
                    try:
                        self.admit(principal)  # 429
                    except ApprovalctlError as exc:
                        self.refusal = exc  # a re-run refuses again, uncounted
                        raise
        if self.refusal is not None:
            raise self.refusal
        assert self.func is not None
        if self.secret is None:
            return self.func(service, *self.args, **self.kwargs)
        return self.func(service, principal, *self.args, **self.kwargs)


class DatabaseThread:
    """Runs submitted callables on one thread (invariant 1).

    `submit(func)`: `func()` alone, outside any unit of work (reads, admin calls).
    `submit(job, write=True)`: `job(uow)` in a unit of work, shared with the write jobs
    queued with it (invariants 4-8). Results (or exceptions) arrive in the futures.
    """

    def __init__(self, store: Any, *, max_group: int = MAX_GROUP) -> None:
        self.store = store
        self.max_group = max_group
        self._closed = False
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Called (on this thread) after every change job or group commit that ran, once
        #: its COMMIT is done: change notification (wakeups.py) reads what changed.
        self.on_commit: Callable[[], None] | None = None

    def submit(self, func: Callable[..., Any], *, write: bool = False) -> Future[Any]:
        """Queue `func` (with `write`, a job taking the UnitOfWork); its result arrives in
        the returned concurrent future."""
        future: Future[Any] = Future()
        self._put((func, future, write))
        return future

    def submit_async(self, func: Callable[..., Any], *, write: bool = False
                     ) -> asyncio.Future[Any]:
        """Like submit(), from the event loop: results of a whole group come back to the
        loop in one callback, not one thread-safe wake-up per call."""
        future = asyncio.get_running_loop().create_future()
        self._put((func, future, write))
        return future

    def _put(self, item: _Item) -> None:
        if self._closed:
            raise Unavailable("the server is shutting down")
        if self._thread is None:  # started on first use: an app never served starts none
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="approvalctl-db",
                                                    daemon=True)
                    self._thread.start()
        self._queue.put(item)

    def shutdown(self) -> None:
        """Finish what is queued, stop the thread; later calls fail with Unavailable."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
        late: list[_Outcome | None] = []
        while True:  # queued in the instant before _closed was set: answer, never strand
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and _claim(item[1]):
                late.append((item[1], False, Unavailable("the server is shutting down")))
        _deliver(late)

    # ---- the thread
    def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is None:
                return
            func, future, write = item
            if not write:
                _deliver([_run(func, future)])
                continue
            batch, stop = [item], False
            while len(batch) < self.max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or not nxt[2]:  # a read or the stop signal: after this group
                    carry, stop = nxt, nxt is None
                    break
                batch.append(nxt)
            self._run_group(batch)
            if self.on_commit is not None:
                self.on_commit()
            if stop:
                return

    def _run_group(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if _claim(item[1])]
        if len(batch) <= 1:
            _deliver([self._run_alone(job, future) for job, future, _ in batch])
            return
        outcomes: list[_Outcome] = []
        try:
            with self.store.unit_of_work() as uow:
                for job, future, _ in batch:
                    outcomes.append(_call(job, uow, future))
                    if uow.spoiled:  # a change failed half-way: all is rolled back
                        break
        except GroupSpoiled:  # invariant 6: each again, in a unit of its own
            outcomes = [self._run_alone(job, future) for job, future, _ in batch]
        except BaseException as exc:  # invariant 5: the commit failed, nothing happened
            error = _commit_failed(exc, len(batch))
            outcomes = [(future, False, error) for _, future, _ in batch]
        _deliver(outcomes)

    def _run_alone(self, job: Callable[[UnitOfWork], Any], future: Any) -> _Outcome:
        """`job` in a unit of work of its own; a spoiled one is rolled back and the job's
        own error is its answer. One that lost a race on a unique key runs once more."""
        for attempt in (1, 2):
            outcome: _Outcome | None = None
            try:
                with self.store.unit_of_work() as uow:
                    outcome = _call(job, uow, future)
            except GroupSpoiled:
                assert outcome is not None
                if outcome[1]:  # it swallowed the failure: its work is rolled back anyway
                    outcome = (future, False, Unavailable("the change failed and was rolled "
                                                          "back; try again"))
            except BaseException as exc:
                outcome = (future, False, _commit_failed(exc, 1))
            if attempt == 1 and not outcome[1] and isinstance(outcome[2], UniqueViolation):
                continue
            return outcome
        raise AssertionError("unreachable")  # pragma: no cover


def _commit_failed(exc: BaseException, calls: int) -> Unavailable:
    """What every call of a unit of work whose commit failed is answered (503)."""
    if isinstance(exc, Unavailable):
        return exc
    log.exception("commit of %d changes failed", calls)
    return Unavailable(f"database commit failed: {exc}")


def _claim(future: Any) -> bool:
    """False if the caller gave up before the call started (it is then not run)."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.cancelled()


def _run(func: Callable[[], Any], future: Any) -> _Outcome | None:
    if not _claim(future):
        return None
    return _call(func, None, future)


def _call(func: Callable[..., Any], uow: UnitOfWork | None, future: Any) -> _Outcome:
    try:
        return (future, True, func() if uow is None else func(uow))
    except BaseException as exc:
        return (future, False, exc)


def _deliver(outcomes: Sequence[_Outcome | None]) -> None:
    """Hand results back: concurrent futures directly, asyncio futures in one callback per
    event loop (each call_soon_threadsafe wakes the loop up)."""
    by_loop: dict[Any, list[_Outcome]] = {}
    for outcome in outcomes:
        if outcome is None:
            continue
        future, ok, value = outcome
        if isinstance(future, Future):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        else:
            by_loop.setdefault(future.get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, ok, value in outcomes:
        if future.cancelled():
            continue
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        except (TypeError, RuntimeError) as exc:  # e.g. StopIteration cannot be set
            future.set_exception(RuntimeError(f"{value!r} ({exc})"))

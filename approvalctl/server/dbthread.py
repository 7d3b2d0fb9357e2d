"""The server's database thread: all blocking service calls of one process, in order, with
group commit for writes that queue up together.

Why one thread: SQLite allows one writer at a time; with a pool of threads, writers in the
same process contend for the lock, and SQLite's busy handler sleeps in steps that add up to
a long tail of response times (tests/load/bench_api.py). Why group commit: a change's cost
is mostly its COMMIT (request, its five indexes, audit row, counters and outbox pages
written to the WAL), so writes waiting at the same moment run in one transaction and share
that commit; if one fails half-way, the transaction is rolled back and each runs alone.
Nobody is answered before the commit: results are handed back only once it succeeded, and
a failed commit fails every call in it.

PostgreSQL changes go through the same single thread: with several writer threads most of
the server's CPU went to threads handing the GIL around, and each change paid its own audit
lock, chain read and WAL flush; one thread with group commit did more than twice the
creates per second, and two, three or four threads were each worse than one
(tests/load/bench_pg.py; figures in docs/benchmarks.md, "Figures behind the code").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from ..errors import GroupSpoiled, Unavailable

log = logging.getLogger("approvalctl.server")

MAX_GROUP = 64

#: (the call, its future — a concurrent.futures.Future, or an asyncio.Future from
#: submit_async — and whether it is a write that may share a commit)
_Item = tuple[Callable[[], Any], Any, bool]
_Outcome = tuple[Any, bool, Any]  # (future, succeeded, result or exception)


class DatabaseThread:
    """Runs submitted callables on one thread; `write=True` ones may share a transaction."""

    def __init__(self, store: Any, *, max_group: int = MAX_GROUP) -> None:
        self.store = store
        self.max_group = max_group
        self._closed = False
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._local = threading.local()
        #: Called (on this thread) after every change job or group commit that ran, once
        #: its COMMIT is done: change notification (wakeups.py) reads what changed.
        self.on_commit: Callable[[], None] | None = None

    def submit(self, func: Callable[[], Any], *, write: bool = False) -> Future[Any]:
        """Queue `func`; its result arrives in the returned concurrent future."""
        future: Future[Any] = Future()
        self._put((func, future, write))
        return future

    def submit_async(self, func: Callable[[], Any], *, write: bool = False
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
            if len(batch) == 1:
                _deliver([_run(func, future)])
            else:
                self._run_group(batch)
            if self.on_commit is not None:
                self.on_commit()
            if stop:
                return

    def _run_group(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if _claim(item[1])]
        if not batch:
            return
        outcomes: list[_Outcome] = []
        self._local.memo = {}
        try:
            with self.store.group_commit() as group:
                for func, future, _ in batch:
                    outcomes.append(_call(func, future))
                    if group.spoiled:  # a change failed half-way: all is rolled back
                        break
        except GroupSpoiled:  # run each alone, in its own transaction
            self._local.memo = None
            outcomes = [_call(func, future) for func, future, _ in batch]
        except BaseException as exc:  # the commit itself failed: nothing in it happened
            if not isinstance(exc, Unavailable):
                log.exception("group commit of %d changes failed", len(batch))
            error = exc if isinstance(exc, Unavailable) else Unavailable(
                f"database commit failed: {exc}")
            outcomes = [(future, False, error) for _, future, _ in batch]
        finally:
            self._local.memo = None
        _deliver(outcomes)

    def memo(self) -> dict[Any, Any] | None:
        """On the database thread, while it runs a group: a dict that lives as long as the
        group's transaction, for values that cannot change meanwhile as far as the calls
        in it are concerned (every call in a group was queued before the group began)."""
        return getattr(self._local, "memo", None)


def _claim(future: Any) -> bool:
    """False if the caller gave up before the call started (it is then not run)."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.cancelled()


def _run(func: Callable[[], Any], future: Any) -> _Outcome | None:
    if not _claim(future):
        return None
    return _call(func, future)


def _call(func: Callable[[], Any], future: Any) -> _Outcome:
    try:
        return (future, True, func())
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

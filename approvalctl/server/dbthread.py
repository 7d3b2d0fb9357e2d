"""The server's database thread: all blocking service calls of one process, in order, with
group commit for writes that queue up together.

Why one thread: SQLite allows one writer at a time; with a pool of threads, writers in the
same process contend for the lock, and SQLite's busy handler sleeps in steps of up to
100 ms (a p99 of 700+ ms in tests/load/bench_api.py). Why group commit: a change's cost
is mostly its COMMIT (request, its five indexes, audit row, counters and outbox pages
written to the WAL), so writes waiting at the same moment run in one transaction, each in
its own savepoint, and share that commit. Nobody is answered before the commit: results
are handed back only once it succeeded, and a failed commit fails every call in it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import Unavailable

MAX_GROUP = 64

_Item = tuple[Callable[[], Any], "Future[Any]", bool]


class DatabaseThread:
    """Runs submitted callables on one thread; `write=True` ones may share a transaction."""

    def __init__(self, store: Any, *, max_group: int = MAX_GROUP) -> None:
        self.store = store
        self.max_group = max_group
        self.group = hasattr(store, "group_commit")
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, func: Callable[[], Any], *, write: bool = False) -> Future[Any]:
        if self._thread is None:  # started on first use: an app never served starts none
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="approvalctl-db",
                                                    daemon=True)
                    self._thread.start()
        future: Future[Any] = Future()
        self._queue.put((func, future, write))
        return future

    def shutdown(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)

    # ---- the thread
    def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is None:
                return
            func, future, write = item
            if not (write and self.group):
                _run(func, future)
                continue
            batch = [item]
            while len(batch) < self.max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or not nxt[2]:
                    carry = nxt  # a read or the stop signal: after this group
                    if nxt is None:
                        carry = None
                        self._run_group(batch)
                        return
                    break
                batch.append(nxt)
            if len(batch) == 1:
                _run(func, future)
            else:
                self._run_group(batch)

    def _run_group(self, batch: list[_Item]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.store.group_commit():
                for func, _, _ in batch:
                    try:
                        outcomes.append((True, func()))
                    except BaseException as exc:  # undone by its savepoint; others go on
                        outcomes.append((False, exc))
        except BaseException as exc:  # the commit itself failed: nothing in it happened
            error = exc if isinstance(exc, Unavailable) else Unavailable(
                f"database commit failed: {exc}")
            for _, future, _ in batch:
                if future.set_running_or_notify_cancel():
                    future.set_exception(error)
            return
        for (ok, value), (_, future, _) in zip(outcomes, batch):
            if not future.set_running_or_notify_cancel():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _run(func: Callable[[], Any], future: Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(func())
    except BaseException as exc:
        future.set_exception(exc)

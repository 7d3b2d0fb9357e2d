"""Change notification for one server process: wake exactly the waiters of a request that
moved, and feed the live event streams (GET /api/v1/events).

Every change (create, decision, expiry, cancel, consume) appends an audit row, and audit
seqs are handed out in commit order (SQLite has one writer; PostgreSQL appends under an
advisory lock held until COMMIT). So one question answers "what changed?" for every waiter
of the process at once: the audit rows after the last seq seen (`store.changes_after`). What
differs by source is only when to ask it:

- the process's own changes: the database thread calls `poke_threadsafe()` after each
  COMMIT (writepath.py), never before the change is durable;
- PostgreSQL, changes by any process: every change transaction sends `NOTIFY
  approvalctl_changes` (delivered at COMMIT); one listener thread per process LISTENs, and
  after a lost connection it reconnects and pokes, so the catch-up read finds whatever it
  missed meanwhile;
- SQLite, changes by other processes (the CLI, another `serve`): one `PRAGMA data_version`
  per tick (TICK seconds) while anybody waits, and the read only when it moved.

Waiters re-read their one row once woken; streams get the rows with the requests, read once
per change for all streams, through a bounded queue each (a stream that falls STREAM_QUEUE
events behind is ended with a final `error` event; its client resumes with Last-Event-ID).
Event-loop only, except `poke_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from .. import metrics
from ..errors import ApprovalctlError

log = logging.getLogger("approvalctl.server")

#: How often (s) a SQLite process checks for changes made by other processes while anybody
#: waits; one PRAGMA each, whatever the number of waiters.
TICK = 0.2
#: Audit rows read per catch-up query.
BATCH = 500
#: Events a stream may fall behind before it is ended (memory per stream is bounded by it).
STREAM_QUEUE = 1000
#: Seconds between reconnect attempts of the PostgreSQL listener.
RELISTEN_SECONDS = 1.0
#: Longest sleep (s) of the PostgreSQL listener between two looks at its connection; a
#: notification or stop() ends it at once, so this only bounds an unexpected silence.
LISTEN_SECONDS = 5.0

#: The audit action of a change -> the event name of GET /api/v1/events. `quorum`: the
#: request stays pending but its count changed (an approval below its quorum, or more
#: approvers required), so a screen showing "1 of 2" can follow it.
EVENTS = {"create": "created", "approve": "decided", "reject": "decided",
          "expire": "expired", "cancel": "cancelled", "consume": "consumed",
          "approve_partial": "quorum", "require": "quorum"}

WAITERS = metrics.WAITERS

#: (seq, event name, (request, its quorum fields)) as handed to streams
Event = tuple[int, str, Any]


class Stream:
    """One event stream's bounded queue; `overflowed` once it fell too far behind."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.overflowed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()


class Wakeups:
    """The change notification of one server process (see the module docstring).

    `read` runs a cheap call inline (SQLite) or on the database threads; `run` runs a
    query on the database thread(s). Start with `start()` inside the event loop.
    """

    def __init__(self, store: Any, read: Callable[..., Awaitable[Any]],
                 run: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self._read = read
        self._run = run
        self.sqlite = getattr(store, "dialect", "sqlite") == "sqlite"
        self.seq: int | None = 0  # the last audit seq read
        self.dispatched = 0  # the last audit seq handed to waiters and streams
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._streams: set[Stream] = set()
        self._poke: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        #: PostgreSQL: the listener waits on its connection and on this pair's read end, to
        #: which stop() writes, so stopping never waits out a notification timeout
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._marker: Any = None
        self._started = False
        #: PostgreSQL: the backend pid of the LISTEN connection (None while there is none)
        self.listener_pid: int | None = None

    # ---- lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._poke = asyncio.Event()
        try:
            self.seq = self.dispatched = (await self._run(self.store.audit_head))[0]
        except ApprovalctlError:  # the database is away: catch_up() starts at the head
            self.seq = None
        if self.sqlite:
            with suppress(ApprovalctlError):
                self._marker = await self._read(self.store.change_marker)
        else:
            self._wake = socket.socketpair()
            self._listener = threading.Thread(target=self._listen, daemon=True,
                                              name="approvalctl-listen")
            self._listener.start()
        self._task = asyncio.create_task(self._main())

    async def ensure_started(self) -> None:
        """Start on first use when no lifespan ran (an app driven without one)."""
        if not self._started and not self._stop.is_set():
            await self.start()

    async def stop(self) -> None:
        """Stop listening; every waiter and stream is woken (to see the server stopping)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._wake_all()
        if self._wake is not None:
            with suppress(OSError):
                self._wake[1].send(b"x")
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)
        if self._wake is not None and (self._listener is None
                                       or not self._listener.is_alive()):
            for end in self._wake:
                end.close()

    def wake_all_threadsafe(self) -> None:
        """The server is stopping: every long-poll answers now, every stream ends. Any
        thread, a signal handler too."""
        if self._loop is not None:
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()
        for stream in self._streams:
            stream.overflowed.set()

    def poke_threadsafe(self) -> None:
        """Something committed: read what changed, soon. Any thread."""
        loop, poke = self._loop, self._poke
        if loop is None or poke is None:
            return
        with suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(poke.set)

    # ---- waiters and streams
    @contextmanager
    def waiting(self, request_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `request_id` may have changed; register BEFORE reading the
        row, so a change between the read and the wait is not missed."""
        event = asyncio.Event()
        self._waiters.setdefault(request_id, set()).add(event)
        WAITERS.labels("long_poll").inc()
        try:
            yield event
        finally:
            WAITERS.labels("long_poll").dec()
            events = self._waiters.get(request_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[request_id]

    @contextmanager
    def streaming(self) -> Iterator[Stream]:
        """A bounded queue of the events after `self.dispatched` (as it is on entry)."""
        stream = Stream(STREAM_QUEUE)
        self._streams.add(stream)
        WAITERS.labels("stream").inc()
        try:
            yield stream
        finally:
            WAITERS.labels("stream").dec()
            self._streams.discard(stream)

    @property
    def watching(self) -> bool:
        return bool(self._waiters or self._streams)

    # ---- the loop
    async def _main(self) -> None:
        assert self._poke is not None
        while True:
            try:
                await asyncio.wait_for(self._poke.wait(), TICK if self.sqlite else None)
            except asyncio.TimeoutError:
                if not self.watching:
                    continue
                try:
                    marker = await self._read(self.store.change_marker)
                except ApprovalctlError as exc:
                    log.warning("change check failed: %s", exc.detail)
                    continue
                if marker == self._marker:
                    continue
                self._marker = marker
            self._poke.clear()
            try:
                await self.catch_up()
            except ApprovalctlError as exc:  # the database is away: try again shortly
                log.warning("reading changes failed: %s", exc.detail)
                await asyncio.sleep(RELISTEN_SECONDS)
                self._poke.set()
            except Exception:
                log.exception("reading changes failed")
                await asyncio.sleep(RELISTEN_SECONDS)
                self._poke.set()

    async def catch_up(self) -> None:
        """Read the audit rows after `seq` (one query per BATCH rows, for all waiters) and
        hand them out."""
        if self.seq is None:
            self.seq = self.dispatched = (await self._run(self.store.audit_head))[0]
        while True:
            rows = await self._run(self.store.changes_after, self.seq, BATCH)
            if not rows:
                return
            self.seq = rows[-1][0]
            requests: dict[str, Any] = {}
            if self._streams:
                ids = {rid for _, action, rid in rows if rid and action in EVENTS}
                requests = await self._run(self.requests_of, ids)
            self.dispatch(rows, requests)
            if len(rows) < BATCH:
                return

    def requests_of(self, ids: set[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
        """The requests by id as they are now, each with its quorum fields
        (`{"approvals_required": N, "approvals": [...]}`, or {} without a quorum) as the
        request's JSON carries them (blocking: on the database thread)."""
        found = {}
        for rid in ids:
            req = self.store.get(rid)
            if req is not None:
                found[rid] = req
        quorums = self.store.quorums(list(found)) if found else {}
        return {rid: (req, {"approvals_required": quorums[rid][0],
                            "approvals": list(quorums[rid][1])} if rid in quorums else {})
                for rid, req in found.items()}

    def dispatch(self, rows: list[tuple[int, str, str | None]],
                 requests: dict[str, tuple[Any, dict[str, Any]]]) -> None:
        for seq, action, rid in rows:
            if rid is None:
                continue
            for event in self._waiters.get(rid, ()):
                event.set()
            name = EVENTS.get(action)
            req = requests.get(rid)
            if name is not None and req is not None:
                for stream in self._streams:
                    stream.offer((seq, name, req))
        self.dispatched = max(self.dispatched, rows[-1][0]) if rows else self.dispatched

    # ---- PostgreSQL: one LISTEN connection per process
    def _listen(self) -> None:
        schema = getattr(self.store, "schema", None)
        assert self._wake is not None
        while not self._stop.is_set():
            try:
                conn = self.store.listen_changes()
            except ApprovalctlError as exc:
                log.warning("cannot listen for changes: %s", exc.detail)
                self._stop.wait(RELISTEN_SECONDS)
                continue
            self.listener_pid = conn.info.backend_pid
            try:
                self.poke_threadsafe()  # catch up on whatever happened while not listening
                while not self._stop.is_set():
                    # what has arrived (timeout=0: read what is there, never wait here) ...
                    for note in conn.notifies(timeout=0):
                        if note.payload == schema:
                            self.poke_threadsafe()
                    # ... then sleep until the server sends more, or stop() wakes us
                    select.select([conn.fileno(), self._wake[0]], [], [], LISTEN_SECONDS)
            except Exception as exc:  # the connection was lost: listen again
                log.warning("change listener lost its connection (%s); listening again",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                self._stop.wait(RELISTEN_SECONDS / 10)
            finally:
                self.listener_pid = None
                with suppress(Exception):
                    conn.close()

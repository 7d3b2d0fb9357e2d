"""`approvalctl review`: a full-screen queue of pending requests to work through (Textual).

Textual is imported only here (and by `watch`), so every other command keeps its start-up
budget. Every agent string reaches the screen as a rich `Text` made by `approvalctl.render`:
Textual never reads markup in a `Text`, and notifications are sent with `markup=False`.

Nothing is decided from the list: a decision key works only in a request's own screen, which
shows the full arguments, and acts on exactly the request shown.

The queue is live without polling `list` (`LiveQueue`): one `list` fills it, then a thread
follows the changes and re-reads only when one touched a request — remote, the event stream
(`GET /api/v1/events`, reopened with Last-Event-ID after a dropped connection or a server
restart, and the queue re-read on every (re)open so nothing is missed); local on SQLite,
the cheap change check the local `wait` uses (`store.change_marker`: `PRAGMA
data_version`) once per CHANGE_TICK, local on PostgreSQL, LISTEN for the NOTIFY each change
sends at commit — then one read of the audit rows after the last seen. The screen never
waits for it: the thread hands each new queue to the UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.notifications import SeverityLevel

from .. import render
from ..durations import format_duration
from ..errors import ApprovalctlError, Unavailable

#: How often (s) the ages on screen are redrawn (from memory: no read).
AGE_SECONDS = 1.0
#: How often (s) a local queue asks the database whether anything changed (one PRAGMA).
CHANGE_TICK = 0.2
#: The queue shows at most this many pending requests, oldest first.
QUEUE_LIMIT = 500
#: Rows laid out before the first screen is drawn (more than a terminal shows); the rest
#: follow right after it.
FIRST_ROWS = 60
#: The requester's most recent requests shown under a request.
HISTORY_ROWS = 10
#: Audit actions that change a request or its quorum (server/wakeups.py's EVENTS; not
#: imported from there, which would load the HTTP server into the terminal commands). A
#: partial approval and a raised requirement leave the request pending but change its count
#: ("1 of 2"), so they are changes too.
CHANGES = frozenset({"create", "approve", "reject", "expire", "cancel", "consume",
                     "approve_partial", "require"})
#: Audit rows read per query while catching up.
BATCH = 500
#: Newest requests kept beyond a full pending queue (`LiveQueue.beyond`).
BEYOND = 50
#: Seconds before following the changes again after an error the server answered.
RETRY_SECONDS = 5.0


class LiveQueue:
    """The requests `review` and `watch` show, kept current by change notification.

    `read()` lists them (pending oldest first, any other status newest first, at most
    `limit`) with the quorum of those that have one (`quorums()`: "1 of 2" stays current
    too); `follow()` then keeps them current, blocking, in a thread of its own. `backend`
    is a `Client` (remote: the event stream) or the CLI's `LocalBackend` (local: the store's
    change marker). A pending queue is its `limit` oldest; the requests that arrive once it
    is full are the newest, and `beyond()` keeps them (at most BEYOND), so `watch` can show
    and ring for them. Thread-safe: `rows()` and `apply()` may be called from the UI thread
    while `follow()` runs. Errors: `read()` raises the backend's ApprovalctlError (a bad
    filter, an unreachable server); `follow()` reports them through `failed` and retries.
    """

    def __init__(self, backend: Any, limit: int = QUEUE_LIMIT, *, status: str = "pending",
                 tool: str | None = None, user: str | None = None) -> None:
        self.backend = backend
        self.limit = limit
        self.status = None if status in (None, "", "all") else status
        self.tool, self.user = tool, user
        self.store = getattr(getattr(backend, "service", None), "store", None)
        self._rows: dict[str, Any] = {}
        #: request id -> {"approvals_required": N, "approvals": [approver, ...]}
        self._quorums: dict[str, dict[str, Any]] = {}
        self._full = False  # the last read filled `limit`: more may exist beyond it
        #: pending queue only: matching requests that arrived while it was full, by id
        self._beyond: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.seq: int | None = None  # local: the audit seq the queue is current up to
        #: how many times `list` was called (what a test of "never polls" counts)
        self.reads = 0
        #: PostgreSQL, local: the backend pid of the LISTEN connection while there is one
        self.listener_pid: int | None = None

    def __call__(self) -> list[Any]:
        return self.read()

    # ---- the queue
    def read(self) -> list[Any]:
        """List the queue afresh (one `list` call) and return it."""
        seq = self.store.audit_head()[0] if self.store is not None else None
        items = list(self.backend.list(status=self.status or "all", tool_name=self.tool,
                                       user_id=self.user, limit=self.limit).items)
        quorums = self._quorum_fields(items)
        with self._lock:
            self.reads += 1
            self._rows = {r.id: r for r in items}
            self._quorums = {**{k: q for k, q in self._quorums.items()
                                if k in self._beyond}, **quorums}
            self._full = len(items) >= self.limit
            if not self._full:  # every matching request was read
                self._beyond.clear()
            for rid in [k for k in self._beyond if k in self._rows]:  # it fits now
                del self._beyond[rid]
            if seq is not None:
                self.seq = seq
        return self.rows()

    def _quorum_fields(self, items: list[Any]) -> dict[str, dict[str, Any]]:
        """The quorum fields of `items` that have one (remote: as the `list` answer carried
        them, no extra call; local: one query)."""
        return dict(self.backend.quorum_fields(items)) if items else {}

    def quorums(self) -> dict[str, dict[str, Any]]:
        """A copy of the quorum fields of the requests in the queue that have one, by id."""
        with self._lock:
            return {rid: dict(q) for rid, q in self._quorums.items()
                    if rid in self._rows or rid in self._beyond}

    def beyond(self) -> list[Any]:
        """The requests that match a pending queue but arrived after it was full (oldest
        first, at most BEYOND, the newest kept): the newest requests, which a queue of the
        `limit` oldest cannot hold. Known from the changes followed since the first read
        (a request already beyond the limit then is not among them)."""
        with self._lock:
            return sorted(self._beyond.values(), key=lambda r: r.id)

    def _keep_beyond(self, reqs: list[Any]) -> bool:
        """Keep `reqs` (cut from a full pending queue) in `beyond`; True if that changed it.
        Call with the lock held."""
        if self.status != "pending":  # newest first: what is cut is the oldest
            return False
        changed = False
        for req in reqs:
            changed = changed or self._beyond.get(req.id) != req
            self._beyond[req.id] = req
        for extra in sorted(self._beyond)[:-BEYOND]:
            del self._beyond[extra]
        return changed

    def rows(self) -> list[Any]:
        """The queue now, in display order."""
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda r: r.id,
                          reverse=self.status != "pending")
        return rows[:self.limit]

    def matches(self, req: Any) -> bool:
        """Whether `req` (as it is now) belongs in the queue."""
        return ((self.status is None or req.status == self.status)
                and (self.tool is None or req.tool_name == self.tool)
                and (self.user is None or req.user_id == self.user))

    def apply(self, req: Any, quorum: dict[str, Any] | None = None) -> bool:
        """Take `req`'s current state (and `quorum`, its quorum fields when it has one) into
        the queue; True if the queue changed (a new count "1 of 2" is a change). A request
        leaving a queue that was cut at `limit` re-reads it, to fill the gap."""
        with self._lock:
            old = self._rows.get(req.id)
            if self.matches(req):
                recounted = quorum is not None and self._quorums.get(req.id) != quorum
                if quorum is not None:
                    self._quorums[req.id] = quorum
                self._rows[req.id] = req
                cut = []
                if len(self._rows) > self.limit:  # keep `limit`, as a fresh read would
                    for extra in sorted(self._rows, reverse=self.status != "pending"
                                        )[self.limit:]:
                        cut.append(self._rows.pop(extra))
                    self._full = True
                if req.id not in self._rows:
                    return self._keep_beyond(cut) or recounted
                self._keep_beyond(cut)
                return old is None or old != req or recounted
            if old is None:  # not in the queue; perhaps beyond it
                return self._beyond.pop(req.id, None) is not None
            del self._rows[req.id]
            self._quorums.pop(req.id, None)
            refill = self._full
        if refill:
            self.read()
        return True

    # ---- following the changes
    def follow(self, changed: Callable[[list[Any]], None],
               failed: Callable[[ApprovalctlError], None], stop: threading.Event) -> None:
        """Keep the queue current until `stop` is set: `changed(rows)` after every change
        that touched it, `failed(error)` when the changes cannot be followed (it retries).
        Blocking: run it in a thread of its own."""
        if self.store is not None:
            self._follow_local(changed, failed, stop)
        else:
            self._follow_stream(changed, failed, stop)

    def _follow_stream(self, changed: Callable[[list[Any]], None],
                       failed: Callable[[ApprovalctlError], None],
                       stop: threading.Event) -> None:
        from ..models import ApprovalRequest

        def opened() -> None:  # every change from now on reaches the stream: re-read
            changed(self.read())

        last: int | None = None
        while not stop.is_set():
            try:
                for event in self.backend.events(tool_name=self.tool, last_event_id=last,
                                                 reconnect=False, on_open=opened):
                    if stop.is_set():
                        return
                    last = event["id"]
                    data = event["data"]
                    # the event carries the request's quorum fields when it has a quorum
                    # (its `quorum` event: an approval counted below it, a requirement raised)
                    quorum = {"approvals_required": data["approvals_required"],
                              "approvals": list(data.get("approvals") or [])} \
                        if "approvals_required" in data else None
                    if self.apply(ApprovalRequest.from_dict(data), quorum):
                        changed(self.rows())
            except ApprovalctlError as exc:
                if stop.is_set():
                    return
                failed(exc)
                stop.wait(1.0 if isinstance(exc, Unavailable) else RETRY_SECONDS)
            except Exception:  # the client closed under the stream as the command ends
                if stop.is_set():
                    return
                raise

    def _follow_local(self, changed: Callable[[list[Any]], None],
                      failed: Callable[[ApprovalctlError], None],
                      stop: threading.Event) -> None:
        store = self.store
        assert store is not None
        if hasattr(store, "listen_changes"):
            self._follow_listening(store, changed, failed, stop)
            return
        marker = None
        while not stop.is_set():
            try:
                if self.seq is None:
                    changed(self.read())
                seen = store.change_marker()
                if seen != marker:
                    marker = seen
                    self._catch_up(store, changed)
            except ApprovalctlError as exc:
                if stop.is_set():
                    return
                failed(exc)
            except Exception:  # the store closed under the loop as the command ends
                if stop.is_set():
                    return
                raise
            stop.wait(CHANGE_TICK)

    def _follow_listening(self, store: Any, changed: Callable[[list[Any]], None],
                          failed: Callable[[ApprovalctlError], None],
                          stop: threading.Event) -> None:
        """PostgreSQL: LISTEN for the NOTIFY every change sends at commit (payload: its
        schema), and read the audit rows after `seq` when one arrives. After a lost
        connection: listen again, then catch up, so no change is missed."""
        schema = getattr(store, "schema", None)
        while not stop.is_set():
            conn = None
            try:
                conn = store.listen_changes()
                self.listener_pid = conn.info.backend_pid
                if self.seq is None:
                    changed(self.read())
                self._catch_up(store, changed)
                while not stop.is_set():
                    noted = False
                    for note in conn.notifies(timeout=1.0):
                        noted = noted or note.payload == schema
                    if noted:
                        self._catch_up(store, changed)
            except ApprovalctlError as exc:
                if stop.is_set():
                    return
                failed(exc)
                stop.wait(1.0)
            except Exception as exc:  # the listening connection was lost: listen again
                if stop.is_set():
                    return
                failed(Unavailable(f"lost the database's change notifications "
                                   f"({type(exc).__name__}); listening again"))
                stop.wait(1.0)
            finally:
                self.listener_pid = None
                if conn is not None:
                    with suppress(Exception):  # already gone
                        conn.close()

    def _catch_up(self, store: Any, changed: Callable[[list[Any]], None]) -> None:
        """Local: if the audit rows after `seq` changed any request, re-read the queue (and
        the requests beyond a full one that the changes touched) and hand it on."""
        touched = self._moved(store)
        if touched:
            self.read()
            self._track(touched)
            changed(self.rows())

    def _moved(self, store: Any) -> list[str]:
        """The requests the audit rows after `seq` changed, in order (and move `seq` past
        them); empty when none."""
        moved: dict[str, None] = {}
        while self.seq is not None:
            rows = store.changes_after(self.seq, BATCH)
            if not rows:
                break
            self.seq = rows[-1][0]
            moved.update((rid, None) for _, action, rid in rows
                         if action in CHANGES and rid)
            if len(rows) < BATCH:
                break
        return list(moved)

    def _track(self, touched: list[str]) -> None:
        """Local: the requests among `touched` that a full pending queue does not hold are
        read (one `get` each, the newest BEYOND at most) and kept in `beyond` while they
        match; remotely the events carry them (`apply`)."""
        with self._lock:
            if self.status != "pending" or not self._full:
                return
            todo = [rid for rid in touched if rid not in self._rows][-BEYOND:]
        for rid in todo:
            try:
                req = self.backend.get(rid)
            except ApprovalctlError:  # pruned meanwhile, or not ours to see
                with self._lock:
                    self._beyond.pop(rid, None)
                continue
            with self._lock:
                if self.matches(req) and req.id not in self._rows:
                    self._keep_beyond([req])
                else:
                    self._beyond.pop(rid, None)


def pending_source(backend: Any, limit: int = QUEUE_LIMIT, *, status: str = "pending",
                   tool: str | None = None, user: str | None = None) -> LiveQueue:
    """The live queue `review` and `watch` show (see `LiveQueue`)."""
    return LiveQueue(backend, limit, status=status, tool=tool, user=user)


def _age(iso: str) -> str:
    from ..models import from_iso, utcnow

    return format_duration((utcnow() - from_iso(iso)).total_seconds())


def count_text(quorum: dict[str, Any] | None) -> str:
    """`1 of 2`: the approvals so far of those a quorum requires; "" without a quorum. The
    one spelling of a quorum's count (`list`, `show`, `watch`, `review`)."""
    if not quorum:
        return ""
    return f"{len(quorum.get('approvals') or [])} of {quorum['approvals_required']}"


def approvals_text(quorum: dict[str, Any]) -> str:
    """`1 of 2 (olivia)`: the count, and who approved so far."""
    who = quorum.get("approvals") or []
    return count_text(quorum) + (f" ({', '.join(who)})" if who else "")


def detail_text(req: Any, history: list[Any] | None = None,
                quorum: dict[str, Any] | None = None) -> Any:
    """Everything about `req` as one rich `Text`; agent values rendered, never markup.

    `history` is the requester's recent requests (newest first), shown after the arguments;
    `quorum` (`approvals_required`, `approvals`) adds the line `approvals  1 of 2 (olivia)`.
    """
    from rich.text import Text

    out = Text()

    def field(name: str, value: Any) -> None:
        out.append(f"{name:<11}", style="bold")
        out.append_text(value if isinstance(value, Text) else render.terminal(value))
        out.append("\n")

    field("id", req.id)
    field("tool", req.tool_name)
    field("requester", req.user_id)
    field("risk", req.risk)
    field("reason", req.reason or "-")
    field("created", f"{req.created_at} ({_age(req.created_at)} ago)")
    field("expires", req.expires_at or "-")
    field("digest", req.digest or "-")
    if quorum:
        field("approvals", approvals_text(quorum))
    args = req.arguments or {}
    for key in ("cwd", "session_id", "session", "transcript_path"):
        if isinstance(args, dict) and key in args:
            field(key, render.json_text(args[key], indent=None))
    out.append("arguments\n", style="bold")
    out.append(render.json_text(args))
    out.append("\n")
    others = [h for h in history or [] if h.id != req.id]
    if others:
        out.append(f"\nrecent requests by this requester ({len(others)})\n", style="bold")
        for h in others:
            out.append(f"  {h.id[:12]}  {h.status:<9} {_age(h.created_at):>6} ago  ")
            out.append_text(render.terminal(h.tool_name, 30))
            out.append("  ")
            out.append_text(render.terminal(h.reason or "", 40))
            out.append("\n")
    return out


def run(backend: Any) -> None:
    """`approvalctl review` over `backend`: list the queue, draw it at once (rich, on the
    terminal's alternate screen), then import Textual and hand the terminal to the app.

    Textual's import is most of the start-up, so the queue is on screen before it begins.
    Keys typed meanwhile reach the app as typed (type-ahead, as in any terminal program);
    decision keys act only in a request's own screen, as always. Raises what `list` raises
    (a bad key, an unreachable server) before the screen changes, so the command fails with
    one line and its exit code.
    """
    queue = LiveQueue(backend)
    rows = queue.read()
    with _FirstScreen(rows):
        app = build_app(backend, queue=queue)
    app.run()


class _FirstScreen:
    """Draws `rows` as the queue on the alternate screen with echo off, for the time the
    interactive app takes to load; on leaving, restores the terminal's modes (keys typed
    meanwhile stay queued, unaltered, for the app). The app enters the same alternate screen
    and draws over it; if loading it fails, the normal screen comes back."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.saved: Any = None
        self.console: Any = None

    def __enter__(self) -> _FirstScreen:
        import sys

        from rich.console import Console

        try:
            import termios

            fd = sys.stdin.fileno()
            self.saved = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            # no echo (it would draw over the queue), and keys kept byte for byte as typed
            # (no line editing, CR stays CR) for the app to read as it would have
            quiet[0] &= ~termios.ICRNL
            quiet[3] &= ~(termios.ECHO | termios.ICANON)
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        except (ImportError, OSError, ValueError):  # not a POSIX terminal: draw anyway
            self.saved = None
        console = self.console = Console(file=sys.stdout, highlight=False, emoji=False,
                                         markup=False)
        try:
            self._draw(console)
        except BaseException as exc:  # Ctrl-C while drawing: the terminal as it was
            self.__exit__(type(exc))
            raise
        return self

    def _draw(self, console: Any) -> None:
        from rich.text import Text

        console.set_alt_screen(True)
        console.show_cursor(False)
        n = len(self.rows)
        more = "+" if n >= QUEUE_LIMIT else ""
        console.print(Text(f"{n}{more} pending, oldest first · starting…" if n
                           else "no pending requests · starting…"), crop=True)
        widths = [12, 20, 14, 6, 6]
        widths.append(max(8, console.width - sum(widths) - len(widths)))

        def line(cells: list[Any], style: str = "") -> Any:
            out = Text(style=style, no_wrap=True, overflow="crop")
            for value, width in zip(cells, widths):
                cell = Text(render.plain(value, width))
                cell.truncate(width, pad=True)
                out.append_text(cell)
                out.append(" ")
            return out

        console.print(line(["ID", "TOOL", "USER", "RISK", "AGE", "REASON"], "bold"),
                      crop=True)
        for r in self.rows[:max(1, console.height - 3)]:
            console.print(line([r.id[:12], r.tool_name, r.user_id, r.risk,
                                _age(r.created_at), r.reason or ""]), crop=True)
        console.file.flush()

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.saved is not None:
            import sys
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self.saved)
        if kind is not None and self.console is not None:
            self.console.show_cursor(True)
            self.console.set_alt_screen(False)


def build_app(backend: Any, *, queue: LiveQueue | None = None) -> Any:
    """The Textual `App` over `backend` (the CLI's `LocalBackend` or a `Client`), showing
    `queue` (by default the pending requests of `backend`, oldest first)."""
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.coordinate import Coordinate
    from textual.screen import ModalScreen, Screen
    from textual.widgets import DataTable, Footer, Input, Label, Static

    live = queue or LiveQueue(backend)

    class ReasonScreen(ModalScreen[str | None]):
        """Asks for a rejection reason; Esc gives up (nothing is decided)."""

        BINDINGS = [Binding("escape", "dismiss(None)", "Back")]
        DEFAULT_CSS = """
        ReasonScreen { align: center middle; }
        ReasonScreen > Label, ReasonScreen > Input { width: 70; }
        """

        def compose(self) -> ComposeResult:
            yield Label(Text("Reason for rejecting (Enter to reject, Esc to go back):"))
            yield Input(placeholder="reason", max_length=2000, id="reason")

        def on_input_submitted(self, event: Any) -> None:
            self.dismiss(event.value)

    class RequestScreen(Screen):
        """One request in full; the decision keys act on it alone."""

        BINDINGS = [
            Binding("a", "decide('approve')", "Approve"),
            Binding("A", "decide('always')", "Approve+always"),
            Binding("r", "decide('reject')", "Reject"),
            Binding("c", "decide('cancel')", "Cancel"),
            Binding("s", "skip", "Skip"),
            Binding("escape", "back", "Queue"),
        ]

        def __init__(self, req: Any, history: list[Any],
                     quorum: dict[str, Any] | None = None) -> None:
            super().__init__()
            self.req = req
            self.history = history
            self.quorum = quorum

        def compose(self) -> ComposeResult:
            with VerticalScroll():
                yield Static(detail_text(self.req, self.history, self.quorum), id="detail")
            yield Footer()

        def recount(self, quorum: dict[str, Any]) -> None:
            """Show the request's quorum as it is now (an approval counted elsewhere, a
            requirement raised), in place: the scroll position stays."""
            if quorum != self.quorum:
                self.quorum = quorum
                self.query_one("#detail", Static).update(
                    detail_text(self.req, self.history, quorum))

        def action_back(self) -> None:
            self.app.pop_screen()

        def action_skip(self) -> None:
            app = self.app
            assert isinstance(app, ReviewApp)  # only the review app pushes this screen
            app.open_next(after=self.req.id)

        def action_decide(self, action: str) -> None:
            app = self.app
            assert isinstance(app, ReviewApp)  # only the review app pushes this screen
            if action == "reject":
                def done(reason: str | None) -> None:
                    if reason is not None:
                        app.decide(self.req, "reject", reason.strip() or None)

                app.push_screen(ReasonScreen(), done)
                return
            app.decide(self.req, action)

    class ReviewApp(App):
        """The queue: pending requests oldest first, kept live while it is open."""

        TITLE = "approvalctl review"
        BINDINGS = [
            Binding("enter", "open", "Open", show=True),
            Binding("q", "quit", "Quit"),
            Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.pending: list[Any] = []
            self.ages: dict[str, str] = {}  # the age shown per row
            self.counts: dict[str, str] = {}  # the approvals shown per row ("1 of 2")
            self.stopping = threading.Event()

        def compose(self) -> ComposeResult:
            self.status = Static(id="status")
            self.table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=True,
                                                   id="queue")
            yield self.status
            yield self.table
            yield Footer()

        def on_mount(self) -> None:
            table = self.table
            table.add_columns("ID", "TOOL", "USER", "RISK")
            self.count_column = table.add_column("APPROVALS")
            self.age_column = table.add_column("AGE")
            table.add_column("REASON")
            try:  # the queue `run` read for the first screen, or a first read
                self.show(live.rows() if live.reads else live.read(), first=FIRST_ROWS)
            except ApprovalctlError as exc:
                self.say(f"cannot read the queue: {exc.detail}", "error")
            threading.Thread(target=self.follow, name="approvalctl-review-follow",
                             daemon=True).start()
            self.set_interval(AGE_SECONDS, self.redraw)

        def on_unmount(self) -> None:
            self.stopping.set()

        # -------------------------------------------------- queue
        def follow(self) -> None:
            """The follower thread: hands every new queue to the UI thread."""
            def hand(callback: Callable[..., Any], *args: Any) -> None:
                if self.stopping.is_set():
                    return
                try:
                    self.call_from_thread(callback, *args)
                except RuntimeError:  # the app has ended meanwhile
                    self.stopping.set()

            live.follow(lambda rows: hand(self.show, rows),
                        lambda exc: hand(self.say, f"cannot follow the queue: {exc.detail}",
                                         "error"),
                        self.stopping)

        def refresh_queue(self) -> None:
            """Re-read the queue now (after an answer that says it moved)."""
            try:
                self.show(live.read())
            except ApprovalctlError as exc:
                self.say(f"cannot read the queue: {exc.detail}", "error")

        def show(self, rows: list[Any], first: int | None = None) -> None:
            """Draw `rows` as the queue; close a request's screen whose request left it.

            The table is changed in place (rows that left removed, new ones appended):
            laying out a row measures each of its cells, which for a full queue of
            QUEUE_LIMIT rows is long enough to be felt. `first`: lay out only that many
            rows now (the first screen), the rest once it is drawn."""
            current = self.current_id()
            table = self.table
            quorums = live.quorums()
            shown = list(self.table.rows)  # row keys, in order
            wanted = {r.id for r in rows}
            kept = [k.value for k in shown if k.value in wanted]
            if [r.id for r in rows[:len(kept)]] != kept:  # not removals and appends only
                table.clear()
                self.ages.clear()
                self.counts.clear()
                kept = []
            else:
                for key in shown:
                    if key.value not in wanted:
                        table.remove_row(key)
                        self.ages.pop(str(key.value), None)
                        self.counts.pop(str(key.value), None)
                for rid in map(str, kept):  # a count changed in place: an approval, a
                    count = count_text(quorums.get(rid))  # requirement raised
                    if self.counts.get(rid, "") != count:
                        self.counts[rid] = count
                        table.update_cell(rid, self.count_column, Text(count))
            upto = len(rows) if first is None else min(len(rows), max(first, len(kept)))
            for r in rows[len(kept):upto]:
                age = _age(r.created_at)
                self.ages[r.id] = age
                count = self.counts[r.id] = count_text(quorums.get(r.id))
                table.add_row(Text(r.id[:12]), render.terminal(r.tool_name, 24),
                              render.terminal(r.user_id, 16), Text(r.risk), Text(count),
                              Text(age), render.terminal(r.reason or "", 60), key=r.id)
            if upto < len(rows):
                self.call_after_refresh(self.show, rows)
            self.pending = rows
            ids = [r.id for r in rows]
            if current in ids and ids.index(current) < table.row_count:
                table.move_cursor(row=ids.index(current))
            n = len(rows)
            more = "+" if n >= QUEUE_LIMIT else ""
            self.status.update(Text(
                f"{n}{more} pending, oldest first · Enter opens a request · q quits"
                if n else "no pending requests · new ones appear here · q quits"))
            screen = self.screen
            if isinstance(screen, RequestScreen) and screen.req.id not in wanted:
                self.say(f"{screen.req.id} was decided elsewhere (or expired)", "warning")
                self.pop_screen()
            elif isinstance(screen, RequestScreen) and screen.req.id in quorums:
                screen.recount(quorums[screen.req.id])

        def redraw(self) -> None:
            """Bring the ages up to date: only the cells whose text changed."""
            for r in self.pending:
                age = _age(r.created_at)
                if r.id in self.ages and self.ages[r.id] != age:
                    self.ages[r.id] = age
                    self.table.update_cell(r.id, self.age_column, Text(age))

        def current_id(self) -> str | None:
            table = self.table
            if table.cursor_row is None or not 0 <= table.cursor_row < table.row_count:
                return None
            return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value

        def action_open(self) -> None:
            rid = self.current_id()
            if rid:
                self.open_request(rid)

        def on_data_table_row_selected(self, event: Any) -> None:
            self.open_request(event.row_key.value)

        def open_request(self, rid: str) -> None:
            try:
                req = backend.get(rid)  # the full, current request, not the list's copy
            except ApprovalctlError as exc:
                self.say(exc.detail, "error")
                return
            if req.status != "pending":
                self.say(f"{req.id} is already {req.status}", "warning")
                if live.apply(req):
                    self.show(live.rows())
                return
            try:
                history = list(backend.list(status="all", user_id=req.user_id,
                                            limit=HISTORY_ROWS + 1).items)
            except ApprovalctlError:  # e.g. a key that may not list others: show without
                history = []
            try:  # "1 of 2" for a request with a quorum
                quorum = backend.quorum_fields([req]).get(req.id)
            except ApprovalctlError:
                quorum = None
            self.push_screen(RequestScreen(req, history, quorum))

        def open_next(self, after: str) -> None:
            ids = [r.id for r in self.pending]
            self.pop_screen()
            later = ids[ids.index(after) + 1:] if after in ids else ids
            if later:
                self.open_request(later[0])
            else:
                self.say("no more pending requests after this one", "information")

        # -------------------------------------------------- decisions
        def decide(self, req: Any, action: str, note: str | None = None) -> None:
            try:
                if action == "approve":
                    done = backend.decide(req.id, "approve", None)
                elif action == "always":
                    done, rule = backend.approve_always(req.id, None)
                elif action == "reject":
                    done = backend.decide(req.id, "reject", note)
                else:
                    done = backend.cancel(req.id)
            except ApprovalctlError as exc:
                self.say(f"{req.id}: {exc.detail}", "error")
                if isinstance(self.screen, RequestScreen):
                    self.pop_screen()
                self.refresh_queue()  # decided elsewhere meanwhile, most likely
                return
            if done.status == "pending":  # an approval counted towards a quorum
                try:
                    counted = count_text(backend.quorum_fields([done]).get(done.id))
                except ApprovalctlError:
                    counted = ""
                self.say(f"approval counted for {done.id}"
                         + (f" ({counted} approvals)" if counted else ""), "information")
            else:
                self.say(f"{done.status} {done.id} ({done.tool_name} for {done.user_id})",
                         "information")
            if isinstance(self.screen, RequestScreen):
                self.pop_screen()
            live.apply(done)  # at once; the change notification confirms it
            self.show(live.rows())

        def say(self, text: str, severity: SeverityLevel) -> None:
            # agent text inside (tool names, error details) is rendered, and never markup
            self.notify(render.plain(text), severity=severity, markup=False)

    return ReviewApp()

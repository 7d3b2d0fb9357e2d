"""`approvalctl review`: a full-screen queue of pending requests to work through (Textual).

Textual is imported only here (and by `watch`), so every other command keeps its start-up
budget. Every agent string reaches the screen as a rich `Text` made by `approvalctl.render`:
Textual never reads markup in a `Text`, and notifications are sent with `markup=False`.

Nothing is decided from the list: a decision key works only in a request's own screen, which
shows the full arguments, and acts on exactly the request shown.

The queue refreshes by polling `list` (`pending_source`, every POLL_SECONDS). That one small
function is the source of changes: the event stream (`GET /api/v1/events`) can replace it
without touching the screens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.notifications import SeverityLevel

from .. import render
from ..durations import format_duration
from ..errors import ApprovalctlError

#: How often the queue is re-read while no event stream is available.
POLL_SECONDS = 1.0
#: The queue shows at most this many pending requests, oldest first.
QUEUE_LIMIT = 500
#: The requester's most recent requests shown under a request.
HISTORY_ROWS = 10



def pending_source(backend: Any, limit: int = QUEUE_LIMIT, *, status: str = "pending",
                   tool: str | None = None, user: str | None = None
                   ) -> Callable[[], list[Any]]:
    """The source of changes for `review` and `watch`: a function returning the current
    requests (pending ones oldest first, others newest first), at most `limit`.

    Today each call polls `backend.list`; when the change notification of "Waiting at
    scale" lands, a function that follows the event stream can take its place.
    """
    def read() -> list[Any]:
        return list(backend.list(status=status, tool_name=tool, user_id=user,
                                 limit=limit).items)

    return read


def _age(iso: str) -> str:
    from ..models import from_iso, utcnow

    return format_duration((utcnow() - from_iso(iso)).total_seconds())


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
        who = quorum.get("approvals") or []
        field("approvals", f"{len(who)} of {quorum['approvals_required']}"
              + (f" ({', '.join(who)})" if who else ""))
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


def build_app(backend: Any, *, source: Callable[[], list[Any]] | None = None,
              poll_seconds: float = POLL_SECONDS) -> Any:
    """The Textual `App` over `backend` (the local service or a `Client`)."""
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.coordinate import Coordinate
    from textual.screen import ModalScreen, Screen
    from textual.widgets import DataTable, Footer, Input, Label, Static

    read = source or pending_source(backend)

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
        """The queue: pending requests oldest first, refreshed while it is open."""

        TITLE = "approvalctl review"
        BINDINGS = [
            Binding("enter", "open", "Open", show=True),
            Binding("q", "quit", "Quit"),
            Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.pending: list[Any] = []

        def compose(self) -> ComposeResult:
            self.status = Static(id="status")
            self.table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=True,
                                                   id="queue")
            yield self.status
            yield self.table
            yield Footer()

        def on_mount(self) -> None:
            table = self.table
            table.add_columns("ID", "TOOL", "USER", "RISK", "AGE", "REASON")
            self.refresh_queue()
            self.set_interval(poll_seconds, self.refresh_queue)

        # -------------------------------------------------- queue
        def refresh_queue(self) -> None:
            current = self.current_id()
            try:
                self.pending = read()
            except ApprovalctlError as exc:
                self.say(f"cannot read the queue: {exc.detail}", "error")
                return
            table = self.table
            table.clear()
            for r in self.pending:
                table.add_row(Text(r.id[:12]), render.terminal(r.tool_name, 24),
                              render.terminal(r.user_id, 16), Text(r.risk),
                              Text(_age(r.created_at)), render.terminal(r.reason or "", 60),
                              key=r.id)
            ids = [r.id for r in self.pending]
            if current in ids:
                table.move_cursor(row=ids.index(current))
            n = len(self.pending)
            more = "+" if n >= QUEUE_LIMIT else ""
            self.status.update(Text(
                f"{n}{more} pending, oldest first · Enter opens a request · q quits"
                if n else "no pending requests · new ones appear here · q quits"))
            screen = self.screen
            if isinstance(screen, RequestScreen) and screen.req.id not in ids:
                self.say(f"{screen.req.id} was decided elsewhere (or expired)", "warning")
                self.pop_screen()

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
                self.refresh_queue()
                return
            try:
                history = list(backend.list(status="all", user_id=req.user_id,
                                            limit=HISTORY_ROWS + 1).items)
            except ApprovalctlError:  # e.g. a key that may not list others: show without
                history = []
            try:  # "1 of 2" for a request with a quorum
                quorum = backend.quorum_fields([req]).get(req.id)
            except (ApprovalctlError, AttributeError):  # a backend without quorums
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
            else:
                self.say(f"{done.status} {done.id} ({done.tool_name} for {done.user_id})",
                         "information")
            if isinstance(self.screen, RequestScreen):
                self.pop_screen()
            self.refresh_queue()

        def say(self, text: str, severity: SeverityLevel) -> None:
            # agent text inside (tool names, error details) is rendered, and never markup
            self.notify(render.plain(text), severity=severity, markup=False)

    return ReviewApp()

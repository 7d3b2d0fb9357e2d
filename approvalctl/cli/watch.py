"""`approvalctl watch`: a live, read-only view of the queue (rich `Live`), with an optional
terminal bell and desktop notification when a new high-risk request arrives.

Read-only by construction: it only reads. It stays current through the same live queue as
`review` (`review.LiveQueue`: the event stream remotely, the database's change marker
locally), and never polls `list`.

When not everything fits: a pending queue is read as its WATCH_LIMIT oldest, and the
requests arriving once it is full are followed beyond it (`LiveQueue.beyond`); on a terminal
too short for the rows, high-risk ones are kept (the newest first, what `--bell` rang for)
and a last line counts the rest and names the newest of them (`fit`, `left_out_line`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from typing import Any

from .. import render
from ..durations import format_duration
from ..errors import ApprovalctlError
from .review import AGE_SECONDS, LiveQueue, count_text

#: Rows drawn at most; the title says how many there are.
WATCH_LIMIT = 200


def status_text(req: Any, quorum: dict[str, Any] | None) -> str:
    """The STATUS cell: the status, and for a pending request with a quorum the approvals so
    far of those required, as `list` shows it: `pending (1 of 2)`."""
    if not quorum or req.status != "pending":
        return str(req.status)
    return f"{req.status} ({count_text(quorum)})"


def fit(rows: list[Any], room: int) -> tuple[list[Any], list[Any]]:
    """The rows to draw when only `room` fit, and the rows left out; both in queue order.

    All fit: all are drawn. Otherwise the high-risk requests go first (the newest of them
    before any other: it is what `--bell` rang for), then the rest in queue order (pending:
    oldest first); the rows drawn keep the queue's order.
    """
    if len(rows) <= room:
        return rows, []
    high = [r for r in rows if r.risk == "high"]
    newest = max((r.id for r in high), default=None)
    order = [r.id for r in high if r.id == newest] + \
        [r.id for r in high if r.id != newest] + [r.id for r in rows if r.risk != "high"]
    keep = set(order[:max(0, room)])
    return [r for r in rows if r.id in keep], [r for r in rows if r.id not in keep]


def left_out_line(left: list[Any], unread: bool = False) -> str:
    """The line under a cut table: how many rows are not shown, how many of them are high
    risk, and the newest of them (agent text rendered); `unread`: the queue's read was cut
    at WATCH_LIMIT, so some requests between its oldest and those that arrived since are
    not known at all."""
    from ..models import from_iso, utcnow

    newest = max(left, key=lambda r: r.id)
    high = sum(1 for r in left if r.risk == "high")
    age = format_duration((utcnow() - from_iso(newest.created_at)).total_seconds())
    # most important first: a narrow terminal cuts the end of the line
    return (f"+{len(left)} more not shown"
            + (f" ({high} high risk)" if high else "")
            + (f" · over {WATCH_LIMIT} pending: only the {WATCH_LIMIT} oldest and those new "
               "since watch began are known" if unread else "")
            + f"; newest not shown: {render.plain(newest.tool_name, 24)} for "
              f"{render.plain(newest.user_id, 16)} ({newest.risk}, {age} ago)"
            + " · --tool/--user narrow it")


def table(rows: list[Any], title: str,
          quorums: dict[str, dict[str, Any]] | None = None) -> Any:
    """The queue as a rich `Table` of `Text` cells (agent text rendered, never markup);
    `quorums` (request id -> `approvals_required`, `approvals`) adds `(1 of 2)` to the
    STATUS of a pending request with a quorum."""
    from rich.table import Table
    from rich.text import Text

    from ..models import from_iso, utcnow

    now = utcnow()
    quorums = quorums or {}
    t = Table(title=Text(title), box=None, header_style="bold", pad_edge=False, expand=False)
    # the short columns keep their width; TOOL, USER and REASON are cut with an ellipsis
    for col, least in (("ID", 12), ("TOOL", 8), ("USER", 6), ("RISK", 6), ("STATUS", 9),
                       ("AGE", 5), ("REASON", 6)):
        t.add_column(col, no_wrap=True, overflow="ellipsis", min_width=least)

    def cell(value: Any, width: int, style: str = "") -> Text:
        return Text(render.plain(value, width), style=style, no_wrap=True,
                    overflow="ellipsis")

    for r in rows:
        t.add_row(cell(r.id[:12], 12), cell(r.tool_name, 24), cell(r.user_id, 16),
                  cell(r.risk, 6, "bold red" if r.risk == "high" else ""),
                  cell(status_text(r, quorums.get(r.id)), 18),
                  cell(format_duration((now - from_iso(r.created_at)).total_seconds()), 6),
                  cell(r.reason or "", 40))
    return t


def screen(rows: list[Any], title: str, height: int,
           quorums: dict[str, dict[str, Any]] | None = None, *, unread: bool = False) -> Any:
    """What `watch` draws in a terminal `height` lines tall: the title, the header and as
    many rows as fit (`fit`); when some do not, a last line says so (`left_out_line`;
    `unread`: the queue's read was cut at WATCH_LIMIT)."""
    from rich.console import Group
    from rich.text import Text

    room = max(1, height - 3)  # the title, the header, and the line Live keeps free
    if len(rows) <= room:
        return table(rows, title, quorums)
    shown, left = fit(rows, max(1, room - 1))  # one line for what is left out
    return Group(table(shown, title, quorums),
                 Text(left_out_line(left, unread), style="bold",
                      no_wrap=True, overflow="ellipsis"))


def alert(req: Any, *, bell: bool, stream: Any) -> None:
    """A new high-risk request: the terminal bell, and `notify-send` where it exists."""
    if not bell:
        return
    stream.write("\a")
    stream.flush()
    exe = shutil.which("notify-send")
    if exe:
        # argv, not a shell: the rendered text cannot run anything; and rendered for
        # notification markup (`<b>`, `<a href>`): an agent's tags show as text
        subprocess.Popen([exe, "--", render.notification("approvalctl: high-risk request"),
                          render.notification(f"{req.tool_name} for {req.user_id}: "
                                              f"{req.reason or ''}", 200)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def run(queue: LiveQueue, *, what: str, bell: bool) -> None:
    """Draw `queue` and redraw it on every change (and every AGE_SECONDS, for the ages,
    from memory) until Ctrl-C. The changes are followed in a thread (`LiveQueue.follow`);
    this thread only draws."""
    import queue as queues

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    out = sys.stdout  # the terminal itself: the bell must not go through Live's redirect
    console = Console(file=out, highlight=False, emoji=False, markup=False)
    updates: queues.SimpleQueue[list[Any] | ApprovalctlError] = queues.SimpleQueue()
    stop = threading.Event()
    rows = queue.rows()
    seen = {r.id for r in rows}
    follower = threading.Thread(target=queue.follow, args=(updates.put, updates.put, stop),
                                name="approvalctl-watch-follow", daemon=True)
    with Live(Text("loading…"), console=console, auto_refresh=False, screen=False,
              transient=False, redirect_stdout=False, redirect_stderr=False) as live:
        follower.start()
        try:
            update: list[Any] | ApprovalctlError = rows
            while True:
                if isinstance(update, ApprovalctlError):
                    live.update(Text(f"cannot follow the queue: "
                                     f"{render.plain(update.detail)}"), refresh=True)
                else:
                    rows = update
                    full = len(rows) >= WATCH_LIMIT
                    # a full pending queue is the oldest; the newest arrive beyond it
                    known = {r.id for r in rows}
                    shown = rows + [r for r in queue.beyond() if r.id not in known]
                    title = f"{what}: {len(shown)}{'+' if full else ''} (Ctrl-C to stop)"
                    # only the rows the terminal can show are laid out (the title counts
                    # them all, the last line names what is left out): a table of every row
                    # is measured cell by cell first
                    live.update(screen(shown, title, console.height, queue.quorums(),
                                       unread=full and queue.status == "pending"),
                                refresh=True)
                    for r in shown:
                        if r.id not in seen and r.risk == "high":
                            alert(r, bell=bell, stream=out)
                    seen = {r.id for r in shown}
                try:
                    update = updates.get(timeout=AGE_SECONDS)
                except queues.Empty:
                    update = rows
        finally:
            stop.set()

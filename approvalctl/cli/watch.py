"""`approvalctl watch`: a live, read-only view of the queue (rich `Live`), with an optional
terminal bell and desktop notification when a new high-risk request arrives.

Read-only by construction: it only lists. It refreshes through the same source of changes
as `review` (`review.pending_source`, polling `list` until the event stream lands).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import render
from ..durations import format_duration
from ..errors import ApprovalctlError
from .review import POLL_SECONDS

#: Rows drawn at most; the title says how many there are.
WATCH_LIMIT = 200


def table(rows: list[Any], title: str) -> Any:
    """The queue as a rich `Table` of `Text` cells (agent text rendered, never markup)."""
    from rich.table import Table
    from rich.text import Text

    from ..models import from_iso, utcnow

    now = utcnow()
    t = Table(title=Text(title), box=None, header_style="bold", pad_edge=False, expand=False)
    for col in ("ID", "TOOL", "USER", "RISK", "STATUS", "AGE", "REASON"):
        t.add_column(col, no_wrap=True, overflow="ellipsis")
    for r in rows:
        t.add_row(Text(r.id[:12]), render.terminal(r.tool_name, 24),
                  render.terminal(r.user_id, 16),
                  Text(r.risk, style="bold red" if r.risk == "high" else ""), Text(r.status),
                  Text(format_duration((now - from_iso(r.created_at)).total_seconds())),
                  render.terminal(r.reason or "", 40))
    return t


def alert(req: Any, *, bell: bool, stream: Any) -> None:
    """A new high-risk request: the terminal bell, and `notify-send` where it exists."""
    if not bell:
        return
    stream.write("\a")
    stream.flush()
    exe = shutil.which("notify-send")
    if exe:
        # argv, not a shell: the rendered text cannot run anything
        subprocess.Popen([exe, "--", "approvalctl: high-risk request",
                          render.plain(f"{req.tool_name} for {req.user_id}: "
                                       f"{req.reason or ''}", 200)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def run(read: Callable[[], list[Any]], *, what: str, bell: bool,
        poll_seconds: float = POLL_SECONDS) -> None:
    """Redraw the queue every `poll_seconds` until Ctrl-C."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    out = sys.stdout  # the terminal itself: the bell must not go through Live's redirect
    console = Console(file=out, highlight=False, emoji=False, markup=False)
    seen: set[str] | None = None
    with Live(Text("loading…"), console=console, auto_refresh=False, screen=False,
              transient=False, redirect_stdout=False, redirect_stderr=False) as live:
        while True:
            try:
                rows = read()
                title = f"{what}: {len(rows)}{'+' if len(rows) >= WATCH_LIMIT else ''} " \
                        f"(Ctrl-C to stop)"
                live.update(table(rows, title), refresh=True)
            except ApprovalctlError as exc:
                live.update(Text(f"cannot read the queue: {render.plain(exc.detail)}"),
                            refresh=True)
                rows = []
            ids = {r.id for r in rows}
            if seen is not None:
                for r in rows:
                    if r.id not in seen and r.risk == "high":
                        alert(r, bell=bell, stream=out)
            seen = ids
            time.sleep(poll_seconds)

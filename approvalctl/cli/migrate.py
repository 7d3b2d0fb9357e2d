"""`approvalctl migrate`: schema state, and (with --to) copying all data to another database."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from ..errors import InvalidInput
from .app import app, command, emit, local_service, message, print_table, state_of

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


@command(app, "migrate")
def migrate_cmd(
    ctx: typer.Context,
    show_list: bool = typer.Option(False, "--list", help="Show each migration and its state."),
    to: str | None = typer.Option(
        None, "--to", metavar="URL|PATH",
        help="Copy every table to this (empty) database — a SQLite path or a postgresql:// "
             "URL — then verify row counts, checksums and the audit chain there."),
    resume: bool = typer.Option(False, "--resume",
                                help="With --to: continue an interrupted copy into a target "
                                     "that already holds part of the data."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="With --to: report what would be copied; change nothing."),
    batch: int = typer.Option(5000, "--batch", min=1, max=100_000,
                              help="With --to: rows per transaction."),
    as_json: bool = JSON_OPT,
) -> None:
    """Apply schema migrations (they also apply on every open); --list shows the state;
    --to copies everything to another database, SQLite or PostgreSQL, in either direction."""
    if state_of(ctx).remote:
        raise InvalidInput("migrate works on a database; it cannot be used with --server")
    if to is None and (resume or dry_run):
        raise InvalidInput("--resume and --dry-run only apply to a copy: add --to URL")
    store = local_service(ctx).store  # opening migrates
    if to is not None:
        _copy(store, to, resume=resume, dry_run=dry_run, batch=batch, as_json=as_json)
        return
    from .app import local_principal

    rows = local_service(ctx).migration_state(local_principal(ctx))
    if as_json:
        emit(rows)
    elif show_list:
        print_table(["MIGRATION", "APPLIED AT"],
                    [[r["name"], r["applied_at"] or "pending"] for r in rows])
    else:
        message(f"{store.url}: schema up to date ({len(rows)} migrations applied)")


def _copy(store: Any, to: str, *, resume: bool, dry_run: bool, batch: int,
          as_json: bool) -> None:
    from ..copy import copy_database
    from ..errors import VerificationFailed

    to = to.strip()
    if not to:
        raise InvalidInput("--to needs a database path or postgresql:// URL")
    progress = _Progress()
    try:
        report = copy_database(store, to, resume=resume, dry_run=dry_run, batch=batch,
                               progress=None if dry_run else progress.update)
    except KeyboardInterrupt:
        progress.stop()
        message("interrupted: the rows copied so far are kept; run the same command with "
                "--resume to continue")
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    if as_json:
        emit(report.to_dict())
    elif dry_run:
        print_table(["TABLE", "SOURCE ROWS", "TARGET ROWS", "WOULD COPY"],
                    [[t.name, t.source_rows, t.target_rows_before, t.to_copy]
                     for t in report.tables])
    else:
        print_table(["TABLE", "SOURCE ROWS", "COPIED", "TARGET ROWS", "CHECKSUM"],
                    [[t.name, t.source_rows, t.copied, t.target_rows,
                      "match" if t.ok else "MISMATCH"] for t in report.tables])
    if dry_run:
        total = sum(t.to_copy for t in report.tables)
        where = report.target if report.target_exists else f"{report.target} (to be created)"
        message(f"dry run: would copy {total} rows from {report.source} to {where}; "
                "nothing was changed")
        return
    problems = report.problems()
    if problems:
        raise VerificationFailed("copy verification failed: " + "; ".join(problems)
                                 + " (was the source written to during the copy? stop every "
                                 "writer, empty the target and copy again)")
    assert report.audit is not None  # else problems() named the missing check above
    copied = sum(t.copied for t in report.tables)
    message(f"copied {copied} rows to {report.target}"
            + (" (resumed)" if report.resumed else "")
            + f"; verified: row counts and checksums of {len(report.tables)} tables match, "
            f"audit chain intact ({report.audit['rows']} rows)")


class _Progress:
    """A rich progress bar on a terminal; elsewhere a plain line per table every second."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, table: str, done: int, total: int) -> None:
        if self._tty:
            self._update_bar(table, done, total)
            return
        if done == 0:
            return
        now = time.monotonic()
        # a table's first batch is always reported: it shows the copy is under way
        if table not in self._tasks or done >= total or now - self._last >= 1.0:
            self._tasks[table] = True
            self._last = now
            message(f"copying {table}: {done}/{total} rows")

    def _update_bar(self, table: str, done: int, total: int) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description:<17}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._bar.start()
        if table not in self._tasks:
            self._tasks[table] = self._bar.add_task(table, total=total)
        self._bar.update(self._tasks[table], completed=done, total=total)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


"""Copying a whole approvalctl database to another one, of either kind, and proving the copy.

`migrate --to` is how a team moves from SQLite to PostgreSQL — and back again, which is the
rollback path. Every table in `store.sql.TABLES` is copied in primary-key order, one
transaction per batch, so the target always holds a prefix of each source table: an
interrupted copy resumes from the target's greatest key without duplicating a row. Then the
copy is verified independently of how it was made: row counts, a checksum of every row of
every table read back from the target, and the audit chain walked on the target.

The source should be quiet while it is copied (stop `serve` and cron jobs first): a row
changed behind the copy shows up as a checksum mismatch, never as silent divergence.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import marshal
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import audit
from .errors import InvalidInput
from .store import Store, is_postgres_url, open_store
from .store.sql import TABLES

DEFAULT_BATCH = 5000

#: progress(table, rows copied so far, rows to copy in all)
Progress = Callable[[str, int, int], None]


@dataclass
class TableReport:
    name: str
    source_rows: int
    target_rows_before: int = 0
    copied: int = 0
    target_rows: int | None = None
    source_checksum: str | None = None
    target_checksum: str | None = None

    @property
    def to_copy(self) -> int:
        return max(0, self.source_rows - self.target_rows_before)

    @property
    def ok(self) -> bool | None:
        if self.target_rows is None:
            return None
        return self.target_rows == self.source_rows and \
            self.source_checksum == self.target_checksum

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.name, "source_rows": self.source_rows,
                "target_rows_before": self.target_rows_before, "copied": self.copied,
                "target_rows": self.target_rows, "source_checksum": self.source_checksum,
                "target_checksum": self.target_checksum, "ok": self.ok}


@dataclass
class CopyReport:
    source: str
    target: str
    dry_run: bool
    resumed: bool
    tables: list[TableReport] = field(default_factory=list)
    audit: dict[str, Any] | None = None
    target_exists: bool = True

    @property
    def ok(self) -> bool | None:
        if self.dry_run:
            return None
        return all(t.ok for t in self.tables) and bool(self.audit and self.audit["ok"])

    def problems(self) -> list[str]:
        out = []
        for t in self.tables:
            if t.target_rows is not None and t.target_rows != t.source_rows:
                out.append(f"{t.name} has {t.target_rows} rows on the target but "
                           f"{t.source_rows} on the source")
            elif t.ok is False:
                out.append(f"{t.name} rows differ between source and target (checksum)")
        if self.audit is None and not self.dry_run:
            out.append("the audit chain on the target was not checked")
        elif self.audit and not self.audit["ok"]:
            out.append(f"audit chain on the target is broken: {self.audit['problem']}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "dry_run": self.dry_run,
                "resumed": self.resumed, "target_exists": self.target_exists,
                "tables": [t.to_dict() for t in self.tables], "audit": self.audit,
                "ok": self.ok}


def same_database(a: str, b: str) -> bool:
    if is_postgres_url(a) or is_postgres_url(b):
        return a == b
    a, b = a.removeprefix("sqlite:///"), b.removeprefix("sqlite:///")
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _open_target_for_reading(target: str) -> Store | None:
    """The target without creating or migrating anything (for --dry-run); None if absent."""
    if is_postgres_url(target):
        from .store.postgres import PostgresStore

        return PostgresStore(target, migrate=False, require_schema=False)
    path = Path(target.removeprefix("sqlite:///")).expanduser()
    if not path.exists():
        return None
    from .store.sqlite import SQLiteStore

    return SQLiteStore(path, migrate=False)


def _counts(store: Store | None) -> dict[str, int]:
    if store is None or not any(m["applied_at"] for m in store.migration_state()):
        return {t: 0 for t in TABLES}
    return {t: store.count_rows(t) for t in TABLES}


class Checksum:
    """sha256 over rows in key order: equal data gives equal sums on both kinds of store.

    Each row is hashed in marshal's version-2 encoding: one exact, self-delimiting byte
    string per tuple of str/int/float/None, the same whichever driver read it (version 2
    has no back-references or interning flags), and faster than repr. Rows are
    encoded one by one, so the sum does not depend on how they were batched.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.rows = 0

    def add_rows(self, rows: list[tuple]) -> None:
        if rows:
            self._digest.update(b"".join(map(marshal.dumps, rows, itertools.repeat(2))))
            self.rows += len(rows)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def batches(store: Store, table: str, after: tuple | None = None,
            batch: int = DEFAULT_BATCH) -> Iterator[list[tuple]]:
    """The rows of `table` after key `after`, in key order, `batch` at a time.

    A thread reads one batch ahead, so the database reads overlap with writing or hashing
    the previous batch (both drivers release the GIL while they wait).
    """
    ahead: queue.Queue[list[tuple] | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        key = after
        try:
            while not stop.is_set():
                rows = store.read_rows(table, key, batch)
                ahead.put(rows)
                if len(rows) < batch:
                    return
                key = store.key_of(table, rows[-1])
        except BaseException as exc:  # handed to the consumer, which raises it
            ahead.put(exc)

    reader = threading.Thread(target=read, name=f"read-{table}", daemon=True)
    reader.start()
    try:
        while True:
            item = ahead.get()
            if isinstance(item, BaseException):
                raise item
            if item:
                yield item
            if len(item) < batch:
                return
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting to put, then let it end
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)


def table_checksum(store: Store, table: str, batch: int = DEFAULT_BATCH) -> Checksum:
    checksum = Checksum()
    for rows in batches(store, table, None, batch):
        checksum.add_rows(rows)
    return checksum


def copy_database(source: Store, target_url: str, *, resume: bool = False,
                  dry_run: bool = False, batch: int = DEFAULT_BATCH,
                  progress: Progress | None = None) -> CopyReport:
    """Copy every table of `source` to the database at `target_url`, then verify it.

    Refuses a target that already holds rows unless `resume`; with `dry_run` only reports
    what would be copied and leaves the target untouched.
    """
    if not isinstance(batch, int) or batch < 1:
        raise InvalidInput(f"batch size must be a positive number of rows, got {batch!r}")
    if same_database(source.url, target_url):
        raise InvalidInput("the --to target is the database being copied; name another one")
    report = CopyReport(source=source.url, target=target_url, dry_run=dry_run, resumed=False)
    source_counts = _counts(source)

    if dry_run:
        target = _open_target_for_reading(target_url)
        try:
            report.target_exists = target is not None
            if target is not None:
                report.target = target.url
            before = _counts(target)
        finally:
            if target is not None:
                target.close()
        report.tables = [TableReport(t, source_counts[t], before[t]) for t in TABLES]
        if any(before.values()) and not resume:
            raise _not_empty(report, before)
        return report

    target = open_store(target_url)
    try:
        report.target = target.url
        before = _counts(target)
        report.tables = [TableReport(t, source_counts[t], before[t]) for t in TABLES]
        if any(before.values()):
            if not resume:
                raise _not_empty(report, before)
            report.resumed = True
        seen = {}
        target.before_bulk_load()
        for table in report.tables:
            seen[table.name] = _copy_table(source, target, table, batch, progress)
        target.after_bulk_load()
        verify(source, target, report, batch, source_checksums=seen)
    finally:
        target.close()
    return report


def _not_empty(report: CopyReport, before: dict[str, int]) -> InvalidInput:
    filled = ", ".join(f"{t}: {n} rows" for t, n in before.items() if n)
    return InvalidInput(f"target {report.target} is not empty ({filled}); use --resume to "
                        "continue an interrupted copy into it, or choose an empty database")


def _copy_table(source: Store, target: Store, table: TableReport, batch: int,
                progress: Progress | None) -> Checksum | None:
    """Copy what the target lacks; returns the source checksum when it saw every row."""
    after = target.last_key(table.name)  # the target holds a prefix: carry on after it
    checksum = Checksum() if after is None else None
    total = table.to_copy
    if progress:
        progress(table.name, 0, total)
    for rows in batches(source, table.name, after, batch):
        target.insert_rows(table.name, rows)
        if checksum is not None:
            checksum.add_rows(rows)
        table.copied += len(rows)
        if progress:
            progress(table.name, table.copied, max(total, table.copied))
    return checksum


def verify(source: Store, target: Store, report: CopyReport,
           batch: int = DEFAULT_BATCH, *,
           source_checksums: dict[str, Checksum | None] | None = None) -> None:
    """Fill in the report's counts and checksums from both sides and the target's chain.

    A source checksum taken while copying every row is reused; a resumed table is read again.
    """
    for table in report.tables:
        mine = (source_checksums or {}).get(table.name)
        if mine is None:
            mine = table_checksum(source, table.name, batch)
        table.source_checksum = mine.hexdigest()
        if table.name != "audit_log":
            theirs = table_checksum(target, table.name, batch)
        else:
            # walk the chain over the rows read back for the checksum: one pass, not two
            theirs = Checksum()
            columns = TABLES["audit_log"][1]

            def rows(theirs: Checksum = theirs, columns: tuple = columns
                     ) -> Iterator[dict[str, Any]]:
                for chunk in batches(target, "audit_log", None, batch):
                    theirs.add_rows(chunk)
                    for row in chunk:
                        yield dict(zip(columns, row))

            walk = rows()
            report.audit = audit.verify_chain(walk).to_dict()
            for _ in walk:  # a broken chain stops the walk early; finish the checksum
                pass
        table.target_rows, table.target_checksum = theirs.rows, theirs.hexdigest()

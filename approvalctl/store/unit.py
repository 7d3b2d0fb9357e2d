"""The unit of work: one transaction of the server's write path, as an object.

A `UnitOfWork` is opened by `store.unit_of_work()` (store/sql.py) and handed to the jobs of
the server's database thread (server/writepath.py, whose docstring states the invariants
this object exists to keep). Everything one transaction owns is on it, nothing in a
thread-local or a module global:

- `connection`, `cursor`, `pipe`: the backend's open transaction (`pipe`: PostgreSQL's
  pipeline, or None);
- `store`: the store bound to this transaction — every read and write made through it
  runs inside it; the store's write methods are called through this, never on the plain
  store, by a job;
- `spoiled`: set when a write failed part-way (or a read failed: the backend may have
  aborted the transaction); a spoiled unit is rolled back, never committed;
- `changes`: the audit changes (with their notification payloads) of the writes made in
  it, deferred to its end: one read of the chain's head and one insert for all of them;
- `tally`: the counter deltas (RBAC checks) made by the calls in it, written with its
  commit and dropped with its rollback;
- `memo`: values read once per transaction (the principal of an API key).
"""

from __future__ import annotations

from typing import Any

from ..counters import CounterBuffer
from ..models import Change


class UnitOfWork:
    """One open transaction and what it will write at its end (see the module docstring).

    Made by `SQLStore.unit_of_work()` only; `store` is set there to the bound store.
    """

    __slots__ = ("connection", "cursor", "pipe", "store", "spoiled", "changes", "tally",
                 "memo")

    def __init__(self, connection: Any, cursor: Any, pipe: Any = None) -> None:
        self.connection = connection
        self.cursor = cursor
        self.pipe = pipe
        self.store: Any = None
        self.spoiled = False
        self.changes: list[tuple[Change, str]] = []  # each with its notification payload
        self.tally = CounterBuffer()
        self.memo: dict[Any, Any] = {}

"""The declared store interface (approvalctl/store/base.py) matches both backends.

`runtime_checkable` only asks whether the names exist; these tests compare every member's
signature (parameter names, kinds, defaults and annotations) with SQLiteStore's and
PostgresStore's, so a backend cannot drift from what the service is typed against.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from approvalctl.store import Store, open_store
from approvalctl.store.postgres import PostgresStore
from approvalctl.store.sqlite import SQLiteStore


def protocol_members() -> list[str]:
    """Every method Store declares (its attributes are checked separately)."""
    return sorted(name for name, value in vars(Store).items()
                  if inspect.isfunction(value) and not name.startswith("_"))


def _shape(fn: object) -> inspect.Signature:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    ret = sig.return_annotation
    # @contextmanager turns `-> Iterator[X]` into a function returning a context manager
    if getattr(fn, "__wrapped__", None) is not None and isinstance(ret, str) \
            and ret.startswith("Iterator["):
        sig = sig.replace(return_annotation="AbstractContextManager[" + ret[len("Iterator["):])
    return sig


def mismatches(cls: type) -> list[str]:
    """What in `cls` does not match Store, one line per member."""
    out = []
    for name in protocol_members():
        impl = getattr(cls, name, None)
        if impl is None or not callable(impl):
            out.append(f"{name}: missing")
            continue
        want, got = _shape(getattr(Store, name)), _shape(impl)
        if want != got:
            out.append(f"{name}: declared {want}, {cls.__name__} has {got}")
    # an instance attribute (set by the constructor) counts when the class declares it
    declared = set().union(*(vars(c).get("__annotations__", {}) for c in cls.__mro__))
    for attr in Store.__annotations__:
        if not hasattr(cls, attr) and attr not in declared:
            out.append(f"{attr}: attribute missing")
    return out


def test_the_protocol_declares_every_store_method_called_outside_the_store() -> None:
    # a sample of the calls the faces and the service make; mypy checks the rest
    for name in ("create", "transition", "consume", "claim_outbox", "requeue_outbox",
                 "migration_state", "close", "read_rows", "verify_audit", "unit_of_work"):
        assert name in protocol_members()


@pytest.mark.parametrize("cls", [SQLiteStore, PostgresStore])
def test_backend_signatures_match_the_protocol(cls: type) -> None:
    assert mismatches(cls) == []


def test_a_drifted_backend_is_caught() -> None:
    class Drifted(SQLiteStore):
        def get_status(self, request_id: str, extra: int = 0) -> str | None:  # new parameter
            return None

        def list_outbox(self, *, status: str | None = None,  # a changed default
                        limit: int = 50) -> list[dict]:
            return []

        @contextmanager
        def brief_writes(self) -> Iterator[int]:  # a different context value
            yield 0

    found = mismatches(Drifted)
    assert [line.split(":")[0] for line in found] == ["brief_writes", "get_status",
                                                      "list_outbox"]


def test_open_store_returns_a_store(db_url: str) -> None:
    store = open_store(db_url)
    try:
        assert isinstance(store, Store)
        assert mismatches(type(store)) == []
    finally:
        store.close()

"""The server's database thread: writes queued together share one commit, a failing one is
undone alone, and nobody hears "done" unless the commit happened."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from approvalctl.errors import NotFound, Unavailable
from approvalctl.server.dbthread import DatabaseThread


def hold(seconds: float, started: threading.Event):
    def work() -> None:
        started.set()
        time.sleep(seconds)
    return work


def test_queued_writes_share_a_commit_and_a_failure_is_undone_alone(store, service, agent,
                                                                     monkeypatch):
    groups = []
    real = store.group_commit

    @contextmanager
    def counting():
        groups.append(1)
        with real():
            yield

    monkeypatch.setattr(store, "group_commit", counting)
    db = DatabaseThread(store)
    started = threading.Event()
    db.submit(hold(0.2, started))  # keep the thread busy while the writes queue up
    started.wait()
    futures = [db.submit(lambda i=i: service.create(agent, f"tool{i}"), write=True)
               for i in range(20)]
    bad = db.submit(lambda: service.cancel(agent, "zzzzzzzzzzzz"), write=True)
    more = [db.submit(lambda: service.create(agent, "after"), write=True) for _ in range(5)]
    created = [f.result(timeout=10) for f in futures + more]
    with pytest.raises(NotFound):
        bad.result(timeout=10)
    db.shutdown()
    assert len(groups) == 1  # 26 writes, one transaction
    assert len({r.id for r in created}) == 25
    assert all(store.get_status(r.id) == "pending" for r in created)
    rows = store.audit_rows()
    assert len(rows) == 25 and [r["seq"] for r in rows] == list(range(1, 26))
    from approvalctl import audit

    assert audit.verify_chain(store.iter_audit()).ok


def test_a_failed_commit_fails_every_call_in_it(store, service, agent, monkeypatch):
    @contextmanager
    def failing():
        with store._write():
            store._local.group = True
            try:
                yield
            finally:
                store._local.group = False
            raise Unavailable("disk full")  # the commit fails: everything rolls back

    monkeypatch.setattr(store, "group_commit", failing)
    db = DatabaseThread(store)
    started = threading.Event()
    db.submit(hold(0.2, started))
    started.wait()
    futures = [db.submit(lambda: service.create(agent, "x"), write=True) for _ in range(5)]
    for f in futures:
        with pytest.raises(Unavailable, match="disk full"):
            f.result(timeout=10)
    db.shutdown()
    assert store.audit_rows() == []
    with store._read() as cur:
        assert cur.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0


def test_reads_run_alone_and_in_order(store):
    db = DatabaseThread(store)
    order = []
    futures = [db.submit(lambda i=i: order.append(i) or i, write=i % 2 == 0)
               for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == list(range(10))
    assert order == list(range(10))
    db.shutdown()


def test_a_change_undone_inside_a_group_leaves_no_audit_row_or_counter(store, service, agent):
    """Inside a group commit the audit rows, counters and outbox rows of every change are
    written together at the end; a change whose savepoint is rolled back is dropped from
    that batch too."""
    from approvalctl import audit

    with store.group_commit():
        kept = service.create(agent, "kept")
        with pytest.raises(RuntimeError), store._write():
            undone = service.create(agent, "undone")
            raise RuntimeError("the job failed after its change")
        also = service.create(agent, "also-kept")
    assert store.get(undone.id) is None
    rows = store.audit_rows()
    assert [(r["seq"], r["request_id"]) for r in rows] == [(1, kept.id), (2, also.id)]
    assert audit.verify_chain(store.iter_audit()).ok
    totals = {(name, labels): value for name, labels, value in store.counters()}
    assert totals[("approval_requests_total", "status=pending")] == 2


def test_submit_async_hands_a_groups_results_back_to_the_loop(store, service, agent):
    import asyncio

    db = DatabaseThread(store)
    ran = []

    async def main():
        started = threading.Event()
        db.submit(hold(0.2, started))  # the writes below queue up behind this
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        futures = [db.submit_async(lambda i=i: service.create(agent, f"t{i}"), write=True)
                   for i in range(5)]
        bad = db.submit_async(lambda: service.cancel(agent, "zzzzzzzzzzzz"), write=True)
        gave_up = db.submit_async(lambda: ran.append("should not run"), write=True)
        gave_up.cancel()  # the caller left before the job started: it is not run
        created = await asyncio.gather(*futures)
        with pytest.raises(NotFound):
            await bad
        return created

    created = asyncio.run(main())
    db.shutdown()
    assert [r.tool_name for r in created] == [f"t{i}" for i in range(5)]
    assert all(store.get_status(r.id) == "pending" for r in created)
    assert ran == []

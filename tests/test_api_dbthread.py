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
        with real() as group:
            yield group

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
    real = store.group_commit

    @contextmanager
    def failing():
        with real() as group:
            yield group
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


def test_a_change_that_fails_half_way_is_run_again_alone(store, service, agent):
    """Changes in a group run without savepoints. One that fails part-way through its writes
    spoils the group: it is rolled back whole, and every change in it runs again on its own,
    so the others still succeed and the failed one leaves nothing behind."""
    from approvalctl import audit

    attempts = []

    def half_way():
        attempts.append(1)
        with store._write() as cur:
            store._exec(cur, "INSERT INTO metric_counters (name, labels, value) "
                        "VALUES ('half_way', '', 1)")
            store._exec(cur, "INSERT INTO requests (id) VALUES (NULL)")  # NOT NULL: fails

    db = DatabaseThread(store)
    started = threading.Event()
    db.submit(hold(0.2, started))
    started.wait()
    before = [db.submit(lambda i=i: service.create(agent, f"b{i}"), write=True)
              for i in range(3)]
    bad = db.submit(half_way, write=True)
    after = [db.submit(lambda i=i: service.create(agent, f"a{i}"), write=True)
             for i in range(3)]
    created = [f.result(timeout=10) for f in before + after]
    with pytest.raises(Unavailable):
        bad.result(timeout=10)
    db.shutdown()
    assert len(attempts) == 2  # once in the group, once alone
    assert all(store.get_status(r.id) == "pending" for r in created)
    rows = store.audit_rows()
    assert [r["request_id"] for r in rows] == [r.id for r in created]
    assert audit.verify_chain(store.iter_audit()).ok
    names = {name for name, _, _ in store.counters()}
    assert "half_way" not in names


def test_a_group_reads_each_key_once(store, service, agent):
    """Within one group commit the API reads each key once (memo); outside a group there
    is no memo, so every request reads the key afresh."""
    db = DatabaseThread(store)
    assert db.memo() is None
    seen = []
    started = threading.Event()
    db.submit(hold(0.2, started))
    started.wait()
    futures = [db.submit(lambda: seen.append(db.memo()), write=True) for _ in range(3)]
    for f in futures:
        f.result(timeout=10)
    db.shutdown()
    assert seen[0] is not None and all(m is seen[0] for m in seen)


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

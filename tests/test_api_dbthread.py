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


def _api_change(api, secret, func, *args):
    """A coroutine making one change through the API's own path (key looked up in the job)."""
    from approvalctl.server.app import Call

    call = Call(None, None)  # type: ignore[arg-type]
    call.secret = secret
    return api.change(call, func, *args)


def test_api_changes_in_one_group_read_the_key_once(store, service, admin, monkeypatch):
    """Within one group commit the API reads each key once; the next group reads it
    afresh, so a key revoked in between is refused."""
    import asyncio

    from approvalctl.config import Settings
    from approvalctl.errors import Unauthenticated
    from approvalctl.server.app import Api

    api = Api(store, Settings())
    secret, _ = service.create_key(admin, "grouped-bot", "user")
    reads = []
    real = api.service.principal_of
    monkeypatch.setattr(api.service, "principal_of", lambda s: reads.append(s) or real(s))

    async def group(n: int):
        started = threading.Event()
        api.db_thread.submit(hold(0.2, started))  # the changes queue up behind this
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        return await asyncio.gather(
            *(_api_change(api, secret, api.service.create, f"t{i}") for i in range(n)),
            return_exceptions=True)

    async def main():
        first = await group(5)
        assert len(reads) == 1 and all(r.user_id == "grouped-bot" for r in first)
        service.revoke_key(admin, "grouped-bot")
        second = await group(3)
        assert len(reads) == 1 + 3  # read afresh; a refused key is not memoised
        assert all(isinstance(r, Unauthenticated) for r in second)

    asyncio.run(main())
    api.close()
    assert len(store.audit_rows()) == 5


def test_a_change_run_again_alone_takes_no_second_rate_limit_token(store, service, admin):
    import asyncio

    from approvalctl.config import Settings
    from approvalctl.server.app import Api

    api = Api(store, Settings(rate_limit=1))  # one request per second, bursts of one
    secret, _ = service.create_key(admin, "limited-bot", "user")

    def half_way():
        with store._write() as cur:
            store._exec(cur, "INSERT INTO requests (id) VALUES (NULL)")  # spoils the group

    async def main():
        started = threading.Event()
        api.db_thread.submit(hold(0.2, started))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        return await asyncio.gather(_api_change(api, secret, api.service.create, "once"),
                                    api.write(half_way), return_exceptions=True)

    created, failed = asyncio.run(main())
    api.close()
    assert isinstance(failed, Unavailable)
    assert created.tool_name == "once" and store.get_status(created.id) == "pending"


def test_rbac_checks_of_a_spoiled_group_are_counted_once(store, service, agent):
    from approvalctl import counters

    def checks() -> float:
        store.flush_counters()
        return sum(v for n, _, v in store.counters() if n == counters.RBAC_CHECKS)

    def run(spoil: bool) -> float:
        before = checks()
        db = DatabaseThread(store)
        started = threading.Event()
        db.submit(hold(0.2, started))
        started.wait()
        futures = [db.submit(lambda: service.create(agent, "t"), write=True) for _ in range(3)]
        if spoil:
            def half_way():
                with store._write() as cur:
                    store._exec(cur, "INSERT INTO requests (id) VALUES (NULL)")
            futures.append(db.submit(half_way, write=True))
        for f in futures[:3]:
            f.result(timeout=10)
        db.shutdown()
        return checks() - before

    assert run(spoil=True) == run(spoil=False) > 0


def test_submit_async_hands_a_groups_results_back_to_the_loop(store, service, agent):
    import asyncio

    from approvalctl.server import dbthread

    db = DatabaseThread(store)
    ran, wakeups = [], []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counting(callback, *args, **kwargs):
            if callback is dbthread._settle:
                wakeups.append(len(args[0]))
            return real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting
        started = threading.Event()
        db.submit(hold(0.2, started))  # the writes below queue up behind this
        await loop.run_in_executor(None, started.wait)
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
    assert wakeups == [6]  # five creates and the 404: one wake-up of the loop for all


@pytest.mark.postgres
def test_a_pipelined_change_that_fails_is_run_again_alone(new_db, agent):
    """PostgreSQL's `pipeline=true`: a failing statement reports at the next sync. Each
    change in a group syncs at its end, so the failure spoils the group there and only it
    fails (not every change of the group at the COMMIT)."""
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    store = open_store(new_db("postgres") + "&pipeline=true")
    service = ApprovalService(store)

    def half_way():
        with store._write() as cur:
            store._exec(cur, "INSERT INTO requests (id) VALUES (NULL)")

    db = DatabaseThread(store)
    started = threading.Event()
    db.submit(hold(0.2, started))
    started.wait()
    good = [db.submit(lambda i=i: service.create(agent, f"p{i}"), write=True) for i in range(3)]
    bad = db.submit(half_way, write=True)  # last in the group: its error would surface late
    created = [f.result(timeout=10) for f in good]
    with pytest.raises(Unavailable):
        bad.result(timeout=10)
    db.shutdown()
    assert all(store.get_status(r.id) == "pending" for r in created)
    store.close()

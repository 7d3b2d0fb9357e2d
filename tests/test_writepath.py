"""The server's write path (approvalctl/server/writepath.py): each invariant of its module
docstring, on a real SQLite file and a real PostgreSQL schema (the `store` fixture runs
every test on both).

Groups are made the way the server makes them: a job holds the database thread while the
writes queue up behind it, so they run as one unit of work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pytest
from notify_support import notify_settings, webhook

from approvalctl import audit, counters
from approvalctl.config import Settings
from approvalctl.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
)
from approvalctl.limits import Quotas
from approvalctl.server import writepath
from approvalctl.server.app import Api
from approvalctl.server.writepath import DatabaseThread, WriteJob, service_in
from approvalctl.service import ApprovalService


def hold(seconds: float, started: threading.Event) -> Callable[[], None]:
    """A read job that keeps the database thread busy while writes queue up."""
    def work() -> None:
        started.set()
        time.sleep(seconds)
    return work


def queued_behind(db: DatabaseThread) -> None:
    started = threading.Event()
    db.submit(hold(0.3, started))
    started.wait()


def as_job(service: ApprovalService, func: Callable[..., Any]) -> Callable[[Any], Any]:
    """A write job calling `func(service bound to the unit of work)`."""
    return lambda uow: func(service_in(uow, service))


def half_way(uow: Any) -> None:
    """A change that fails part-way through its writes: it spoils its unit of work."""
    store = uow.store
    with store._write() as cur:
        store._exec(cur, "INSERT INTO metric_counters (name, labels, value) "
                    "VALUES ('half_way', '', 1)")
        store._exec(cur, "INSERT INTO requests (id) VALUES (NULL)")  # NOT NULL: fails


def rows(store, table: str) -> int:
    with store._read() as cur:
        return store._exec(cur, f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def rbac_checks(store) -> float:
    """RBAC checks written to the database (nothing flushed first)."""
    return sum(v for n, _, v in store.counters() if n == counters.RBAC_CHECKS)


def counting_units(store, monkeypatch, fail_commit: bool = False) -> list[int]:
    """Count the units of work opened; with `fail_commit`, each one's commit fails."""
    units: list[int] = []
    real = store.unit_of_work

    @contextmanager
    def unit():
        units.append(1)
        with real() as uow:
            yield uow
            if fail_commit:
                raise Unavailable("disk full")  # the commit fails: everything rolls back
    monkeypatch.setattr(store, "unit_of_work", unit)
    return units


# ---------------------------------------------------------------- 1. one thread; reads
def test_reads_run_alone_in_order_and_never_in_a_unit_of_work(store, monkeypatch):
    units = counting_units(store, monkeypatch)
    db = DatabaseThread(store)
    order = []
    futures = [db.submit(lambda i=i: order.append(i) or i) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == list(range(10))
    db.shutdown()
    assert order == list(range(10)) and units == []


# ---------------------------------------------------------------- 4. group commit
def test_queued_writes_share_one_unit_and_a_refusal_spoils_nothing(store, service, agent,
                                                                  monkeypatch):
    units = counting_units(store, monkeypatch)
    db = DatabaseThread(store)
    queued_behind(db)
    futures = [db.submit(as_job(service, lambda s, i=i: s.create(agent, f"tool{i}")),
                         write=True) for i in range(20)]
    bad = db.submit(as_job(service, lambda s: s.cancel(agent, "zzzzzzzzzzzz")), write=True)
    more = [db.submit(as_job(service, lambda s: s.create(agent, "after")), write=True)
            for _ in range(5)]
    created = [f.result(timeout=10) for f in futures + more]
    with pytest.raises(NotFound):
        bad.result(timeout=10)
    db.shutdown()
    assert len(units) == 1  # 26 writes, one transaction
    assert len({r.id for r in created}) == 25
    assert all(store.get_status(r.id) == "pending" for r in created)
    trail = store.audit_rows()
    assert [r["seq"] for r in trail] == list(range(1, 26))
    assert audit.verify_chain(store.iter_audit()).ok


# ---------------------------------------------------------------- 5. answered after commit
def test_a_failed_commit_fails_every_call_and_leaves_no_row(store, agent, monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s")
    hooked = ApprovalService(store, notify_settings(
        webhooks=[webhook("https://example.org/hook", ["created"])]))
    hooked.list(agent)  # an RBAC check buffered by a read, outside any unit of work

    def disk_full(*args: Any) -> None:  # the end of the unit: after the buffers are taken
        raise Unavailable("disk full")
    monkeypatch.setattr(store, "_insert_change_rows", disk_full)
    before = {t: rows(store, t) for t in ("requests", "audit_log", "metric_counters",
                                          "outbox")}
    db = DatabaseThread(store)
    queued_behind(db)
    futures = [db.submit(as_job(hooked, lambda s: s.create(agent, "x")), write=True)
               for _ in range(5)]
    for f in futures:
        with pytest.raises(Unavailable, match="disk full"):
            f.result(timeout=10)
    db.shutdown()
    monkeypatch.undo()
    assert {t: rows(store, t) for t in before} == before
    # the read's buffered check was put back: the next write counts it
    assert sum(v for n, _, v in store.tally.take() if n == counters.RBAC_CHECKS) == 1


# ---------------------------------------------------------------- 8. notification after
def test_change_notification_runs_once_the_commit_is_visible(store, service, agent, db_url):
    from approvalctl.store import open_store

    other = open_store(db_url)  # another connection: it sees only what was committed
    seen = []
    db = DatabaseThread(store)
    db.on_commit = lambda: seen.append(rows(other, "requests"))
    queued_behind(db)
    futures = [db.submit(as_job(service, lambda s: s.create(agent, "t")), write=True)
               for _ in range(3)]
    for f in futures:
        f.result(timeout=10)
    db.shutdown()
    other.close()
    assert seen == [3]  # once, for the group, after its commit


# ---------------------------------------------------------------- 6. spoiled: run again
def test_a_spoiled_group_runs_each_call_again_alone_with_its_own_answer(store, service,
                                                                       agent, monkeypatch):
    units = counting_units(store, monkeypatch)
    attempts = []

    def failing(uow):
        attempts.append(1)
        half_way(uow)

    db = DatabaseThread(store)
    queued_behind(db)
    before = [db.submit(as_job(service, lambda s, i=i: s.create(agent, f"b{i}")), write=True)
              for i in range(3)]
    bad = db.submit(failing, write=True)
    refused = db.submit(as_job(service, lambda s: s.cancel(agent, "zzzzzzzzzzzz")),
                        write=True)
    after = [db.submit(as_job(service, lambda s, i=i: s.create(agent, f"a{i}")), write=True)
             for i in range(3)]
    created = [f.result(timeout=10) for f in before + after]
    with pytest.raises(Unavailable):
        bad.result(timeout=10)
    with pytest.raises(NotFound):
        refused.result(timeout=10)
    db.shutdown()
    assert len(attempts) == 2  # once in the group, once alone
    assert len(units) == 1 + 8  # the group, then each of its eight calls alone
    # each caller got the request its own call made
    assert [r.tool_name for r in created] == ["b0", "b1", "b2", "a0", "a1", "a2"]
    assert all(store.get_status(r.id) == "pending" for r in created)
    assert [r["request_id"] for r in store.audit_rows()] == [r.id for r in created]
    assert audit.verify_chain(store.iter_audit()).ok
    assert "half_way" not in {name for name, _, _ in store.counters()}


def test_a_call_alone_that_fails_half_way_leaves_nothing(store, service, agent):
    db = DatabaseThread(store)
    with pytest.raises(Unavailable):
        db.submit(half_way, write=True).result(timeout=10)
    done = db.submit(as_job(service, lambda s: s.create(agent, "next")), write=True)
    assert done.result(timeout=10).tool_name == "next"
    db.shutdown()
    assert "half_way" not in {name for name, _, _ in store.counters()}
    assert rows(store, "requests") == 1


# ---------------------------------------------------------------- 7. counted once
def test_rbac_checks_of_a_rolled_back_unit_are_dropped(store, service, agent, monkeypatch):
    before = rbac_checks(store)
    counting_units(store, monkeypatch, fail_commit=True)
    db = DatabaseThread(store)
    queued_behind(db)
    futures = [db.submit(as_job(service, lambda s: s.create(agent, "t")), write=True)
               for _ in range(3)]
    for f in futures:
        with pytest.raises(Unavailable):
            f.result(timeout=10)
    db.shutdown()
    monkeypatch.undo()
    store.flush_counters()
    assert rbac_checks(store) == before


def test_rbac_checks_of_a_committed_unit_are_written_once_with_it(store, service, agent):
    before = rbac_checks(store)
    db = DatabaseThread(store)
    queued_behind(db)
    futures = [db.submit(as_job(service, lambda s: s.create(agent, "t")), write=True)
               for _ in range(3)]
    denied = db.submit(as_job(service, lambda s: s.list_keys(agent)), write=True)
    for f in futures:
        f.result(timeout=10)
    with pytest.raises(Forbidden, match="may not"):
        denied.result(timeout=10)
    db.shutdown()
    # written by the commit itself, not waiting in a buffer for a flush
    assert rbac_checks(store) == before + 4
    assert store.tally.take() == []
    store.flush_counters()
    assert rbac_checks(store) == before + 4


def test_rbac_checks_of_a_spoiled_group_are_counted_once(store, service, agent, monkeypatch):
    def run(spoil: bool) -> float:
        before = rbac_checks(store)
        db = DatabaseThread(store)
        queued_behind(db)
        futures = [db.submit(as_job(service, lambda s: s.create(agent, "t")), write=True)
                   for _ in range(3)]
        if spoil:
            futures.append(db.submit(half_way, write=True))
        for f in futures[:3]:
            f.result(timeout=10)
        if spoil:
            with pytest.raises(Unavailable):
                futures[3].result(timeout=10)
        db.shutdown()
        store.flush_counters()
        return rbac_checks(store) - before

    assert run(spoil=False) == 3
    units = counting_units(store, monkeypatch)
    assert run(spoil=True) == 3
    assert len(units) == 1 + 4  # the group was spoiled, then each call ran alone


def _api(store, **settings: Any) -> Api:
    return Api(store, Settings(**settings))


async def _through_thread(api: Api, *jobs: Any) -> list[Any]:
    """Queue `jobs` (write jobs) behind a held database thread, so they form one group."""
    started = threading.Event()
    api.db_thread.submit(hold(0.3, started))
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    return await asyncio.gather(*(api.db_thread.submit_async(j, write=True) for j in jobs),
                                return_exceptions=True)


def test_a_quota_is_counted_once_when_a_spoiled_group_runs_again(store, service, admin):
    """quotas.create_rate of 1 per second: the create is counted in the group, and not
    again when the spoiled group runs it alone (it would be refused if it were)."""
    api = _api(store, quotas=Quotas(create_rate=1))
    secret, _ = service.create_key(admin, "quota-bot", "user")
    job = WriteJob(api.service, secret, ApprovalService.create_idempotent, ("once",),
                   admit=api._limits(create=True))
    created, failed = asyncio.run(_through_thread(api, job, half_way))
    assert isinstance(failed, Unavailable)
    assert created[0].tool_name == "once" and job.admitted
    again = WriteJob(api.service, secret, ApprovalService.create_idempotent, ("twice",),
                     admit=api._limits(create=True))
    [refused] = asyncio.run(_through_thread(api, again))
    api.close()
    assert isinstance(refused, QuotaExceeded) and refused.quota == "create_rate"
    assert rows(store, "requests") == 1


def test_a_call_run_again_alone_takes_no_second_rate_limit_token(store, service, admin):
    api = _api(store, rate_limit=1)  # one request per second, bursts of one
    secret, _ = service.create_key(admin, "limited-bot", "user")
    job = WriteJob(api.service, secret, ApprovalService.create_idempotent, ("once",),
                   admit=api._limits(create=True))
    created, failed = asyncio.run(_through_thread(api, job, half_way))
    api.close()
    assert isinstance(failed, Unavailable)
    assert created[0].tool_name == "once" and store.get_status(created[0].id) == "pending"


# ---------------------------------------------------------------- 2. the key in the job
def test_the_key_is_read_once_per_group_and_a_revoked_key_is_refused(store, service, admin,
                                                                    monkeypatch):
    api = _api(store)
    secret, _ = service.create_key(admin, "grouped-bot", "user")
    reads = []
    real = ApprovalService.principal_of
    monkeypatch.setattr(ApprovalService, "principal_of",
                        lambda self, s: reads.append(s) or real(self, s))

    def jobs(n: int) -> list[WriteJob]:
        return [WriteJob(api.service, secret, ApprovalService.create_idempotent, (f"t{i}",))
                for i in range(n)]

    first = asyncio.run(_through_thread(api, *jobs(5)))
    assert len(reads) == 1 and all(r[0].user_id == "grouped-bot" for r in first)
    service.revoke_key(admin, "grouped-bot")
    second = asyncio.run(_through_thread(api, *jobs(3)))
    api.close()
    assert len(reads) == 1 + 3  # read afresh; a refused key is not memoised
    assert all(isinstance(r, Unauthenticated) for r in second)
    assert rows(store, "requests") == 5


# ---------------------------------------------------------------- 3. the order of errors
def test_a_job_answers_the_key_then_the_limit_then_the_request(store, service, admin):
    api = _api(store, rate_limit=1)
    secret, _ = service.create_key(admin, "ordered-bot", "user")
    unknown = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    bad_body = InvalidInput("tool_name is required")

    def refusal(key: str) -> WriteJob:
        return WriteJob(api.service, key, refusal=bad_body, admit=api._limits(create=True))

    [first] = asyncio.run(_through_thread(api, refusal(unknown)))
    assert isinstance(first, Unauthenticated)  # 401 before the body's 400
    [second] = asyncio.run(_through_thread(api, refusal(secret)))
    assert second is bad_body  # the token of this second is spent on it
    [third] = asyncio.run(_through_thread(api, refusal(secret)))
    api.close()
    assert isinstance(third, QuotaExceeded)  # 429 before the body's 400


# ---------------------------------------------------------------- delivery to the loop
def test_submit_async_hands_a_groups_results_back_to_the_loop(store, service, agent):
    db = DatabaseThread(store)
    ran, wakeups = [], []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counting(callback, *args, **kwargs):
            if callback is writepath._settle:
                wakeups.append(len(args[0]))
            return real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        started = threading.Event()
        db.submit(hold(0.3, started))  # the writes below queue up behind this
        await loop.run_in_executor(None, started.wait)
        futures = [db.submit_async(as_job(service, lambda s, i=i: s.create(agent, f"t{i}")),
                                   write=True) for i in range(5)]
        bad = db.submit_async(as_job(service, lambda s: s.cancel(agent, "zzzzzzzzzzzz")),
                              write=True)
        gave_up = db.submit_async(lambda uow: ran.append("should not run"), write=True)
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


# ---------------------------------------------------------------- PostgreSQL's pipeline
@pytest.mark.postgres
def test_a_pipelined_change_that_fails_is_run_again_alone(new_db, agent):
    """PostgreSQL's `pipeline=true`: a failing statement reports at the next sync. Each
    change in a group syncs at its end, so the failure spoils the group there and only it
    fails (not every change of the group at the COMMIT)."""
    from approvalctl.store import open_store

    store = open_store(new_db("postgres") + "&pipeline=true")
    service = ApprovalService(store)
    db = DatabaseThread(store)
    queued_behind(db)
    good = [db.submit(as_job(service, lambda s, i=i: s.create(agent, f"p{i}")), write=True)
            for i in range(3)]
    bad = db.submit(half_way, write=True)  # last in the group: its error would surface late
    created = [f.result(timeout=10) for f in good]
    with pytest.raises(Unavailable):
        bad.result(timeout=10)
    db.shutdown()
    assert all(store.get_status(r.id) == "pending" for r in created)
    store.close()


@pytest.mark.postgres
def test_a_call_that_loses_a_race_on_a_unique_key_runs_once_more(new_db, agent,
                                                                  monkeypatch):
    """PostgreSQL: another process inserted the same idempotency key and committed after
    this call looked for it. The insert fails and aborts the unit's transaction; the call
    runs once more in a fresh one, finds the winner's row and replays its answer."""
    from approvalctl.store import open_store
    from approvalctl.store.sql import SQLStore

    store = open_store(new_db("postgres"))
    service = ApprovalService(store)
    first, _ = service.create_idempotent(agent, "deploy", idempotency_key="k1")
    real = SQLStore._idempotent
    looks = []

    def not_yet(self, cur, owner, key):  # the first run's two looks miss the winner's row
        looks.append(key)
        return None if len(looks) <= 2 else real(self, cur, owner, key)

    monkeypatch.setattr(SQLStore, "_idempotent", not_yet)
    db = DatabaseThread(store)
    done = db.submit(as_job(service, lambda s: s.create_idempotent(
        agent, "deploy", idempotency_key="k1")), write=True)
    req, replayed = done.result(timeout=10)
    db.shutdown()
    assert replayed and req.id == first.id and len(looks) == 3
    assert rows(store, "requests") == 1
    store.close()

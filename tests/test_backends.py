"""The guarantees both stores must give under concurrency, run on SQLite and PostgreSQL.

Racing deciders get one winner, concurrent writers keep one unbroken audit chain, a reused
idempotency key makes one request, two sweeping processes expire each overdue request once,
and processes opening a fresh database at the same moment agree on one schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from conftest import bulk_create, env_for

from approvalctl import counters
from approvalctl.errors import ApprovalConflict
from approvalctl.models import Principal, to_iso, utcnow
from approvalctl.store import open_store
from approvalctl.store.schema import MIGRATIONS
from approvalctl.store.sql import TABLES


def test_fresh_database_gets_every_migration_once(db_url):
    store = open_store(db_url)
    try:
        state = store.migration_state()
        assert [m["name"] for m in state] == [name for name, _ in MIGRATIONS]
        assert all(m["applied_at"] for m in state)
        for table in TABLES:  # every table exists and starts empty
            with store._read() as cur:
                assert store._exec(cur, f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    finally:
        store.close()
    again = open_store(db_url)
    try:
        assert again.migrate() == []
        assert again.migration_state() == state
    finally:
        again.close()


def test_processes_opening_a_fresh_database_at_once_agree(db_url):
    script = ("import json, sys; from approvalctl.store import open_store; "
              "s = open_store(sys.argv[1]); print(json.dumps(s.migration_state())); s.close()")
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env_for(db_url))
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    states = [json.loads(out) for out, _ in outs]
    assert all(s == states[0] for s in states)
    assert [m["name"] for m in states[0]] == [name for name, _ in MIGRATIONS]


def test_racing_deciders_get_exactly_one_winner(service, agent):
    deciders = [Principal(name=f"op{i}", role="operator") for i in range(8)]
    req = service.create(agent, "deploy", {"env": "prod"})
    barrier = threading.Barrier(len(deciders))

    def decide(op: Principal) -> str:
        barrier.wait()
        try:
            service.decide(op, req.id, "approve" if int(op.name[2:]) % 2 else "reject")
            return "won"
        except ApprovalConflict:
            return "conflict"

    with ThreadPoolExecutor(len(deciders)) as pool:
        results = list(pool.map(decide, deciders))
    assert results.count("won") == 1 and results.count("conflict") == 7
    final = service.get(deciders[0], req.id)
    assert final.decided_by == deciders[results.index("won")].name
    decisions = [r for r in service.store.audit_rows(request_id=req.id)
                 if r["action"] in ("approve", "reject")]
    assert len(decisions) == 1


def test_concurrent_writers_keep_one_audit_chain(service, agent, operator, admin):
    def work(n: int) -> None:
        for i in range(15):
            req = service.create(agent, f"tool-{n}", {"i": i})
            if i % 2:
                service.decide(operator, req.id, "approve")
            else:
                service.cancel(agent, req.id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    result = service.audit_verify(admin)
    assert result.ok, result.problem
    assert result.rows == 4 * 15 * 2
    seqs = [r["seq"] for r in service.store.audit_rows()]
    assert seqs == list(range(1, 121))


def test_reused_idempotency_key_makes_one_request_under_a_race(service, agent, operator):
    barrier = threading.Barrier(6)

    def create(_: int) -> tuple[str, bool]:
        barrier.wait()
        req, replay = service.create_idempotent(agent, "deploy", {"v": 1},
                                                idempotency_key="k-1")
        return req.id, replay

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert len({rid for rid, _ in results}) == 1
    assert sorted(replay for _, replay in results) == [False] + [True] * 5
    assert len(service.list(operator, status="all").items) == 1


def test_numbers_from_the_store_are_json_numbers(service, agent, operator):
    req = service.create(agent, "deploy")
    service.decide(operator, req.id, "approve")
    stats = service.stats(operator)
    text = json.dumps(stats)  # Decimal (PostgreSQL's AVG) would not serialise
    assert isinstance(stats["response_time_seconds"]["avg"], float), text
    assert all(isinstance(v, float) for _, _, v in service.store.counters())


SWEEPER = """
import json, sys, time
from pathlib import Path
from approvalctl.service import ApprovalService
from approvalctl.store import open_store
store = open_store(sys.argv[1])
svc = ApprovalService(store)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
expired = []
while True:
    now = __import__("approvalctl.models").models.to_iso(
        __import__("approvalctl.models").models.utcnow())
    batch = store.expire_overdue(now, svc._expiry_changes(now), batch=250)
    if not batch:
        break
    expired.extend(batch)
store.close()
print(json.dumps(expired))
"""


@pytest.mark.slow
def test_two_sweeping_processes_expire_each_request_exactly_once(db_url, store, admin, service,
                                                                 tmp_path):
    past = to_iso(utcnow() - timedelta(hours=2))
    overdue = bulk_create(store, 3000, created_at=past, ttl_seconds=60)
    current = bulk_create(store, 50)  # not yet due: must stay pending
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SWEEPER, db_url, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_for(db_url)) for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    first, second = (json.loads(out) for out, _ in outs)
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(overdue)
    assert len(first) + len(second) == len(overdue)
    counts = {(n, lab): v for n, lab, v in store.counters()}
    assert counts[(counters.TIMEOUT_TOTAL, "")] == len(overdue)
    assert counts[(counters.REQUESTS_TOTAL, counters.labels(status="expired"))] == len(overdue)
    expiries = [r for r in store.audit_rows() if r["action"] == "expire"]
    assert len(expiries) == len(overdue)
    assert service.audit_verify(admin).ok
    assert {store.get_status(i) for i in current} == {"pending"}

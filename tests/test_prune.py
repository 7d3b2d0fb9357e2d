"""Retention: `prune` removes old decided requests and their outbox rows, and the audit
trail still verifies (each pruned request gets a `prune` audit row; audit rows stay)."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest
from conftest import CliRunner
from notify_support import notify_settings, webhook

from approvalctl.cli import app
from approvalctl.errors import Forbidden, InvalidInput
from approvalctl.models import utcnow
from approvalctl.service import ApprovalService

DAY = 86400


@pytest.fixture
def history(store, monkeypatch, agent, operator, admin):
    """Four requests decided 100 days ago (approved, rejected, cancelled, expired), one
    still pending from then, one approved today; every event queues a webhook row."""
    if getattr(store, "server_clock", False):
        pytest.skip("on PostgreSQL the database server's clock stamps every change, so a "
                    "service clock cannot make requests 100 days old (prune's SQL is shared)")
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s")
    settings = notify_settings(webhooks=[webhook("https://example.org/hook",
                                                 ["created", "decided", "expired"])])
    then = utcnow() - timedelta(days=100)
    old = ApprovalService(store, settings, clock=lambda: then)
    new = ApprovalService(store, settings)
    ids = {name: old.create(agent, "deploy", {"n": name}, ttl_seconds=600).id
           for name in ("approved", "rejected", "cancelled", "expired")}
    ids["pending"] = old.create(agent, "deploy", {"n": "pending"}, ttl_seconds=30 * DAY).id
    old.decide(operator, ids["approved"], "approve")
    old.decide(operator, ids["rejected"], "reject")
    old.cancel(agent, ids["cancelled"])
    ApprovalService(store, settings, clock=lambda: then + timedelta(hours=1)).sweep()
    ids["recent"] = new.create(agent, "deploy", {"n": "recent"}).id
    new.decide(operator, ids["recent"], "approve")
    assert new.audit_verify(admin).ok
    return new, ids


OLD = ("approved", "rejected", "cancelled", "expired")


def test_prune_deletes_old_decided_requests_and_verify_still_passes(history, store, admin):
    svc, ids = history
    outbox_before = len(store.list_outbox(limit=1000))
    audit_before = len(store.audit_rows())

    plan = svc.prune(admin, 90 * DAY, dry_run=True)
    assert (plan["dry_run"], plan["requests"], plan["outbox"]) == (True, 4, 8)
    assert len(store.list_outbox(limit=1000)) == outbox_before  # a dry run deletes nothing

    done = svc.prune(admin, 90 * DAY)
    assert (done["requests"], done["outbox"]) == (4, 8)
    for name in OLD:
        assert store.get(ids[name]) is None
    for name in ("pending", "recent"):
        assert store.get(ids[name]) is not None  # pending never goes; recent is kept
    left = {r["request_id"] for r in store.list_outbox(limit=1000)}
    assert left == {ids["pending"], ids["recent"]}
    rows = store.audit_rows()
    assert len(rows) == audit_before + 4  # audit rows stay; one prune row per request
    pruned = [r for r in rows if r["action"] == "prune"]
    assert sorted(r["request_id"] for r in pruned) == sorted(ids[n] for n in OLD)
    assert {r["from_status"] for r in pruned} == set(OLD)
    result = svc.audit_verify(admin)
    assert result.ok, result.problem
    assert svc.prune(admin, 90 * DAY)["requests"] == 0  # nothing twice


def test_a_pruned_request_put_back_behind_the_tools_back_is_named(history, store, admin,
                                                                   raw_db):
    svc, ids = history
    rid = ids["approved"]
    row = raw_db.fetch_dict("SELECT * FROM requests WHERE id = ?", (rid,))
    svc.prune(admin, 90 * DAY)
    cols = list(row)
    raw_db.execute(f"INSERT INTO requests ({', '.join(cols)}) VALUES "
                   f"({', '.join('?' * len(cols))})", [row[c] for c in cols])
    result = svc.audit_verify(admin)
    assert not result.ok and result.request_id == rid
    assert "pruned" in result.problem


def test_deleting_a_request_is_not_a_prune(history, raw_db, admin):
    """Audit rows of a missing request are a finding unless a prune row recorded it."""
    svc, ids = history
    raw_db.execute("DELETE FROM requests WHERE id = ?", (ids["rejected"],))
    result = svc.audit_verify(admin)
    assert not result.ok and "deleted behind the tool's back" in result.problem


def test_prune_is_for_admins_and_keeps_at_least_a_day(history, operator, admin, store):
    svc, ids = history
    with pytest.raises(Forbidden):
        svc.prune(operator, 90 * DAY)
    for bad in (0, 3600, -5, True, "90d"):
        with pytest.raises(InvalidInput, match="older-than"):
            svc.prune(admin, bad)  # type: ignore[arg-type]
    assert store.get(ids["approved"]) is not None


def test_prune_on_every_backend_cuts_at_the_services_clock(store, agent, operator, admin):
    """The `history` cases need requests stamped 100 days ago, which PostgreSQL's clock
    forbids; here the rows are stamped now and the pruner's clock is 100 days ahead, so the
    shared prune SQL runs on both backends: final rows go, pending stays, verify holds."""
    now = ApprovalService(store)
    done = [now.create(agent, "deploy", {"n": i}).id for i in range(3)]
    now.decide(operator, done[0], "approve")
    now.decide(operator, done[1], "reject")
    now.cancel(agent, done[2])
    waiting = now.create(agent, "deploy", {"n": "waiting"}, ttl_seconds=30 * DAY).id
    later = ApprovalService(store, clock=lambda: utcnow() + timedelta(days=100))
    assert later.prune(admin, 90 * DAY, dry_run=True)["requests"] == 3
    assert later.prune(admin, 90 * DAY)["requests"] == 3
    assert [store.get(i) for i in done] == [None, None, None]
    assert store.get(waiting).status == "pending"
    result = now.audit_verify(admin)
    assert result.ok, result.problem


# ---------------------------------------------------------------- CLI
def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def test_cli_prune_needs_yes_off_a_terminal(history, db_url, store):
    _, ids = history
    refused = run("--db", db_url, "prune", "--older-than", "90d")
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr and "\n" not in refused.stderr.strip()
    assert store.get(ids["approved"]) is not None

    dry = run("--db", db_url, "prune", "--older-than", "90d", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["requests"] == 4
    assert store.get(ids["approved"]) is not None

    done = run("--db", db_url, "prune", "--older-than", "90d", "--yes")
    assert done.exit_code == 0 and "deleted 4 requests" in done.stderr
    assert store.get(ids["approved"]) is None
    verified = run("--db", db_url, "audit", "verify")
    assert verified.exit_code == 0, verified.stderr


@pytest.mark.slow
def test_cli_prune_asks_on_a_terminal(history, db_url, store, tmp_path):
    import pexpect

    _, ids = history
    exe = shutil.which("approvalctl")
    child = pexpect.spawn(exe, ["--db", db_url, "prune", "--older-than", "90d"],
                          encoding="utf-8", timeout=30, cwd=str(tmp_path))
    child.expect(r"Delete 4 decided requests created before .* and 8 notification rows\?")
    child.sendline("n")
    child.expect("nothing deleted")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert store.get(ids["approved"]) is not None

    child = pexpect.spawn(exe, ["--db", db_url, "prune", "--older-than", "90d"],
                          encoding="utf-8", timeout=30, cwd=str(tmp_path))
    child.expect(r"Delete 4 decided requests")
    child.sendline("y")
    child.expect("deleted 4 requests")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert store.get(ids["approved"]) is None


# ---------------------------------------------------------------- remote
def test_remote_prune_anchor_and_verify(history, make_server, store):
    _, ids = history
    live = make_server()
    admin_client, operator_client = live.client("admin"), live.client("operator")
    with pytest.raises(Forbidden):
        operator_client.prune(90 * DAY)
    with pytest.raises(InvalidInput):
        admin_client.prune(60)
    assert admin_client.prune(90 * DAY, dry_run=True)["requests"] == 4
    assert store.get(ids["approved"]) is not None
    assert admin_client.prune(90 * DAY)["requests"] == 4
    assert store.get(ids["approved"]) is None

    head = admin_client.audit_anchor()
    seq, hash_ = store.audit_head()
    assert head == {"seq": seq, "hash": hash_}
    assert admin_client.audit_verify([f"{seq}:{hash_}", f"1:{store.audit_rows()[0]['hash']}"]
                                      ).ok
    gone = admin_client.audit_verify([f"{seq + 5}:{hash_}"])
    assert not gone.ok and "gone" in gone.problem
    with pytest.raises(InvalidInput):
        admin_client.audit_verify(["1:xyz"])
    with pytest.raises(Forbidden):
        operator_client.audit_anchor()

"""The outbox: rows written with each state change, claimed under a lease, outcomes fenced."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from notify_support import notify_settings, webhook

from approvalctl.config import Settings
from approvalctl.errors import InvalidInput
from approvalctl.models import to_iso, utcnow
from approvalctl.service import ApprovalService


def iso(seconds: float = 0) -> str:
    return to_iso(utcnow() + timedelta(seconds=seconds))


@pytest.fixture
def hooked(store, monkeypatch) -> ApprovalService:
    """A service whose config sends every event to Slack and `created` to a webhook."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s")
    settings = notify_settings(
        slack={"webhook_url": "https://hooks.slack.com/services/T/B/X",
               "events": ["created", "decided", "expired"]},
        webhooks=[webhook("https://example.org/hook", ["created"])])
    return ApprovalService(store, settings)


def test_each_event_writes_one_row_per_channel_in_the_same_transaction(hooked, store,
                                                                        agent, operator):
    req = hooked.create(agent, "deploy", {"env": "prod"}, reason="ship it")
    rows = store.list_outbox()
    assert sorted((r["event"], r["channel"]) for r in rows) == [
        ("created", "slack"), ("created", "webhook:0")]
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows)
    snapshot = json.loads(rows[0]["payload"])
    assert snapshot["id"] == req.id and snapshot["arguments"] == {"env": "prod"}

    hooked.decide(operator, req.id, "approve", "ok")
    decided = [r for r in store.list_outbox() if r["event"] == "decided"]
    assert [r["channel"] for r in decided] == ["slack"]
    assert json.loads(decided[0]["payload"])["status"] == "approved"


def test_expiry_writes_expired_rows(hooked, store, agent):
    hooked.create(agent, "deploy", ttl_seconds=0.001)
    import time

    time.sleep(0.01)
    assert len(hooked.sweep()) == 1
    assert [r["channel"] for r in store.list_outbox() if r["event"] == "expired"] == ["slack"]


def test_no_channels_no_rows(service, store, agent):
    service.create(agent, "deploy")
    assert store.list_outbox() == []


def test_unknown_event_name_in_config_is_a_clear_error(store, agent):
    settings = Settings(db="", notifications={"slack": {"webhook_url": "https://x.test/",
                                                        "events": ["create"]}})
    with pytest.raises(InvalidInput, match=r"notifications\.slack\.events\[0\]: unknown event "
                                           r"'create'"):
        ApprovalService(store, settings).create(agent, "deploy")
    assert store.list_requests(status=None, tool_name=None, user_id=None, after=None,
                               descending=False, limit=10) == []


def test_claim_leases_rows_and_a_second_claim_skips_them(hooked, store, agent):
    hooked.create(agent, "deploy")
    first = store.claim_outbox(now=iso(), lease_until=iso(60), limit=10)
    assert len(first) == 2 and all(r["claimed_until"] for r in first)
    assert store.claim_outbox(now=iso(), lease_until=iso(60), limit=10) == []


def test_an_expired_lease_makes_the_row_claimable_again(hooked, store, agent):
    hooked.create(agent, "deploy")
    first = store.claim_outbox(now=iso(), lease_until=iso(60), limit=10)
    # 61 s later the first worker is presumed dead: its rows go to whoever claims next.
    again = store.claim_outbox(now=iso(61), lease_until=iso(121), limit=10)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in first)
    # The dead worker's lease no longer fences anything: its late outcome is refused.
    assert not store.record_delivery(first[0]["id"], lease=first[0]["claimed_until"],
                                     channel=first[0]["channel"], result="sent", at=iso())
    assert store.get_outbox(first[0]["id"])["status"] == "pending"


def test_retry_is_stored_durably_and_not_due_before_its_time(hooked, store, agent, db_url):
    hooked.create(agent, "deploy")
    row = store.claim_outbox(now=iso(), lease_until=iso(60), limit=1)[0]
    assert store.record_delivery(row["id"], lease=row["claimed_until"], channel="slack",
                                 result="retry", at=iso(), error="HTTP 503",
                                 next_attempt_at=iso(30))
    # A new process (a fresh store on the same file) sees the backoff, not a reset.
    from approvalctl.store import open_store

    fresh = open_store(db_url)
    try:
        stored = fresh.get_outbox(row["id"])
        assert (stored["attempts"], stored["last_error"], stored["claimed_until"]) == \
            (1, "HTTP 503", None)
        claimable = fresh.claim_outbox(now=iso(), lease_until=iso(60), limit=10)
        assert row["id"] not in [r["id"] for r in claimable]
        later = fresh.claim_outbox(now=iso(31), lease_until=iso(90), limit=10)
        assert row["id"] in [r["id"] for r in later]
    finally:
        fresh.close()


def test_outcomes_bump_the_delivery_counter_in_the_same_transaction(hooked, store, agent):
    hooked.create(agent, "deploy")
    rows = store.claim_outbox(now=iso(), lease_until=iso(60), limit=10)
    by_channel = {r["channel"]: r for r in rows}
    store.record_delivery(by_channel["slack"]["id"], lease=by_channel["slack"]["claimed_until"],
                          channel="slack", result="sent", at=iso())
    store.record_delivery(by_channel["webhook:0"]["id"],
                          lease=by_channel["webhook:0"]["claimed_until"], channel="webhook:0",
                          result="failed", at=iso(), error="HTTP 400")
    counts = {(n, lab): v for n, lab, v in store.counters()
              if n == "notification_deliveries_total"}
    assert counts == {("notification_deliveries_total", "channel=slack,result=sent"): 1,
                      ("notification_deliveries_total", "channel=webhook,result=failed"): 1}
    assert store.get_outbox(by_channel["webhook:0"]["id"])["status"] == "failed"
    assert [r["channel"] for r in store.list_outbox(status="sent")] == ["slack"]


def test_requeue_one_or_all_failed(hooked, store, agent):
    hooked.create(agent, "a")
    hooked.create(agent, "b")
    for r in store.claim_outbox(now=iso(), lease_until=iso(60), limit=10):
        store.record_delivery(r["id"], lease=r["claimed_until"], channel=r["channel"],
                              result="failed", at=iso(), error="HTTP 404")
    failed = store.list_outbox(status="failed")
    assert len(failed) == 4
    assert store.requeue_outbox(now=iso(), outbox_id=failed[0]["id"]) == 1
    row = store.get_outbox(failed[0]["id"])
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert store.requeue_outbox(now=iso()) == 3
    assert store.list_outbox(status="failed") == []
    assert len(store.claim_outbox(now=iso(), lease_until=iso(60), limit=10)) == 4


def test_a_request_created_and_decided_in_one_group_keeps_both_snapshots(hooked, store,
                                                                          agent, operator):
    """Inside one group commit each change keeps its own notification payload: the
    `created` row shows the request as created, the `decided` row as decided."""
    from approvalctl.server.writepath import service_in

    with store.unit_of_work() as uow:
        service = service_in(uow, hooked)
        req = service.create(agent, "deploy")
        service.decide(operator, req.id, "approve")
    payloads = {(r["event"], r["channel"]): json.loads(r["payload"])["status"]
                for r in store.list_outbox()}
    assert payloads == {("created", "slack"): "pending", ("created", "webhook:0"): "pending",
                        ("decided", "slack"): "approved"}

"""The outbox and schema reads/changes the local faces make go through the service: the
role matrix applies, the checks are counted, and bad input is refused there once."""

from __future__ import annotations

import pytest

from approvalctl import counters
from approvalctl.config import Settings
from approvalctl.copy import CopyReport
from approvalctl.errors import ApprovalConflict, Forbidden, InvalidInput, NotFound
from approvalctl.models import Principal
from approvalctl.service import ApprovalService

VIEWER = Principal(name="vera", role="viewer")


@pytest.fixture
def notifying(store) -> ApprovalService:
    slack = {"webhook_url": "https://hooks.slack.com/services/T0/B0/X", "events": ["created"]}
    return ApprovalService(store, Settings(db="", notifications={"slack": slack}))


def test_list_outbox_needs_read_all(notifying, agent, operator) -> None:
    req = notifying.create(agent, "deploy", {}, reason="ship")
    [row] = notifying.list_outbox(VIEWER)
    assert (row["id"], row["request_id"], row["status"]) == (1, req.id, "pending")
    assert notifying.list_outbox(operator, status="sent") == []
    with pytest.raises(Forbidden, match="may not read the notification outbox"):
        notifying.list_outbox(agent)  # rows carry other users' requests


@pytest.mark.parametrize("kw, message", [
    ({"status": "done"}, "unknown status 'done': expected one of pending, sent, failed, skipped"),
    ({"limit": 0}, "limit must be between 1 and 10000, got 0"),
    ({"limit": True}, "limit must be between 1 and 10000, got True"),
])
def test_list_outbox_refuses_bad_input(notifying, operator, kw, message) -> None:
    with pytest.raises(InvalidInput) as info:
        notifying.list_outbox(operator, **kw)
    assert str(info.value) == message


def test_retry_notification_is_an_operator_change(notifying, store, agent, operator) -> None:
    notifying.create(agent, "deploy", {}, reason="ship")
    for who in (agent, VIEWER):
        with pytest.raises(Forbidden, match="may not retry notifications"):
            notifying.retry_notification(who, 1)
    assert notifying.retry_notification(operator, 1)["channel"] == "slack"
    assert notifying.retry_notification(operator) == 0  # nothing failed
    with pytest.raises(NotFound, match="no notification #9 in the outbox"):
        notifying.retry_notification(operator, 9)
    lease = "2000-01-01T00:00:00.000Z"
    [claimed] = store.claim_outbox(now="2999-01-01T00:00:00.000Z", lease_until=lease, limit=1)
    store.record_delivery(claimed["id"], lease=claimed["claimed_until"], channel="slack",
                          result="sent", at="2999-01-01T00:00:00.000Z")
    with pytest.raises(ApprovalConflict, match="was already sent"):
        notifying.retry_notification(operator, 1)


def test_the_checks_are_counted(notifying, agent) -> None:
    notifying.store.tally.take()
    notifying.list_outbox(VIEWER)
    with pytest.raises(Forbidden):
        notifying.retry_notification(VIEWER)
    rows = notifying.store.tally.take()
    assert sorted((r[1], r[2]) for r in rows if r[0] == counters.RBAC_CHECKS) == [
        (counters.labels(result="allowed"), 1), (counters.labels(result="denied"), 1)]


def test_migration_state_through_the_service(service, agent) -> None:
    rows = service.migration_state(VIEWER)
    assert rows and all(r["applied_at"] for r in rows)
    with pytest.raises(Forbidden, match="may not read the schema state"):
        service.migration_state(agent)


def test_a_copy_report_without_the_audit_check_is_not_ok() -> None:
    report = CopyReport(source="a.db", target="b.db", dry_run=False, resumed=False)
    assert report.problems() == ["the audit chain on the target was not checked"]
    assert not report.ok

"""The service: every rule about creating, deciding, expiring and reading requests."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from approvalctl.config import Settings
from approvalctl.errors import (
    ApprovalConflict,
    Forbidden,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from approvalctl.models import Principal, utcnow
from approvalctl.service import ApprovalService


def test_create_fills_every_field(service, agent) -> None:
    req = service.create(agent, "git_push", {"branch": "main"}, reason="release",
                         risk="high", ttl_seconds=600)
    assert req.status == "pending"
    assert req.user_id == "deploy-bot"
    assert req.arguments == {"branch": "main"}
    assert req.risk == "high"
    assert req.created_at.endswith("Z") and req.expires_at > req.created_at
    stored = service.store.get(req.id)
    assert stored == req


@pytest.mark.parametrize("kwargs,needle", [
    ({"tool_name": ""}, "tool_name"),
    ({"tool_name": "x" * 201}, "tool_name"),
    ({"tool_name": "t", "arguments": [1, 2]}, "JSON object"),
    ({"tool_name": "t", "arguments": "s"}, "JSON object"),
    ({"tool_name": "t", "risk": "extreme"}, "risk"),
    ({"tool_name": "t", "ttl_seconds": 0}, "ttl"),
    ({"tool_name": "t", "ttl_seconds": -5}, "ttl"),
    ({"tool_name": "t", "ttl_seconds": 86400 * 31}, "ttl"),
    ({"tool_name": "t", "arguments": {"x": float("nan")}}, "JSON"),
    ({"tool_name": "t", "reason": 5}, "reason"),
])
def test_invalid_creation_is_refused_and_stores_nothing(service, agent, kwargs, needle) -> None:
    kwargs = dict(kwargs)  # the parameter dict is shared by the sqlite and postgres runs
    tool = kwargs.pop("tool_name")
    with pytest.raises(InvalidInput) as err:
        service.create(agent, tool, **kwargs) if "arguments" not in kwargs else \
            service.create(agent, tool, kwargs.pop("arguments"), **kwargs)
    assert needle in err.value.detail
    assert service.store.list_requests(status=None, tool_name=None, user_id=None, after=None,
                                       descending=False, limit=10) == []
    assert service.store.audit_rows() == []


def test_approve_records_decider_note_and_audit(service, agent, operator) -> None:
    req = service.create(agent, "deploy")
    done = service.decide(operator, req.id, "approve", "looks fine")
    assert (done.status, done.decided_by, done.decision_note) == ("approved", "olivia",
                                                                  "looks fine")
    rows = service.store.audit_rows(request_id=req.id)
    assert [(r["action"], r["from_status"], r["to_status"], r["actor"]) for r in rows] == [
        ("create", None, "pending", "deploy-bot"), ("approve", "pending", "approved", "olivia")]


@pytest.mark.parametrize("first", ["approve", "reject"])
@pytest.mark.parametrize("second", ["approve", "reject"])
def test_a_decided_request_cannot_be_decided_again(service, agent, operator, first,
                                                   second) -> None:
    req = service.create(agent, "deploy")
    service.decide(operator, req.id, first)
    with pytest.raises(ApprovalConflict) as err:
        service.decide(operator, req.id, second)
    assert "already" in err.value.detail
    with pytest.raises(ApprovalConflict):
        service.cancel(operator, req.id)
    assert len(service.store.audit_rows(request_id=req.id)) == 2


def test_nobody_decides_their_own_request(service, admin) -> None:
    req = service.create(admin, "deploy")
    with pytest.raises(Forbidden) as err:
        service.decide(admin, req.id, "approve")
    assert "own request" in err.value.detail
    assert service.store.get(req.id).status == "pending"


def test_self_approval_when_the_config_allows_it(store, admin) -> None:
    service = ApprovalService(store, Settings(allow_self_approval=True))
    req = service.create(admin, "deploy")
    assert service.decide(admin, req.id, "approve").status == "approved"


def test_local_operator_may_file_on_behalf_of_an_agent(service) -> None:
    local = Principal("alice", "admin", local=True)
    req = service.create(local, "deploy", user_id="bot")
    assert req.user_id == "bot"
    assert service.decide(local, req.id, "approve").decided_by == "alice"


def test_api_callers_cannot_pretend_to_be_someone_else(service, agent) -> None:
    with pytest.raises(Forbidden):
        service.create(agent, "deploy", user_id="someone-else")


def test_roles(service, agent, operator) -> None:
    viewer = Principal("vic", "viewer")
    req = service.create(agent, "deploy")
    for who in (agent, viewer):
        with pytest.raises(Forbidden):
            service.decide(who, req.id, "approve")
    with pytest.raises(Forbidden):
        service.create(viewer, "deploy")
    with pytest.raises(Forbidden):
        service.create(operator, "deploy")
    with pytest.raises(Forbidden):
        service.stats(agent)
    with pytest.raises(Forbidden):
        service.audit_list(operator)
    assert service.get(viewer, req.id).id == req.id


def test_users_see_and_cancel_only_their_own(service, agent, operator) -> None:
    other = Principal("other-bot", "user")
    mine = service.create(agent, "deploy")
    theirs = service.create(other, "deploy")
    with pytest.raises(NotFound):
        service.get(agent, theirs.id)
    with pytest.raises(NotFound):
        service.cancel(agent, theirs.id)
    assert [r.id for r in service.list(agent).items] == [mine.id]
    assert service.list(agent, user_id="other-bot").items == []
    assert service.cancel(agent, mine.id).status == "cancelled"
    assert len(service.list(operator).items) == 1


def test_id_prefixes(service, agent, operator) -> None:
    req = service.create(agent, "deploy")
    assert service.get(operator, req.id[:20].upper()).id == req.id
    with pytest.raises(NotFound):
        service.get(operator, "zzzzzz")
    with pytest.raises(InvalidInput):
        service.get(operator, "not-an-id!")
    other = service.create(agent, "deploy")
    common = 0
    while req.id[common] == other.id[common]:
        common += 1
    with pytest.raises(InvalidInput) as err:
        service.get(operator, req.id[:common])
    assert "ambiguous" in err.value.detail


def test_list_orders_and_pages(service, agent, operator) -> None:
    ids = [service.create(agent, f"tool{i % 3}").id for i in range(7)]
    page = service.list(operator, limit=3)
    assert [r.id for r in page.items] == ids[:3]
    page2 = service.list(operator, limit=3, cursor=page.next_cursor)
    page3 = service.list(operator, limit=3, cursor=page2.next_cursor)
    assert [r.id for r in page2.items + page3.items] == ids[3:]
    assert page3.next_cursor is None
    for rid in ids[:2]:
        service.decide(operator, rid, "approve")
    assert [r.id for r in service.list(operator, status="approved").items] == ids[1::-1]
    assert [r.id for r in service.list(operator, status="all").items] == ids[::-1]
    assert {r.tool_name for r in service.list(operator, tool_name="tool1").items} == {"tool1"}
    with pytest.raises(InvalidInput):
        service.list(operator, status="bogus")
    for bad in (0, -1, 10**9):
        with pytest.raises(InvalidInput):
            service.list(operator, limit=bad)
    with pytest.raises(InvalidInput):
        service.list(operator, cursor="garbage")


def test_sweep_expires_overdue_only_once(store, agent, operator) -> None:
    if store.server_clock:
        pytest.skip("on PostgreSQL the database server's clock decides, not the service's "
                    "(tests/test_trust.py checks that with skewed service clocks)")
    now = [utcnow()]
    service = ApprovalService(store, Settings(), clock=lambda: now[0])
    due = [service.create(agent, "t", ttl_seconds=60).id for _ in range(3)]
    fresh = service.create(agent, "t", ttl_seconds=3600).id
    service.decide(operator, due[0], "reject")
    now[0] += timedelta(seconds=61)
    assert sorted(service.sweep(operator)) == sorted(due[1:])
    assert service.sweep(operator) == []
    assert store.get(fresh).status == "pending"
    assert store.get(due[1]).status == "expired"
    assert store.get(due[0]).status == "rejected"
    counters = {(n, lab): v for n, lab, v in store.counters()}
    assert counters[("approval_timeout_total", "")] == 2
    assert counters[("approval_requests_total", "status=expired")] == 2


def test_a_pending_list_never_shows_an_overdue_request_and_writes_nothing(
        service, store, agent, operator) -> None:
    """Pending means pending now: an overdue request (no sweep yet) is left out of the
    pending page by the query itself, without the page writing its expiry; the expired
    page still lists it as expired."""
    due = service.create(agent, "t", ttl_seconds=0.3)
    live = service.create(agent, "t", ttl_seconds=3600)
    deadline = time.monotonic() + 30
    while store.get_status(due.id) == "pending" and \
            store.has_overdue(service._now_iso()) is False and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = len(store.audit_rows())
    for _ in range(2):
        assert [r.id for r in service.list(operator, status="pending").items] == [live.id]
        assert [r.id for r in service.list(agent, status="pending").items] == [live.id]
    assert len(store.audit_rows()) == rows  # a read of what is pending recorded nothing
    assert store.get_status(due.id) == "pending"  # not swept: the filter did the work
    assert [(r.id, r.status) for r in service.list(operator, status="expired").items] == [
        (due.id, "expired")]


def test_wait_returns_when_the_ttl_passes_without_a_sweep(service, agent) -> None:
    req = service.create(agent, "t", ttl_seconds=0.3)
    assert service.wait(agent, req.id, timeout=5, poll_interval=0.05).status == "expired"


def test_wait_times_out_while_pending(service, agent) -> None:
    req = service.create(agent, "t")
    assert service.wait(agent, req.id, timeout=0.1, poll_interval=0.05).status == "pending"


def test_stats(store, agent, operator) -> None:
    if store.server_clock:
        pytest.skip("on PostgreSQL the database server's clock decides, not the service's "
                    "(tests/test_trust.py checks that with skewed service clocks)")
    now = [utcnow().replace(microsecond=0)]
    service = ApprovalService(store, Settings(), clock=lambda: now[0])
    ids = [service.create(agent, "t").id for _ in range(5)]
    now[0] += timedelta(seconds=10)
    service.decide(operator, ids[0], "approve")
    service.decide(operator, ids[1], "approve")
    now[0] += timedelta(seconds=20)
    service.decide(operator, ids[2], "reject")
    service.cancel(operator, ids[3])
    stats = service.stats(operator, 3600)
    assert stats["by_status"] == {"pending": 1, "approved": 2, "rejected": 1, "expired": 0,
                                  "cancelled": 1}
    assert stats["total"] == 5
    assert stats["approval_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["rejection_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert stats["response_time_seconds"] == {"avg": pytest.approx(50 / 3, abs=0.01),
                                              "p50": 10.0, "p95": 30.0}
    assert stats["oldest_pending_age_seconds"] == pytest.approx(30, abs=0.01)
    counters = {(n, lab): v for n, lab, v in store.counters()}
    assert counters[("approval_response_time_seconds_bucket", "le=10")] == 2
    assert counters[("approval_response_time_seconds_bucket", "le=30")] == 3
    assert counters[("approval_response_time_seconds_count", "")] == 3


def test_idempotent_create(service, agent) -> None:
    first, replay1 = service.create_idempotent(agent, "t", {"a": 1}, idempotency_key="k1")
    again, replay2 = service.create_idempotent(agent, "t", {"a": 1}, idempotency_key="k1")
    assert (replay1, replay2) == (False, True)
    assert again == first
    with pytest.raises(IdempotencyMismatch):
        service.create_idempotent(agent, "t", {"a": 2}, idempotency_key="k1")
    other = Principal("other-bot", "user")
    assert service.create(other, "t", {"a": 1}, idempotency_key="k1").id != first.id
    assert len(service.store.audit_rows()) == 2


def test_api_keys(service, admin, agent) -> None:
    secret, info = service.create_key(admin, "ci-bot", "user")
    assert info["role"] == "user" and secret.startswith(info["key_prefix"])
    assert secret not in repr(service.store.list_keys())
    assert service.authenticate(secret) == Principal("ci-bot", "user")
    typo = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad, needle in ((None, "missing"), ("", "missing"), ("nonsense", "malformed"),
                        (typo, "malformed")):
        with pytest.raises(Unauthenticated) as err:
            service.authenticate(bad)
        assert needle in err.value.detail
    with pytest.raises(Forbidden):
        service.create_key(agent, "x", "admin")
    with pytest.raises(ApprovalConflict):
        service.create_key(admin, "ci-bot", "user")
    with pytest.raises(InvalidInput):
        service.create_key(admin, "y", "superuser")
    service.revoke_key(admin, "ci-bot")
    with pytest.raises(Unauthenticated) as err:
        service.authenticate(secret)
    assert "revoked" in err.value.detail
    assert [k["state"] for k in service.list_keys(admin)] == ["revoked"]


def test_expired_key_is_refused(store, admin) -> None:
    now = [utcnow()]
    service = ApprovalService(store, Settings(), clock=lambda: now[0])
    secret, _ = service.create_key(admin, "temp", "viewer", expires_seconds=60)
    assert service.authenticate(secret).role == "viewer"
    now[0] += timedelta(seconds=61)
    with pytest.raises(Unauthenticated) as err:
        service.authenticate(secret)
    assert "expired" in err.value.detail


def test_rbac_checks_are_counted_durably(service, agent, operator) -> None:
    service.create(agent, "t")
    with pytest.raises(Forbidden):
        service.stats(agent)
    service.store.flush_counters()
    counters = {(n, lab): v for n, lab, v in service.store.counters()}
    assert counters[("rbac_permission_checks_total", "result=denied")] == 1
    assert counters[("rbac_permission_checks_total", "result=allowed")] >= 1


def test_response_time_is_the_same_by_id_and_by_prefix(store, agent, operator) -> None:
    """A decision by full id takes the one-statement path (no read first); a decision by
    prefix resolves the id first. Both store the same whole milliseconds, worked out by the
    database from the stored created_at, and feed the same histogram bucket."""
    if store.server_clock:
        pytest.skip("on PostgreSQL the database server's clock decides, not the service's "
                    "(tests/test_trust.py checks that with skewed service clocks)")
    now = [utcnow().replace(microsecond=123456)]
    service = ApprovalService(store, Settings(), clock=lambda: now[0])
    at_once, one_statement = service._decide_at_once, []

    def spy(*args):
        done = at_once(*args)
        one_statement.append(done is not None)
        return done

    service._decide_at_once = spy
    by_id, by_prefix, later = (service.create(agent, "t", ttl_seconds=4 * 86400)
                               for _ in range(3))
    # created_at is stored as .123 (milliseconds); decided 1.235455 s later by the clock
    now[0] += timedelta(seconds=1, microseconds=234999)
    service.decide(operator, by_id.id, "approve", note="ok")
    service.decide(operator, by_prefix.id[:20], "reject")
    now[0] += timedelta(days=3)
    service.decide(operator, later.id, "approve")
    assert one_statement == [True, False, True]  # by id, by prefix, by id
    with store._read() as cur:
        ms = dict(store._exec(cur, "SELECT id, response_ms FROM requests").fetchall())
    assert ms[by_id.id] == ms[by_prefix.id] == 1235
    assert ms[later.id] == 3 * 86_400_000 + 1235
    decided = store.get(by_id.id)
    assert decided.decision_note == "ok" and decided.decided_by == operator.name
    assert decided.decided_at > decided.created_at
    from approvalctl.counters import RESPONSE_TIME

    series = {(n, lab): v for n, lab, v in store.counters() if n.startswith(RESPONSE_TIME)}
    assert (RESPONSE_TIME + "_bucket", "le=1") not in series
    assert series[(RESPONSE_TIME + "_bucket", "le=5")] == 2
    assert series[(RESPONSE_TIME + "_bucket", "le=+Inf")] == 3
    assert series[(RESPONSE_TIME + "_count", "")] == 3
    assert series[(RESPONSE_TIME + "_sum", "")] == pytest.approx(3 * 1.235455 + 3 * 86400)
    rows = [r for r in store.audit_rows() if r["action"] in ("approve", "reject")]
    assert [(r["request_id"], r["to_status"]) for r in rows] == [
        (by_id.id, "approved"), (by_prefix.id, "rejected"), (later.id, "approved")]

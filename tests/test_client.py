"""`approvalctl.Client` against a real server: the same models and errors as the service."""

from __future__ import annotations

import threading
import time

import pytest

import approvalctl
from approvalctl import errors
from approvalctl.audit import VerifyResult
from approvalctl.client import ApprovalDenied, Client, require_approval
from approvalctl.models import ApprovalRequest, Page


def test_client_is_exported_from_the_package():
    assert approvalctl.Client is Client


def test_create_get_list_decide_round_trip(live):
    agent, ops = live.client("user"), live.client("operator")
    req = agent.create("git_push", {"branch": "main"}, reason="release", risk="high",
                       ttl_seconds=600)
    assert isinstance(req, ApprovalRequest)
    assert req.user_id == "agent-bot" and req.status == "pending"
    assert agent.get(req.id[:12]) == req
    page = ops.list(status="pending", tool_name="git_push", limit=10)
    assert isinstance(page, Page) and [r.id for r in page.items] == [req.id]
    done = ops.decide(req.id, "approve", "ship it")
    assert (done.status, done.decided_by, done.decision_note) == ("approved", "olivia",
                                                                  "ship it")
    assert agent.get(req.id).status == "approved"
    agent.close()
    ops.close()


def test_list_all_statuses_and_pages(live):
    agent = live.client("user")
    ids = [agent.create("t").id for _ in range(5)]
    agent.cancel(ids[0])
    first = agent.list(status="all", limit=2)
    second = agent.list(status="all", limit=2, cursor=first.next_cursor)
    third = agent.list(status="all", limit=2, cursor=second.next_cursor)
    got = [r.id for p in (first, second, third) for r in p.items]
    assert got == list(reversed(ids)) and third.next_cursor is None
    assert agent.list(status=None).items == agent.list(status="all").items


@pytest.mark.parametrize("call,exc,words", [
    (lambda c: c.get("0000000000000000000000000z"), errors.NotFound, "no approval request"),
    (lambda c: c.list(status="maybe"), errors.InvalidInput, "status"),
    (lambda c: c.list(limit=0), errors.InvalidInput, "limit"),
    (lambda c: c.decide("0000000000000000000000000z", "approve"), errors.Forbidden,
     "may not approve"),
    (lambda c: c.create("x", user_id="someone"), errors.Forbidden, "user_id"),
    (lambda c: c.stats(), errors.Forbidden, "stats"),
    (lambda c: c.audit_verify(), errors.Forbidden, "audit"),
])
def test_errors_are_the_core_exceptions(live, call, exc, words):
    with live.client("user") as client, pytest.raises(exc) as info:
        call(client)
    assert words in info.value.detail


def test_conflict_carries_the_current_status(live):
    req = live.client("user").create("x")
    ops = live.client("operator")
    ops.decide(req.id, "reject")
    with pytest.raises(errors.ApprovalConflict) as info:
        ops.decide(req.id, "approve")
    assert info.value.current_status == "rejected" and info.value.exit_code == 4


def test_idempotency_mismatch_and_rate_limit_map_to_their_exceptions(make_server):
    live = make_server(rate_limit=2)
    client = live.client("user")
    client.create("x", idempotency_key="k1")
    with pytest.raises(errors.IdempotencyMismatch):
        client.create("y", idempotency_key="k1")
    with pytest.raises(errors.RateLimited) as info:
        for _ in range(5):
            client.list()
    assert info.value.retry_after >= 1 and info.value.exit_code == 5


def test_bad_or_revoked_keys_are_unauthenticated(live):
    with Client(live.url, "actl_nope") as client, pytest.raises(errors.Unauthenticated):
        client.list()
    key = live.key("short-lived", "viewer")
    with Client(live.url, key) as client:
        client.list()
        live.client("admin").revoke_key("short-lived")
        with pytest.raises(errors.Unauthenticated, match="revoked"):
            client.list()


def test_unreachable_server_is_unavailable_with_a_clear_message():
    from conftest import free_port

    port = free_port()
    with Client(f"http://127.0.0.1:{port}", "k") as client, \
            pytest.raises(errors.Unavailable) as info:
        client.list()
    assert info.value.exit_code == 6
    assert f"cannot reach approvalctl server at http://127.0.0.1:{port}" in info.value.detail


def test_bad_server_url_is_invalid_input():
    with pytest.raises(errors.InvalidInput, match="http://"):
        Client("127.0.0.1:8020", "k")


def test_wait_returns_when_decided_and_times_out_pending(live):
    agent, ops = live.client("user"), live.client("operator")
    req = agent.create("deploy")
    start = time.monotonic()
    assert agent.wait(req.id, timeout=0.5).status == "pending"
    assert time.monotonic() - start >= 0.45
    timer = threading.Timer(0.3, ops.decide, args=(req.id, "approve"))
    timer.start()
    done = agent.wait(req.id[:10], timeout=20)
    timer.join()
    assert done.status == "approved"


def test_sweep_stats_audit_and_keys(live):
    agent, ops, admin = live.client("user"), live.client("operator"), live.client("admin")
    overdue = agent.create("x", ttl_seconds=0.05)
    time.sleep(0.1)
    swept = ops.sweep()
    assert swept in ([overdue.id], [])  # the background sweep may already have done it
    assert agent.get(overdue.id).status == "expired"
    stats = ops.stats(3600)
    assert stats["by_status"]["expired"] == 1 and stats["window_seconds"] == 3600
    rows = admin.audit_list(request_id=overdue.id)
    assert [r["action"] for r in rows] == ["create", "expire"]
    assert admin.audit_list(limit=1)[0]["action"] == "expire"
    result = admin.audit_verify()
    assert isinstance(result, VerifyResult) and result.ok
    secret, record = admin.create_key("ci", "user", expires_seconds=3600)
    assert secret.startswith("actl_") and record["name"] == "ci" and "key" not in record
    assert record["expires_at"] is not None
    assert "ci" in {k["name"] for k in admin.list_keys()}
    admin.revoke_key("ci")
    with pytest.raises(errors.ApprovalConflict):
        admin.revoke_key("ci")
    with pytest.raises(errors.NotFound):
        admin.revoke_key("nobody")


# ---------------------------------------------------------------- require_approval
def test_require_approval_runs_the_function_once_approved(live):
    ops = live.client("operator")
    ran = []

    @require_approval(live.client("user"), reason="clean up", risk="high", timeout=20)
    def delete_branch(name: str, force: bool = False) -> str:
        ran.append(name)
        return f"deleted {name}"

    def approve_when_it_appears() -> None:
        for _ in range(100):
            items = ops.list(tool_name="delete_branch").items
            if items:
                assert items[0].arguments == {"name": "old", "force": True}
                ops.decide(items[0].id, "approve")
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_when_it_appears)
    approver.start()
    assert delete_branch(name="old", force=True) == "deleted old"
    approver.join()
    assert ran == ["old"]


def test_require_approval_raises_on_rejection_and_never_runs(live):
    ops = live.client("operator")

    @require_approval(live.client("user"), "rm_rf", timeout=20)
    def dangerous() -> None:
        raise AssertionError("must not run")

    def reject_when_it_appears() -> None:
        for _ in range(100):
            items = ops.list(tool_name="rm_rf").items
            if items:
                ops.decide(items[0].id, "reject", "no way")
                return
            time.sleep(0.05)

    rejecter = threading.Thread(target=reject_when_it_appears)
    rejecter.start()
    with pytest.raises(ApprovalDenied) as info:
        dangerous()
    rejecter.join()
    assert info.value.request.status == "rejected"
    assert info.value.exit_code == 10
    assert "rejected by olivia: no way" in info.value.detail


def test_require_approval_raises_on_expiry(live):
    @require_approval(live.client("user"), ttl_seconds=0.2, timeout=10)
    def never() -> None:
        raise AssertionError("must not run")

    with pytest.raises(ApprovalDenied) as info:
        never()
    assert info.value.request.status == "expired" and info.value.exit_code == 11


def _decide_when_it_appears(ops, tool: str, action: str = "approve", before=None):
    def run() -> None:
        for _ in range(200):
            items = ops.list(tool_name=tool).items
            if items:
                if before is not None:
                    before(items[0])
                ops.decide(items[0].id, action)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_require_approval_binds_by_parameter_name_and_consumes_before_running(live):
    """Positional or keyword, defaults filled in: one request shape; the approval is
    consumed before the function runs, and it runs with exactly the approved values."""
    import datetime
    import decimal
    import enum
    import pathlib
    import uuid

    from approvalctl.digest import digest

    class Env(enum.Enum):
        PROD = "prod"

    ops, agent = live.client("operator"), live.client("user")
    seen = []

    @require_approval(agent, timeout=30)
    def deploy(service, when, *, env=Env.PROD, amount=decimal.Decimal("10.10"),
               paths=(pathlib.Path("/srv/a"),), tags=frozenset({"b", "a"}),
               run_id=uuid.UUID(int=1), day=datetime.date(2026, 1, 2)):
        got = agent.list(status="approved", tool_name="deploy").items[0]
        seen.append((service, when, env, amount, paths, tags, run_id, day, got.consumed_at))
        return "ok"

    expected = {"service": "api", "when": "2026-01-02T03:04:05+00:00", "env": "prod",
                "amount": "10.10", "paths": ["/srv/a"], "tags": ["a", "b"],
                "run_id": "00000000-0000-0000-0000-000000000001", "day": "2026-01-02"}
    shown = []
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    approver = _decide_when_it_appears(ops, "deploy", before=shown.append)
    assert deploy("api", when) == "ok"
    approver.join()
    assert shown[0].arguments == expected
    assert shown[0].digest == digest("deploy", expected)
    assert seen[0][:8] == ("api", when, Env.PROD, decimal.Decimal("10.10"),
                           (pathlib.Path("/srv/a"),), frozenset({"a", "b"}), uuid.UUID(int=1),
                           datetime.date(2026, 1, 2))
    assert seen[0][8] is not None  # consumed before the function ran
    approver = _decide_when_it_appears(ops, "deploy", before=shown.append)
    assert deploy(service="api", when=when) == "ok"  # keywords: the same call
    approver.join()
    assert shown[1].digest == shown[0].digest


def test_require_approval_runs_what_was_approved_even_if_the_caller_mutates(live):
    ops, agent = live.client("operator"), live.client("user")
    ran = []
    files = ["a.txt"]

    @require_approval(agent, timeout=30)
    def remove(paths):
        ran.append(list(paths))

    def tamper(item) -> None:  # the caller's list changes while the operator looks
        files.append("/etc/passwd")

    approver = _decide_when_it_appears(ops, "remove", before=tamper)
    remove(files)
    approver.join()
    assert ran == [["a.txt"]]


@pytest.mark.parametrize("call,words", [
    (lambda f: f(object()), "argument 'x' is a object, which has no JSON form"),
    (lambda f: f(b"bytes"), "is a bytes"),
    (lambda f: f({1: "a"}), "key 1 that is not a string"),
    (lambda f: f(1, 2), "too many positional arguments"),
    (lambda f: f(2**60), "RFC 8785"),
    (lambda f: f(float("nan")), "RFC 8785"),
])
def test_require_approval_refuses_values_without_a_json_form(live, call, words):
    agent = live.client("user")

    @require_approval(agent, "probe", timeout=5)
    def probe(x):
        raise AssertionError("must not run")

    with pytest.raises(errors.InvalidInput) as info:
        call(probe)
    assert words in info.value.detail
    assert agent.list(status="all", tool_name="probe").items == []


def test_require_approval_withdraws_the_request_when_its_wait_times_out(live):
    agent = live.client("user")

    @require_approval(agent, "slow_op", timeout=0.5)
    def slow_op():
        raise AssertionError("must not run")

    with pytest.raises(ApprovalDenied) as info:
        slow_op()
    assert info.value.exit_code == 124 and "withdrawn" in info.value.detail
    assert info.value.request.status == "cancelled"
    with pytest.raises(errors.ApprovalConflict):  # nobody can approve it any more
        live.client("operator").approve(info.value.request.id)


def test_agent_helpers_are_exported():
    assert approvalctl.require_approval is require_approval
    assert approvalctl.ApprovalDenied is ApprovalDenied
    assert issubclass(ApprovalDenied, errors.ApprovalctlError)


def test_a_proxy_in_the_way_is_reported_not_a_traceback(httpx_mock):
    httpx_mock.add_response(status_code=502, text="<html>Bad Gateway</html>")
    httpx_mock.add_response(status_code=500, json={"detail": "boom"})
    with Client("http://approvals.invalid", "k") as client:
        with pytest.raises(errors.Unavailable, match="HTTP 502"):
            client.list()
        with pytest.raises(errors.ApprovalctlError, match="server error .HTTP 500.: boom"):
            client.list()


@pytest.mark.parametrize("body", [b"id: 7\nevent: created\ndata: {not json\n\n",
                                  b"id: seven\nevent: created\ndata: {}\n\n"])
def test_a_mangled_event_stream_is_one_named_error(body):
    """A stream that is not approvalctl's (a proxy rewriting it) ends the iteration with
    the client's own error, which review/watch report and retry, not a bare ValueError."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import serve_in_thread

    class Mangled(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Mangled)
    serve_in_thread(server)
    try:
        client = Client(f"http://127.0.0.1:{server.server_address[1]}", "ak_x", timeout=5)
        with pytest.raises(errors.ApprovalctlError, match="not approvalctl's"):
            next(client.events(reconnect=False))
        client.close()
    finally:
        server.shutdown()
        server.server_close()

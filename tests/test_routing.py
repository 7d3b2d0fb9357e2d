"""The server's routing and error mapping are Starlette's own (routes per path, exception
handlers): what a client sees of them, on a real server over 127.0.0.1."""

from __future__ import annotations

import logging

import httpx

from approvalctl import metrics
from approvalctl.service import ApprovalService

API = "/api/v1/approvals"


def test_an_unexpected_error_is_a_logged_500_problem_without_traceback(live, monkeypatch,
                                                                       caplog):
    def broken(self, *args, **kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(ApprovalService, "stats", broken)
    with caplog.at_level(logging.ERROR, logger="approvalctl.server"):
        r = httpx.get(f"{live.url}{API}/stats", headers=live.headers("viewer"), timeout=10)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Internal error"
    assert "Traceback" not in r.text and "secret internals" not in r.text
    assert any("unhandled error in GET /api/v1/approvals/stats" in m
               for m in caplog.messages)


def test_head_is_served_as_get_without_a_body(live):
    r = httpx.head(f"{live.url}/healthz", timeout=10)
    assert r.status_code == 200 and r.content == b""


def test_a_refused_method_is_counted_under_its_route_template(live):
    def count() -> float:
        want = {API + "/{id}", "PATCH", "405"}
        return sum(s.value for m in metrics.HTTP_REQUESTS.collect() for s in m.samples
                   if s.name.endswith("_total") and set(s.labels.values()) == want)

    before = count()
    r = httpx.request("PATCH", f"{live.url}{API}/01m8bt6m8w02a0t5fyr96x74zx",
                      headers=live.headers("operator"), timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PUT"
    assert "PATCH is not allowed on /api/v1/approvals/{id}" in r.json()["detail"]
    assert count() == before + 1


def test_a_bad_body_with_a_revoked_key_is_401_and_writes_nothing(live):
    key = live.key("soon-revoked", "user")
    live.service.revoke_key(_admin(), "soon-revoked")
    before = len(live.store.audit_rows())
    r = httpx.put(f"{live.url}{API}/01m8bt6m8w02a0t5fyr96x74zx", content=b"{not json",
                  headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert len(live.store.audit_rows()) == before


def _admin():
    from approvalctl.models import Principal

    return Principal("test-admin", "admin", local=True)

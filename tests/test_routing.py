"""The server's routing and error mapping are Starlette's own (routes per path, exception
handlers): what a client sees of them, on a real server over 127.0.0.1."""

from __future__ import annotations

import json
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
    # the decision-link route too: its template, never the link's token, names it
    r = httpx.request("PUT", f"{live.url}/d/v1.secret-token.mac", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert "/d/{token}" in r.json()["detail"] and "secret-token" not in r.text


def test_a_bad_body_with_a_revoked_key_is_401_and_writes_nothing(live):
    key = live.key("soon-revoked", "user")
    live.service.revoke_key(_admin(), "soon-revoked")
    before = len(live.store.audit_rows())
    r = httpx.put(f"{live.url}{API}/01m8bt6m8w02a0t5fyr96x74zx", content=b"{not json",
                  headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert len(live.store.audit_rows()) == before


def test_key_and_rule_changes_are_jobs_with_the_same_order_of_errors(live):
    """API-key and policy-rule changes go through the write path like request changes: a
    revoked admin key with a bad body is a 401, not the body's 400, and writes nothing; a
    good one changes the rules and the keys, each with its audit row."""
    key = live.key("soon-gone", "admin")
    live.service.revoke_key(_admin(), "soon-gone")
    before = len(live.store.audit_rows())
    for method, path in (("POST", "/api/v1/rules"), ("POST", "/api/v1/keys"),
                         ("POST", "/api/v1/rules/import"), ("DELETE", "/api/v1/rules/x"),
                         ("DELETE", "/api/v1/keys/x")):
        r = httpx.request(method, f"{live.url}{path}", content=b"{not json",
                          headers={"X-API-Key": key, "Content-Type": "application/json"},
                          timeout=10)
        assert r.status_code == 401 and "revoked" in r.json()["detail"], (path, r.text)
    assert len(live.store.audit_rows()) == before
    admin = {"X-API-Key": live.key("admin2", "admin")}
    with httpx.Client(base_url=live.url, headers=admin, timeout=10) as web:
        r = web.post("/api/v1/rules", json={"name": "reads", "tools": ["fs.read"],
                                            "action": "allow"})
        assert r.status_code == 201 and r.json()["name"] == "reads"
        r = web.post("/api/v1/keys", json={"name": "bot7", "role": "user"})
        assert r.status_code == 201 and r.json()["key"] and r.headers["location"].endswith(
            "/api/v1/keys/bot7")
        assert web.delete("/api/v1/keys/bot7").json()["revoked_at"]
        assert web.delete("/api/v1/rules/reads").json()["name"] == "reads"
        r = web.post("/api/v1/rules/import", json={"rules": [
            {"name": "a", "tools": ["x"], "action": "deny"}], "replace": True})
        assert r.status_code == 200 and [x["name"] for x in r.json()] == ["a"]
        assert web.post("/api/v1/rules", json={"name": "a", "tools": ["y"],
                                               "action": "allow"}).status_code == 409
    rows = live.store.audit_rows()[before:]
    assert [(a["actor"], a["action"]) for a in rows] == [
        ("test-admin", "key_create"), ("admin2", "rule_add"), ("admin2", "key_create"),
        ("admin2", "key_revoke"), ("admin2", "rule_remove"), ("admin2", "rules_import")]
    detail = rows[2]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail == {"name": "bot7", "role": "user", "expires_at": None}  # never a secret
    assert live.service.audit_verify(_admin()).ok


def _admin():
    from approvalctl.models import Principal

    return Principal("test-admin", "admin", local=True)

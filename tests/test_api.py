"""The HTTP API against a real uvicorn server on 127.0.0.1: the happy paths, roles, auth,
idempotency, rate limiting, and the endpoints beyond the approvals."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from approvalctl.digest import digest

API = "/api/v1/approvals"


def create(http: httpx.Client, live, role: str = "user", **body) -> dict:
    body.setdefault("tool_name", "git_push")
    r = http.post(API, json=body, headers=live.headers(role))
    assert r.status_code == 201, r.text
    return r.json()


def assert_problem(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    data = r.json()
    assert data["status"] == status
    assert data["type"].startswith("urn:approvalctl:problem:")
    assert data["title"]
    for word in words:
        assert word.lower() in data["detail"].lower(), data["detail"]
    return data


# ---------------------------------------------------------------- approvals
def test_create_returns_201_location_and_the_callers_name(http, live):
    r = http.post(API, json={"tool_name": "git_push", "arguments": {"branch": "main"},
                             "reason": "release", "risk": "high", "ttl_seconds": 120},
                  headers=live.headers("user"))
    assert r.status_code == 201
    data = r.json()
    assert r.headers["location"] == f"{API}/{data['id']}"
    assert data["user_id"] == "agent-bot"
    assert data["status"] == "pending"
    assert data["arguments"] == {"branch": "main"}
    assert data["risk"] == "high"
    assert set(data) == {"id", "tool_name", "arguments", "reason", "risk", "user_id",
                         "status", "created_at", "expires_at", "decided_at", "decided_by",
                         "decision_note", "digest", "use_by", "consumed_at"}
    assert data["digest"] == digest("git_push", {"branch": "main"})
    assert http.get(r.headers["location"], headers=live.headers("user")).json() == data


def test_bearer_authentication_works_like_x_api_key(http, live):
    r = http.get(API, headers={"Authorization": f"Bearer {live.keys['viewer']}"})
    assert r.status_code == 200


def test_operator_approves_and_a_second_decision_is_409(http, live):
    req = create(http, live)
    r = http.put(f"{API}/{req['id'][:10]}", json={"action": "approve", "note": "ok"},
                 headers=live.headers("operator"))
    assert r.status_code == 200
    assert r.json()["status"] == "approved"
    assert r.json()["decided_by"] == "olivia"
    assert r.json()["decision_note"] == "ok"
    again = http.put(f"{API}/{req['id']}", json={"action": "reject"},
                     headers=live.headers("operator"))
    data = assert_problem(again, 409, "already approved")
    assert data["current_status"] == "approved"


def test_cancel_own_request_then_409(http, live):
    req = create(http, live)
    r = http.delete(f"{API}/{req['id']}", headers=live.headers("user"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert_problem(http.delete(f"{API}/{req['id']}", headers=live.headers("user")), 409)


def test_list_filters_and_pages_with_an_opaque_cursor(http, live):
    ids = [create(http, live, tool_name="deploy" if i % 2 else "git_push")["id"]
           for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "tool_name": "git_push"}
        if cursor:
            params["cursor"] = cursor
        page = http.get(API, params=params, headers=live.headers("viewer")).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[0::2]  # pending: oldest first, only git_push
    mine = http.get(API, params={"user_id": "agent-bot", "status": "all"},
                    headers=live.headers("viewer")).json()
    assert len(mine["items"]) == 7 and mine["next_cursor"] is None


def test_a_user_key_sees_only_its_own_requests(http, live):
    other = live.key("other-bot", "user")
    theirs = http.post(API, json={"tool_name": "x"}, headers={"X-API-Key": other}).json()
    mine = create(http, live)
    listed = http.get(API, headers=live.headers("user")).json()["items"]
    assert [r["id"] for r in listed] == [mine["id"]]
    assert_problem(http.get(f"{API}/{theirs['id']}", headers=live.headers("user")), 404,
                   "no approval request")
    assert_problem(http.delete(f"{API}/{theirs['id']}", headers=live.headers("user")), 404)
    assert live.store.get_status(theirs["id"]) == "pending"


@pytest.mark.parametrize("role,method,path,body", [
    ("user", "PUT", "{id}", {"action": "approve"}),
    ("viewer", "PUT", "{id}", {"action": "reject"}),
    ("viewer", "DELETE", "{id}", None),
    ("viewer", "POST", "", {"tool_name": "x"}),
    ("user", "GET", "stats", None),
])
def test_wrong_role_is_403(http, live, role, method, path, body):
    req = create(http, live)
    url = f"{API}/{path.format(id=req['id'])}".rstrip("/")
    r = http.request(method, url, json=body, headers=live.headers(role))
    assert_problem(r, 403, f"role '{role}'")
    assert live.store.get_status(req["id"]) == "pending"


def test_nobody_decides_their_own_request(http, live):
    req = create(http, live, role="admin")
    assert_problem(http.put(f"{API}/{req['id']}", json={"action": "approve"},
                            headers=live.headers("admin")), 403, "their own request")


def test_self_approval_when_the_config_allows_it(make_server):
    live = make_server(allow_self_approval=True)
    with httpx.Client(base_url=live.url) as http:
        req = create(http, live, role="admin")
        r = http.put(f"{API}/{req['id']}", json={"action": "approve"},
                     headers=live.headers("admin"))
        assert r.status_code == 200 and r.json()["decided_by"] == "root-admin"


def test_stats_are_the_services_figures(http, live):
    a, b = create(http, live), create(http, live)
    http.put(f"{API}/{a['id']}", json={"action": "approve"}, headers=live.headers("operator"))
    http.put(f"{API}/{b['id']}", json={"action": "reject"}, headers=live.headers("operator"))
    data = http.get(f"{API}/stats", params={"since": "3600"},
                    headers=live.headers("viewer")).json()
    assert data["by_status"]["approved"] == 1 and data["by_status"]["rejected"] == 1
    assert data["approval_rate"] == 0.5
    assert data["window_seconds"] == 3600


# ---------------------------------------------------------------- auth
def test_missing_malformed_unknown_revoked_and_expired_keys_are_401(http, live):
    from approvalctl import keys

    revoked = live.key("gone", "operator")
    live.service.revoke_key(live.service.authenticate(live.keys["admin"]), "gone")
    expiring = live.key("brief", "operator", expires_seconds=0.5)
    assert http.get(API, headers={"X-API-Key": expiring}).status_code == 200
    _, unknown = keys.generate()
    typo = live.keys["operator"][:-1] + ("A" if live.keys["operator"][-1] != "A" else "B")
    cases = [({}, "missing API key"), ({"X-API-Key": "hunter2"}, "malformed"),
             ({"X-API-Key": typo}, "malformed"), ({"X-API-Key": unknown}, "unknown"),
             ({"X-API-Key": revoked}, "revoked"),
             ({"Authorization": f"Basic {live.keys['admin']}"}, "bearer")]
    for headers, word in cases:
        assert_problem(http.get(API, headers=headers), 401, word)
    time.sleep(0.6)
    assert_problem(http.get(API, headers={"X-API-Key": expiring}), 401, "expired")


def test_revoking_through_the_api_locks_the_key_out_on_the_next_request(http, live):
    key = live.key("temp", "viewer")
    assert http.get(API, headers={"X-API-Key": key}).status_code == 200
    r = http.delete("/api/v1/keys/temp", headers=live.headers("admin"))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert_problem(http.get(API, headers={"X-API-Key": key}), 401, "revoked")


def test_changes_check_the_key_before_anything_else(http, live):
    """Creates, decisions and cancels look the key up inside the database job that makes
    the change; a revoked, unknown or expired key is still refused first, whatever else is
    wrong with the request, and nothing is written."""
    from approvalctl import keys

    req = create(http, live)
    gone = live.key("gone-writer", "admin")
    live.service.revoke_key(live.service.authenticate(live.keys["admin"]), "gone-writer")
    brief = live.key("brief-writer", "admin", expires_seconds=0.3)
    _, unknown = keys.generate()
    time.sleep(0.4)
    before = live.store.audit_rows()
    for key, word in ((gone, "revoked"), (unknown, "unknown"), (brief, "expired")):
        headers = {"X-API-Key": key}
        for r in (http.post(API, json={"tool_name": "deploy"}, headers=headers),
                  http.post(API, json={"tool_name": 5}, headers=headers),  # bad body
                  http.post(API, content=b"{", headers={**headers,
                                                        "Content-Type": "application/json"}),
                  http.post(API, json={"tool_name": "x"}, params={"bogus": "1"},
                            headers=headers),
                  http.put(f"{API}/{req['id']}", json={"action": "approve"}, headers=headers),
                  http.put(f"{API}/{req['id']}", json={"action": "maybe"}, headers=headers),
                  http.put(f"{API}/no such id", json={"action": "approve"}, headers=headers),
                  http.delete(f"{API}/{req['id']}", headers=headers)):
            assert_problem(r, 401, word)
    assert live.store.audit_rows() == before
    assert live.store.get_status(req["id"]) == "pending"
    # with a good key the same requests get their own errors
    assert_problem(http.post(API, json={"tool_name": 5}, headers=live.headers("user")), 400,
                   "tool_name")
    assert_problem(http.put(f"{API}/{req['id']}", json={"action": "maybe"},
                            headers=live.headers("operator")), 400, "action")


def test_a_key_revoked_between_two_creates_fails_the_second(http, live):
    key = live.key("short-lived", "user")
    assert http.post(API, json={"tool_name": "a"}, headers={"X-API-Key": key}
                     ).status_code == 201
    live.service.revoke_key(live.service.authenticate(live.keys["admin"]), "short-lived")
    assert_problem(http.post(API, json={"tool_name": "b"}, headers={"X-API-Key": key}), 401,
                   "revoked")
    items = http.get(API, headers=live.headers("viewer")).json()["items"]
    assert [i["tool_name"] for i in items] == ["a"]


def test_public_endpoints_need_no_key(http, live):
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/openapi.json").json()["openapi"].startswith("3.0")
    docs = http.get("/docs")
    assert docs.headers["content-type"].startswith("text/html")
    assert "http://" not in docs.text and "https://" not in docs.text  # no CDN
    assert "/openapi.json" in docs.text
    # Swagger UI's files come from the package itself, licence notice included
    for src in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', docs.text):
        assert http.get(src).status_code == 200, src
    bundle = http.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in bundle.text
    assert "Apache License" in http.get("/docs/assets/LICENSE").text
    init = http.get("/docs/assets/docs-init.js").text
    assert "/openapi.json" in init and "window.location.origin" in init
    for name in ("VERSION", "..%2Fapproval_api.yaml", "swagger-ui.js.map"):
        missing = http.get(f"/docs/assets/{name}")
        assert missing.status_code in (400, 404), name
        assert missing.headers["content-type"].startswith("application/problem+json")


def test_metrics_show_durable_counters_and_http_routes(http, live):
    req = create(http, live)
    http.get(f"{API}/{req['id']}", headers=live.headers("user"))
    text = http.get("/metrics").text
    assert re.search(r'approval_requests_total\{database="[^"]+",status="pending"\}', text)
    assert 'approvalctl_http_requests_total{method="GET",route="/api/v1/approvals/{id}",' \
           'status="200"}' in text


# ---------------------------------------------------------------- idempotency
def test_idempotent_replay_returns_the_original_and_creates_nothing(http, live):
    headers = {**live.headers("user"), "Idempotency-Key": "job-42"}
    body = {"tool_name": "deploy", "arguments": {"env": "prod"}}
    first = http.post(API, json=body, headers=headers)
    second = http.post(API, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len(http.get(API, headers=live.headers("viewer")).json()["items"]) == 1


def test_idempotency_key_with_a_different_body_is_422(http, live):
    headers = {**live.headers("user"), "Idempotency-Key": "job-43"}
    http.post(API, json={"tool_name": "deploy"}, headers=headers)
    r = http.post(API, json={"tool_name": "deploy", "risk": "high"}, headers=headers)
    assert_problem(r, 422, "different request body")
    assert len(http.get(API, headers=live.headers("viewer")).json()["items"]) == 1


def test_idempotency_keys_are_scoped_to_the_keys_owner(http, live):
    other = live.key("other-bot", "user")
    a = http.post(API, json={"tool_name": "x"},
                  headers={**live.headers("user"), "Idempotency-Key": "same"}).json()
    b = http.post(API, json={"tool_name": "x"},
                  headers={"X-API-Key": other, "Idempotency-Key": "same"}).json()
    assert a["id"] != b["id"] and b["user_id"] == "other-bot"


# ---------------------------------------------------------------- rate limit
def test_per_key_rate_limit_answers_429_with_retry_after(make_server):
    live = make_server(rate_limit=3)
    with httpx.Client(base_url=live.url) as http:
        statuses = [http.get(API, headers=live.headers("viewer")).status_code
                    for _ in range(6)]
        assert statuses[:3] == [200, 200, 200]
        r = http.get(API, headers=live.headers("viewer"))
        data = assert_problem(r, 429, "rate limit")
        assert int(r.headers["retry-after"]) >= 1 and data["retry_after"] >= 1
        # another key has its own bucket
        assert http.get(API, headers=live.headers("operator")).status_code == 200


def test_rate_limit_covers_writes_and_their_errors(make_server):
    live = make_server(rate_limit=2)
    with httpx.Client(base_url=live.url) as http:
        headers = live.headers("user")
        statuses = [http.post(API, json={"tool_name": "x"}, headers=headers).status_code
                    for _ in range(4)]
        assert statuses[:2] == [201, 201] and statuses[2:] == [429, 429]
        # an invalid body from a rate-limited key is still 429, not 422
        r = http.post(API, json={"tool_name": 5}, headers=headers)
        assert_problem(r, 429, "rate limit")
        assert int(r.headers["retry-after"]) >= 1
        items = http.get(API, headers=live.headers("viewer")).json()["items"]
        assert len(items) == 2


# ---------------------------------------------------------------- extensions
def test_sweep_expires_overdue_requests(http, live):
    req = create(http, live, ttl_seconds=0.05)
    time.sleep(0.1)
    r = http.post("/api/v1/sweep", headers=live.headers("operator"))
    assert r.status_code == 200
    # the background sweep may have been first; either way it is expired now
    assert r.json()["expired"] == len(r.json()["ids"])
    assert live.store.get_status(req["id"]) == "expired"
    assert_problem(http.post("/api/v1/sweep", headers=live.headers("viewer")), 403)


def test_the_background_sweep_expires_without_anyone_asking(http, live):
    req = create(http, live, ttl_seconds=0.1)
    deadline = time.monotonic() + 5
    while live.store.get_status(req["id"]) == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.store.get_status(req["id"]) == "expired"


def test_audit_trail_and_verify_are_admin_only(http, live):
    req = create(http, live)
    rows = http.get("/api/v1/audit", params={"request_id": req["id"]},
                    headers=live.headers("admin")).json()
    assert [r["action"] for r in rows] == ["create"]
    assert rows[0]["actor"] == "agent-bot"
    assert http.get("/api/v1/audit/verify", headers=live.headers("admin")).json()["ok"]
    assert_problem(http.get("/api/v1/audit", headers=live.headers("operator")), 403)


def test_keys_over_http_never_show_a_secret_twice(http, live):
    r = http.post("/api/v1/keys", json={"name": "ci-runner", "role": "user"},
                  headers=live.headers("admin"))
    assert r.status_code == 201
    secret = r.json()["key"]
    assert http.get(API, headers={"X-API-Key": secret}).status_code == 200
    listing = http.get("/api/v1/keys", headers=live.headers("admin"))
    assert secret not in listing.text
    assert {"ci-runner", "agent-bot"} <= {k["name"] for k in listing.json()}
    assert_problem(http.post("/api/v1/keys", json={"name": "ci-runner", "role": "user"},
                             headers=live.headers("admin")), 409, "already exists")
    assert_problem(http.get("/api/v1/keys", headers=live.headers("operator")), 403)
    assert_problem(http.delete("/api/v1/keys/nobody", headers=live.headers("admin")), 404)

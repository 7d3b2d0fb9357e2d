"""Bad input and abuse: every case answers a 4xx problem+json naming the problem, never a
500, and stores nothing."""

from __future__ import annotations

import socket

import pytest

API = "/api/v1/approvals"


@pytest.fixture
def live(module_live):
    """One server for the module: every test here compares counts before and after."""
    return module_live


def count(live) -> int:
    with live.store._read() as cur:
        return cur.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def audit_count(live) -> int:
    with live.store._read() as cur:
        return cur.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]


def problem(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    data = r.json()
    assert set(data) >= {"type", "title", "status", "detail"} and data["status"] == status
    for word in words:
        assert word.lower() in data["detail"].lower(), data["detail"]


BAD_BODIES = [
    ("malformed JSON", b'{"tool_name": "x",', "malformed JSON"),
    ("not JSON at all", b"tool_name=x", "malformed JSON"),
    ("empty body", b"", "body"),
    ("array body", b'[{"tool_name": "x"}]', "must be a JSON object"),
    ("wrong type", b'{"tool_name": 42}', "tool_name must be a string"),
    ("wrong ttl type", b'{"tool_name": "x", "ttl_seconds": "10m"}', "ttl_seconds"),
    ("missing tool_name", b'{"arguments": {}}', "tool_name' is required"),
    ("blank tool_name", b'{"tool_name": "   "}', "is not allowed"),
    ("empty tool_name", b'{"tool_name": ""}', "tool_name"),
    ("escape in tool_name", b'{"tool_name": "read_file\\u001b[2K"}', "is not allowed",
     "A-Z a-z 0-9"),
    ("space in tool_name", b'{"tool_name": "git push"}', "is not allowed"),
    ("bidi in tool_name", b'{"tool_name": "ls\\u202e"}', "is not allowed"),
    ("tool_name over 200", b'{"tool_name": "' + b"t" * 201 + b'"}', "tool_name"),
    ("duplicate key", b'{"tool_name": "x", "tool_name": "y"}', "duplicate key 'tool_name'"),
    ("duplicate key in arguments", b'{"tool_name": "shell.exec", "arguments": {"cmd": "ls",'
     b' "cmd": "rm -rf /"}}', "duplicate key 'cmd'"),
    ("duplicate key deep in arguments", b'{"tool_name": "x", "arguments": {"a": [{"b": 1, '
     b'"b": 2}]}}', "duplicate key 'b'"),
    ("integer beyond 2**53", b'{"tool_name": "x", "arguments": {"n": 9007199254740993}}',
     "RFC 8785", "2**53"),
    ("unknown field", b'{"tool_name": "x", "user_id": "someone-else"}',
     "unknown field 'user_id'"),
    ("unknown enum value", b'{"tool_name": "x", "risk": "extreme"}',
     "unknown risk 'extreme': expected one of low, medium, high"),
    ("non-object arguments", b'{"tool_name": "x", "arguments": [1, 2]}',
     "arguments must be a JSON object"),
    ("string arguments", b'{"tool_name": "x", "arguments": "{}"}',
     "arguments must be a JSON object"),
    ("nested 10,000 deep", b'{"tool_name": "x", "arguments": ' + b'{"a": ' * 10000
     + b"1" + b"}" * 10001, "nested too deeply"),
    ("arrays nested 10,000 deep", b"[" * 10000 + b"]" * 10000, "nested too deeply"),
    ("NaN", b'{"tool_name": "x", "ttl_seconds": NaN}', "NaN"),
    ("huge number", b'{"tool_name": "x", "ttl_seconds": 1e999}', "ttl_seconds"),
    ("negative ttl", b'{"tool_name": "x", "ttl_seconds": -5}', "ttl_seconds"),
    ("lone surrogate", b'{"tool_name": "\\ud800"}', "surrogate"),
    ("NUL in tool_name", b'{"tool_name": "a\\u0000b"}', "tool_name"),
    ("invalid UTF-8", b'{"tool_name": "\xff\xfe"}', "UTF-8"),
    ("arguments over 64 KiB", b'{"tool_name": "x", "arguments": {"a": "' + b"x" * 70000
     + b'"}}', "64 KiB"),
    ("reason too long", b'{"tool_name": "x", "reason": "' + b"r" * 5000 + b'"}', "reason"),
]


@pytest.mark.parametrize("name,body,words", [(c[0], c[1], c[2:]) for c in BAD_BODIES],
                         ids=[c[0] for c in BAD_BODIES])
def test_bad_create_bodies_are_400_and_store_nothing(http, live, name, body, words):
    before = count(live), audit_count(live)
    r = http.post(API, content=body, headers={**live.headers("user"),
                                              "Content-Type": "application/json"})
    problem(r, 400, *((words,) if isinstance(words, str) else words))
    assert (count(live), audit_count(live)) == before


@pytest.mark.parametrize("body,words", [
    (b'{"action": "maybe"}', "action must be one of approve, reject"),
    (b'{"note": "x"}', "action' is required"),
    (b'{"action": "approve", "by": "me"}', "unknown field 'by'"),
    (b'{"action": "approve", "note": 5}', "note must be a string"),
    (b"{", "malformed JSON"),
    (b'{"action": "reject", "action": "approve"}', "duplicate key 'action'"),
])
def test_bad_decisions_are_400_and_leave_the_request_pending(http, live, body, words):
    req = http.post(API, json={"tool_name": "x"}, headers=live.headers("user")).json()
    before = audit_count(live)
    r = http.put(f"{API}/{req['id']}", content=body,
                 headers={**live.headers("operator"), "Content-Type": "application/json"})
    problem(r, 400, words)
    assert live.store.get_status(req["id"]) == "pending"
    assert audit_count(live) == before


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/xml"])
def test_wrong_content_type_is_415(http, live, ctype):
    before = count(live)
    r = http.post(API, content=b'{"tool_name": "x"}',
                  headers={**live.headers("user"), "Content-Type": ctype})
    problem(r, 415, "application/json")
    assert count(live) == before


def test_json_with_charset_is_fine(http, live):
    r = http.post(API, content=b'{"tool_name": "x"}', headers={
        **live.headers("user"), "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201


def test_declared_1mib_body_is_413_without_reading_it(http, live):
    before = count(live)
    body = b'{"tool_name": "x", "reason": "' + b"a" * (1024 * 1024) + b'"}'
    r = http.post(API, content=body, headers={**live.headers("user"),
                                              "Content-Type": "application/json"})
    problem(r, 413, "exceeds the limit")
    assert count(live) == before


def test_chunked_1mib_body_is_refused_while_it_is_still_being_sent(live):
    """No Content-Length: the server must stop reading at the cap and answer 413 before the
    client has sent the rest of the 1 MiB."""
    before = count(live)
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("POST /api/v1/approvals HTTP/1.1\r\nHost: x\r\n"
                      f"X-API-Key: {live.keys['user']}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"a" * 65536
        sent = 0
        for _ in range(6):  # 384 KiB of the 1 MiB: past the cap, far short of the whole
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        head = sock.recv(4096).decode("latin-1")
    assert sent < 1024 * 1024
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "application/problem+json" in head
    assert count(live) == before


def test_unknown_route_is_404_problem(http, live):
    problem(http.get("/api/v1/nothing", headers=live.headers("user")), 404, "no such endpoint")
    problem(http.get("/api/v1/approvals/", headers=live.headers("user")), 404)


@pytest.mark.parametrize("method,path,allow", [
    ("PATCH", API, "GET, POST"), ("DELETE", API, "GET, POST"),
    ("POST", f"{API}/01m8bt6m8w02a0t5fyr96x74zx", "DELETE, GET, PUT"),
    ("PUT", "/healthz", "GET"), ("POST", "/metrics", "GET"),
])
def test_unknown_method_is_405_with_allow(http, live, method, path, allow):
    r = http.request(method, path, headers=live.headers("operator"))
    problem(r, 405, "not allowed")
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("query,words", [
    ("limit=-1", "limit"), ("limit=1000000000", "limit"), ("limit=0", "limit"),
    ("limit=ten", "limit must be an integer"), ("limit=1.5", "limit must be an integer"),
    ("status=maybe", "unknown status 'maybe'"), ("colour=red", "unknown query parameter"),
    ("limit=5&limit=6", "more than once"), ("cursor=zzz", "cursor"),
    ("cursor=d01m8bt6m8w02a0t5fyr96x74zx", "invalid cursor"),
])
def test_bad_list_queries_are_400(http, live, query, words):
    problem(http.get(f"{API}?{query}", headers=live.headers("viewer")), 400, words)


@pytest.mark.parametrize("wait", ["-5", "1000000", "61", "soon", "nan", "inf"])
def test_bad_wait_is_400(http, live, wait):
    req = http.post(API, json={"tool_name": "x"}, headers=live.headers("user")).json()
    problem(http.get(f"{API}/{req['id']}?wait={wait}", headers=live.headers("user")), 400,
            "wait")


@pytest.mark.parametrize("since", ["0", "-1", "24h", "1e9", "99999999999"])
def test_bad_stats_window_is_400(http, live, since):
    problem(http.get(f"{API}/stats?since={since}", headers=live.headers("viewer")), 400,
            "since")


SQL = ["' OR '1'='1", "x'; DROP TABLE requests; --", '" OR 1=1 --', "%' OR 1=1 --",
       "\\'; SELECT * FROM api_keys --", "1) UNION SELECT secret_hash FROM api_keys --"]


@pytest.mark.parametrize("payload", SQL)
def test_sql_metacharacters_in_every_filter_are_inert(http, live, payload):
    before = count(live)
    mine = http.post(API, json={"tool_name": "git_push"}, headers=live.headers("user")).json()
    headers = live.headers("admin")
    for param in ("tool_name", "user_id"):
        r = http.get(API, params={param: payload, "status": "all"}, headers=headers)
        assert r.status_code == 200
        assert all(item[param] == payload for item in r.json()["items"])
    for param in ("status", "cursor", "limit"):
        problem(http.get(API, params={param: payload}, headers=headers), 400, param)
    problem(http.get(f"{API}/stats", params={"since": payload}, headers=headers), 400, "since")
    problem(http.get("/api/v1/audit", params={"request_id": payload}, headers=headers), 400,
            "request_id")
    for method in ("GET", "PUT", "DELETE"):
        r = http.request(method, f"{API}/{payload}", json={"action": "approve"},
                         headers=headers)
        assert r.status_code in (400, 404), r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = http.delete(f"/api/v1/keys/{payload}", headers=headers)
    assert r.status_code in (400, 404) and r.headers["content-type"] == \
        "application/problem+json"
    # a tool name only takes A-Z a-z 0-9 _ . : / @ + - (DESIGN.md §10), so this is refused
    problem(http.post(API, json={"tool_name": payload}, headers=live.headers("user")), 400,
            "tool_name")
    r = http.post(API, json={"tool_name": "sql.probe", "reason": payload,
                             "arguments": {payload: payload}}, headers=live.headers("user"))
    assert r.status_code == 201 and r.json()["reason"] == payload  # stored as plain text
    assert r.json()["arguments"] == {payload: payload}
    assert live.store.get_status(mine["id"]) == "pending"
    assert count(live) == before + 2
    assert len(live.service.list_keys(live.service.authenticate(live.keys["admin"]))) == 4


@pytest.mark.parametrize("rid", ["abc", "a" * 27, "01m8-bt6m8w", "..%2F..%2Fetc"])
def test_malformed_ids_are_400_or_404(http, live, rid):
    r = http.get(f"{API}/{rid}", headers=live.headers("viewer"))
    assert r.status_code in (400, 404)
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("key", ["", "two words", "x" * 256, "caf\u00e9"])
def test_bad_idempotency_keys_are_400(http, live, key):
    before = count(live)
    r = http.post(API, json={"tool_name": "x"},
                  headers={**live.headers("user"), "Idempotency-Key": key.encode("utf-8")})
    problem(r, 400, "Idempotency-Key")
    assert count(live) == before


def test_bad_key_creation_bodies(http, live):
    headers = live.headers("admin")
    problem(http.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=headers),
            400, "role must be one of")
    problem(http.post("/api/v1/keys", json={"name": "a/b", "role": "user"}, headers=headers),
            400, "name")
    problem(http.post("/api/v1/keys", json={"name": "ok", "role": "user",
                                            "expires_seconds": 0}, headers=headers),
            400, "expires_seconds")

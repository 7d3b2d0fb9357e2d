"""What only a real server shows: long-polls that end when anyone decides, races between
deciders, and a graceful shutdown of `approvalctl serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import env_for, free_port, serve_in_thread, wait_http

API = "/api/v1/approvals"


def create(http, live, **body) -> dict:
    body.setdefault("tool_name", "git_push")
    r = http.post(API, json=body, headers=live.headers("user"))
    assert r.status_code == 201, r.text
    return r.json()


def test_long_poll_returns_as_soon_as_another_process_decides(http, live, tmp_path):
    """The decision comes from a separate `approvalctl approve` process on the database."""
    req = create(http, live)
    result: dict = {}

    def poll() -> None:
        start = time.monotonic()
        r = http.get(f"{API}/{req['id']}", params={"wait": 30}, headers=live.headers("user"))
        result["elapsed"] = time.monotonic() - start
        result["response"] = r

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    assert "response" not in result  # still waiting
    done = subprocess.run([sys.executable, "-m", "approvalctl", "approve", req["id"],
                           "--note", "from the terminal"], env=env_for(live.db),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    waiter.join(timeout=10)
    r = result["response"]
    assert r.status_code == 200
    assert r.json()["status"] == "approved"
    assert r.json()["decision_note"] == "from the terminal"
    assert result["elapsed"] < 5  # returned promptly, not at the end of the 30 s


def test_long_poll_returns_still_pending_when_the_wait_ends(http, live):
    req = create(http, live)
    start = time.monotonic()
    r = http.get(f"{API}/{req['id']}", params={"wait": 0.6}, headers=live.headers("user"))
    elapsed = time.monotonic() - start
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert 0.5 <= elapsed < 3


def test_long_poll_sees_the_request_expire(http, live):
    req = create(http, live, ttl_seconds=0.3)
    r = http.get(f"{API}/{req['id']}", params={"wait": 10}, headers=live.headers("user"))
    assert r.json()["status"] == "expired"


def test_many_long_polls_do_not_block_other_requests(http, live):
    """Long-polls sleep on the event loop; meanwhile the server keeps answering: every other
    request is answered while all the long-polls are still waiting (no timing involved:
    the polls could wait 30 s more)."""
    req = create(http, live)
    with ThreadPoolExecutor(max_workers=20) as pool:
        polls = [pool.submit(httpx.get, f"{live.url}{API}/{req['id']}",
                             params={"wait": 30}, headers=live.headers("user"), timeout=60)
                 for _ in range(15)]
        time.sleep(0.3)
        for _ in range(10):
            assert http.get("/healthz").status_code == 200
        assert not any(p.done() for p in polls)  # answered while every poll still waits
        http.put(f"{API}/{req['id']}", json={"action": "reject"},
                 headers=live.headers("operator"))
        assert {p.result().json()["status"] for p in polls} == {"rejected"}


def test_twenty_concurrent_decisions_have_exactly_one_winner(live):
    with httpx.Client(base_url=live.url) as http:
        req = create(http, live)
    barrier = threading.Barrier(20)

    def decide(i: int) -> int:
        with httpx.Client(base_url=live.url, timeout=20) as c:
            barrier.wait()
            return c.put(f"{API}/{req['id']}",
                         json={"action": "approve" if i % 2 else "reject"},
                         headers=live.headers("operator")).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(decide, range(20)))
    assert statuses.count(200) == 1
    assert statuses.count(409) == 19
    decisions = [r for r in live.store.audit_rows(request_id=req["id"])
                 if r["action"] in ("approve", "reject")]
    assert len(decisions) == 1
    assert live.store.get_status(req["id"]) in ("approved", "rejected")


# ---------------------------------------------------------------- approvalctl serve
def start_serve(db: Path, port: int, *extra: str) -> subprocess.Popen:
    env = env_for(db)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port",
                             str(port), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=15, status=200)
    except AssertionError:
        proc.kill()
        proc.communicate()
        raise
    return proc


@pytest.mark.slow
def test_serve_shuts_down_gracefully_finishing_in_flight_requests(tmp_path):
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    db = tmp_path / "serve.db"
    store = open_store(str(db))
    service = ApprovalService(store)
    key, _ = service.create_key(Principal("t", "admin", local=True), "bot", "user")
    port = free_port()
    proc = start_serve(db, port)
    url = f"http://127.0.0.1:{port}"
    req = httpx.post(f"{url}{API}", json={"tool_name": "x"}, headers={"X-API-Key": key}).json()
    result: dict = {}

    def poll() -> None:
        result["r"] = httpx.get(f"{url}{API}/{req['id']}", params={"wait": 30},
                                headers={"X-API-Key": key}, timeout=40)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    waiter.join(timeout=20)
    # the in-flight long-poll got a whole answer (still pending), not a dropped connection
    assert result["r"].status_code == 200 and result["r"].json()["status"] == "pending"
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 10
    assert "stopped" in err
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=1)
    store.close()


@pytest.mark.slow
def test_serve_with_two_workers_shares_one_database(tmp_path):
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    db = tmp_path / "serve.db"
    store = open_store(str(db))
    service = ApprovalService(store)
    admin = Principal("t", "admin", local=True)
    key, _ = service.create_key(admin, "bot", "user")
    ops, _ = service.create_key(admin, "ops", "operator")
    port = free_port()
    proc = start_serve(db, port, "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        ids = [httpx.post(f"{url}{API}", json={"tool_name": "x"},
                          headers={"X-API-Key": key}).json()["id"] for _ in range(10)]
        for rid in ids:
            r = httpx.put(f"{url}{API}/{rid}", json={"action": "approve"},
                          headers={"X-API-Key": ops})
            assert r.status_code == 200
        assert all(store.get_status(rid) == "approved" for rid in ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        store.close()


def test_serve_refuses_a_non_loopback_host_without_the_flag(tmp_path):
    env = env_for(tmp_path / "x.db")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-m", "approvalctl", "serve", "--host", "0.0.0.0"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--allow-remote" in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_reports_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = env_for(tmp_path / "x.db")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        r = subprocess.run([sys.executable, "-m", "approvalctl", "serve", "--port",
                            str(port)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_loopback_detection():
    from approvalctl.cli.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]",
                                        "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))




@pytest.mark.slow
def test_serve_runs_the_notification_worker_when_configured(tmp_path, monkeypatch):
    """A webhook receiver on loopback gets the `created` event of a request made over HTTP."""
    import http.server
    import json as jsonlib

    received: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"body": jsonlib.loads(body),
                             "signature": self.headers.get("X-Approvalctl-Signature")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    serve_in_thread(receiver)
    config = tmp_path / "config.yaml"
    config.write_text(
        "notifications:\n  webhooks:\n"
        f"    - url: http://127.0.0.1:{receiver.server_address[1]}/hook\n"
        "      secret_env: HOOK_SECRET\n      events: [created]\n")
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    db = tmp_path / "serve.db"
    store = open_store(str(db))
    key, _ = ApprovalService(store).create_key(Principal("t", "admin", local=True), "bot",
                                               "user")
    port = free_port()
    monkeypatch.setenv("APPROVALCTL_CONFIG", str(config))
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    proc = start_serve(db, port)  # its environment is a copy of ours
    try:
        req = httpx.post(f"http://127.0.0.1:{port}{API}", json={"tool_name": "deploy"},
                         headers={"X-API-Key": key}).json()
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received, "no webhook delivery"
        assert req["id"] in jsonlib.dumps(received[0]["body"])
        assert received[0]["signature"].startswith("t=")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        receiver.shutdown()
        receiver.server_close()
        store.close()
    assert proc.returncode == 0, err

"""Change notification (issue #13): long-polls, `wait` and the event stream are woken by
changes made here, by another process (the CLI) and across a lost PostgreSQL listener; the
stream resumes with Last-Event-ID across a server restart, is scoped to the caller, drops a
reader that falls too far behind, and a client that leaves releases its waiter.

Every bound below (10 s) is a hang guard, not a speed claim: without a wake-up the
long-polls here would run for their full 30-60 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from conftest import env_for

from approvalctl.models import Principal
from approvalctl.server import wakeups
from approvalctl.server.writepath import service_in

GUARD = 10.0
ADMIN = Principal("test-admin", "admin", local=True)
OPERATOR = Principal("olivia", "operator", local=True)


def agent(name: str = "agent-bot") -> Principal:
    return Principal(name, "user", local=True)


def gauge(live: Any, kind: str) -> float:
    text = httpx.get(live.url + "/metrics", timeout=GUARD).text
    m = re.search(r'^approvalctl_waiters\{kind="' + kind + r'"\} (\S+)$', text, re.M)
    assert m, "approvalctl_waiters gauge missing"
    return float(m.group(1))


def until(check, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def long_poll(live: Any, request_id: str, wait: int = 60) -> tuple[threading.Thread, dict]:
    box: dict[str, Any] = {}

    def run() -> None:
        box["response"] = httpx.get(f"{live.url}/api/v1/approvals/{request_id}",
                                    params={"wait": wait}, headers=live.headers("user"),
                                    timeout=wait + 30)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "approvalctl", *args], env=env_for(db),
                          capture_output=True, text=True, timeout=60)


def api_of(live: Any) -> Any:
    return live._server.config.app.state.api


@pytest.mark.slow
def test_a_decision_by_a_cli_process_wakes_a_long_poll(make_server, db_url):
    live = make_server()
    req = live.service.create(agent(), "deploy", {"env": "prod"})
    thread, box = long_poll(live, req.id)
    until(lambda: gauge(live, "long_poll") >= 1, "the long-poll to be registered")
    done = cli(db_url, "approve", req.id, "--note", "ok")
    assert done.returncode == 0, done.stderr
    thread.join(GUARD)
    assert not thread.is_alive(), "the long-poll was not woken by the CLI's decision"
    assert box["response"].json()["status"] == "approved"
    until(lambda: gauge(live, "long_poll") == 0, "the waiter to be released")


@pytest.mark.slow
def test_a_local_wait_is_woken_by_a_decision_through_the_server(make_server, db_url):
    live = make_server()
    req = live.service.create(agent(), "deploy", {"env": "prod"})
    waiter = subprocess.Popen([sys.executable, "-m", "approvalctl", "wait", req.id,
                               "--timeout", "60", "--json"], env=env_for(db_url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # let it start waiting (a decision before that passes the test too)
        r = httpx.put(f"{live.url}/api/v1/approvals/{req.id}", json={"action": "reject"},
                      headers=live.headers("operator"), timeout=GUARD)
        assert r.status_code == 200, r.text
        out, err = waiter.communicate(timeout=GUARD)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert json.loads(out)["status"] == "rejected", err


def test_a_decision_through_the_same_server_wakes_the_long_poll(live):
    req = live.service.create(agent(), "deploy", {})
    thread, box = long_poll(live, req.id)
    until(lambda: gauge(live, "long_poll") >= 1, "the long-poll to be registered")
    r = httpx.put(f"{live.url}/api/v1/approvals/{req.id}", json={"action": "approve"},
                  headers=live.headers("operator"), timeout=GUARD)
    assert r.status_code == 200
    thread.join(GUARD)
    assert not thread.is_alive()
    assert box["response"].json()["status"] == "approved"


def test_a_client_that_disconnects_releases_its_waiter(live):
    req = live.service.create(agent(), "deploy", {})
    before = gauge(live, "long_poll")
    with httpx.Client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{live.url}/api/v1/approvals/{req.id}", params={"wait": 60},
                   headers=live.headers("user"))
    until(lambda: gauge(live, "long_poll") == before, "the waiter to be released")
    with httpx.Client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout), client.stream(
            "GET", f"{live.url}/api/v1/events", headers=live.headers("user")) as resp:
        for _ in resp.iter_lines():
            pass
    until(lambda: gauge(live, "stream") == 0, "the stream to be released")


@pytest.mark.postgres
def test_a_killed_listener_connection_loses_no_wake_up(make_server, db_url, raw_db):
    if not db_url.startswith("postgres"):
        pytest.skip("PostgreSQL only")
    live = make_server()
    hub = api_of(live).wakeups
    until(lambda: hub.listener_pid is not None, "the listener to connect")
    req = live.service.create(agent(), "deploy", {})
    thread, box = long_poll(live, req.id)
    until(lambda: gauge(live, "long_poll") >= 1, "the long-poll to be registered")
    old = hub.listener_pid
    raw_db.execute("SELECT pg_terminate_backend(%s)", (old,))
    live.service.decide(OPERATOR, req.id, "approve")  # while the listener is (likely) away
    thread.join(GUARD)
    assert not thread.is_alive(), "the waiter missed the decision made while unlistened"
    assert box["response"].json()["status"] == "approved"
    until(lambda: hub.listener_pid not in (None, old), "the listener to reconnect")


@pytest.mark.postgres
def test_stopping_the_server_wakes_the_listener_at_once(make_server, db_url, monkeypatch):
    """A quiet PostgreSQL listener is ended by stop() itself, not by a timeout running out."""
    if not db_url.startswith("postgres"):
        pytest.skip("PostgreSQL only")
    monkeypatch.setattr(wakeups, "LISTEN_SECONDS", 3600)
    live = make_server()
    hub = api_of(live).wakeups
    until(lambda: hub.listener_pid is not None, "the listener to connect")
    live.stop()
    assert hub._listener is not None and not hub._listener.is_alive(), \
        "the listener slept through stop()"


def restart(old: Any) -> Any:
    """A new server on `old`'s database and keys (the keys are in the database)."""
    import uvicorn
    from conftest import LiveServer, free_port

    from approvalctl.server import create_app

    app = create_app(old.store, old.service.settings, sweep_interval=0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    live = LiveServer(url=f"http://127.0.0.1:{port}", db=old.db, store=old.store,
                      service=old.service, keys=old.keys, _server=server, _thread=thread)
    thread.start()
    until(lambda: server.started, "the server to start")
    return live


def read_events(live: Any, role: str, n: int, **params: Any) -> list[dict]:
    """The first `n` events of a stream (a hang guard bounds the read)."""
    client = live.client(role)
    got: list[dict] = []
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            for event in client.events(reconnect=False, **params):
                got.append(event)
                if len(got) >= n:
                    return
        except Exception as exc:  # surfaced below
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert "error" not in box, box.get("error")
    assert len(got) >= n, f"got only {got}"
    return got


def test_the_stream_replays_after_last_event_id_and_is_scoped_to_the_user(live):
    live.key("other-bot", "user")
    mine = live.service.create(agent(), "deploy", {"n": 1})
    live.service.create(agent("other-bot"), "deploy", {"n": 2})
    live.service.decide(OPERATOR, mine.id, "approve")
    events = read_events(live, "user", 2, last_event_id=0)
    assert [(e["event"], e["data"]["id"]) for e in events] == [
        ("created", mine.id), ("decided", mine.id)]
    assert events[0]["id"] < events[1]["id"]
    everything = read_events(live, "operator", 3, last_event_id=0)
    assert {e["data"]["user_id"] for e in everything} == {"agent-bot", "other-bot"}


def test_live_events_arrive_and_filters_apply(live):
    box: dict[str, Any] = {}

    def run() -> None:
        box["events"] = read_events(live, "operator", 1, tool_name="shell")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    until(lambda: gauge(live, "stream") >= 1, "the stream to open")
    live.service.create(agent(), "deploy", {})
    req = live.service.create(agent(), "shell", {"cmd": "ls"})
    thread.join(GUARD)
    assert [(e["event"], e["data"]["id"]) for e in box["events"]] == [("created", req.id)]


@pytest.mark.slow
def test_resume_after_a_restart_misses_nothing(make_server, db_url):
    first = make_server()
    req = first.service.create(agent(), "deploy", {})
    seen = read_events(first, "operator", 1, last_event_id=0)
    first.stop()
    first.service.decide(OPERATOR, req.id, "approve")  # while no server runs
    second = restart(first)
    try:
        after = read_events(second, "operator", 1, last_event_id=seen[-1]["id"])
    finally:
        second.stop()
    assert (after[0]["event"], after[0]["data"]["id"]) == ("decided", req.id)
    assert after[0]["data"]["status"] == "approved"


def test_a_quorum_counted_is_a_quorum_event_carrying_the_count(live):
    """A raised requirement and an approval short of the quorum leave the request pending:
    each is a `quorum` event whose data has the count, live and replayed; the last approval
    is `decided`. A request without a quorum carries no quorum fields."""
    got: list[dict] = []

    def run() -> None:
        for event in live.client("operator").events(reconnect=False):
            got.append(event)
            if len(got) >= 5:
                return
    threading.Thread(target=run, daemon=True).start()
    until(lambda: gauge(live, "stream") >= 1, "the stream to open")
    oscar = Principal("oscar", "operator", local=True)

    def then(n: int) -> None:  # one change at a time, so each event's data is exact
        until(lambda: len(got) >= n, f"event {n}")

    live.service.create(agent(), "lint", {})
    then(1)
    req = live.service.create(agent(), "db_migrate", {})
    then(2)
    live.service.require_approvals(OPERATOR, req.id, 2)
    then(3)
    live.service.decide(OPERATOR, req.id, "approve")
    then(4)
    live.service.decide(oscar, req.id, "approve")
    then(5)
    seen = [(e["event"], e["data"]["status"], e["data"].get("approvals_required"),
             e["data"].get("approvals")) for e in got]
    assert seen == [("created", "pending", None, None), ("created", "pending", None, None),
                    ("quorum", "pending", 2, []), ("quorum", "pending", 2, ["olivia"]),
                    ("decided", "approved", 2, ["olivia", "oscar"])]
    assert "approvals_required" not in got[0]["data"]
    replayed = read_events(live, "operator", 5, last_event_id=0)
    assert [e["event"] for e in replayed] == ["created", "created", "quorum", "quorum",
                                              "decided"]
    assert replayed[3]["data"]["approvals"] == ["olivia", "oscar"]  # as it is now


def test_a_slow_reader_is_dropped_with_a_final_event(live, monkeypatch):
    monkeypatch.setattr(wakeups, "STREAM_QUEUE", 3)
    with httpx.Client(timeout=GUARD) as client, client.stream(
            "GET", f"{live.url}/api/v1/events", headers=live.headers("operator")) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith(":")  # the stream is open and registered
        # ten creates in one transaction reach the stream as one batch: more than fits
        with live.store.unit_of_work() as uow:
            service = service_in(uow, live.service)
            for n in range(10):
                service.create(agent(), "deploy", {"n": n})
        rest = []
        for line in lines:
            rest.append(line)
    text = "\n".join(rest)
    assert 'event: error\ndata: {"reason":"too slow"}' in text.replace('": "', '":"')
    # the error is the stream's last word (events read back from the audit trail before it
    # may number more than the queue holds, if the batch landed while the stream replayed)
    assert text.rstrip().endswith('"too slow"}')


def test_a_bad_last_event_id_is_a_400(live):
    r = httpx.get(f"{live.url}/api/v1/events", headers={**live.headers("user"),
                                                        "Last-Event-ID": "12abc"},
                  timeout=GUARD)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.slow
def test_two_serve_processes_and_the_cli_wake_each_other(db_url, service, tmp_path):
    """A decision through server B wakes a long-poll, a stream on server A and a local
    `wait`; a decision by a CLI process wakes the stream on A too."""
    from test_scaleout import Servers

    from approvalctl.client import Client

    user, _ = service.create_key(ADMIN, "agent-bot", "user")
    operator, _ = service.create_key(ADMIN, "olivia", "operator")
    servers = Servers(db_url, 2, tmp_path)
    a, b = servers.urls
    try:
        first = service.create(agent(), "deploy", {"n": 1})
        second = service.create(agent(), "deploy", {"n": 2})
        box: dict[str, Any] = {"events": []}

        def poll() -> None:
            box["poll"] = httpx.get(f"{a}/api/v1/approvals/{first.id}", params={"wait": 60},
                                    headers={"X-API-Key": user}, timeout=90).json()

        def stream() -> None:
            with Client(a, operator, timeout=GUARD) as client:
                for event in client.events(reconnect=False):
                    if event["event"] == "decided":
                        box["events"].append(event["data"]["id"])
                    if len(box["events"]) == 2:
                        return
        threads = [threading.Thread(target=f, daemon=True) for f in (poll, stream)]
        for t in threads:
            t.start()
        waiter = subprocess.Popen([sys.executable, "-m", "approvalctl", "wait", first.id,
                                   "--timeout", "60", "--json"], env=env_for(db_url),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def held() -> bool:
            text = httpx.get(a + "/metrics", timeout=GUARD).text
            return ('approvalctl_waiters{kind="long_poll"} 1.0' in text
                    and 'approvalctl_waiters{kind="stream"} 1.0' in text)
        until(held, "the long-poll and the stream to be held on A")
        r = httpx.put(f"{b}/api/v1/approvals/{first.id}", json={"action": "approve"},
                      headers={"X-API-Key": operator}, timeout=GUARD)
        assert r.status_code == 200, r.text
        threads[0].join(GUARD)
        assert box.get("poll", {}).get("status") == "approved"
        out, err = waiter.communicate(timeout=GUARD)
        assert json.loads(out)["status"] == "approved", err
        done = cli(db_url, "reject", second.id)
        assert done.returncode == 0, done.stderr
        threads[1].join(GUARD)
        assert box["events"] == [first.id, second.id]
    finally:
        servers.stop()


def test_an_idle_stream_sends_heartbeats(live, monkeypatch):
    from approvalctl.server import app as server_app

    monkeypatch.setattr(server_app, "HEARTBEAT_SECONDS", 0.2)
    with httpx.Client(timeout=GUARD) as client, client.stream(
            "GET", f"{live.url}/api/v1/events", headers=live.headers("viewer")) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        assert next(lines).startswith(":")
        assert [next(lines) for _ in range(5)] == ["", ": heartbeat", "", ": heartbeat", ""]

"""Several `approvalctl serve` processes (standing in for machines) on one database.

A request created through one server is decided through another while a long-poll on a
third returns promptly; `/metrics` on every server shows the same counters; servers sweeping
at the same time expire each overdue request exactly once. Run on both backends: PostgreSQL
is what several machines share, and SQLite must behave the same for several processes on
one machine.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import bulk_create, env_for, free_port, stop_process, wait_http

from approvalctl import counters
from approvalctl.models import Principal, to_iso, utcnow

pytestmark = pytest.mark.slow


class Servers:
    """`n` real serve subprocesses on free ports, all on one database."""

    def __init__(self, db: str, n: int, home: Path, sweep_interval: float = 5.0) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.urls: list[str] = []
        env = env_for(db)
        for _ in range(n):
            port = free_port()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "approvalctl", "serve", "--port", str(port),
                 "--sweep-interval", str(sweep_interval)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            self.urls.append(f"http://127.0.0.1:{port}")
        try:
            for url, proc in zip(self.urls, self.procs):
                wait_http(url + "/healthz", proc, timeout=30, status=200)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs:  # all at once, then wait for each
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture
def keys(service) -> dict[str, str]:
    admin = Principal("test-admin", "admin", local=True)
    return {role: service.create_key(admin, f"{role}-key", role)[0]
            for role in ("user", "operator", "viewer")}


@pytest.fixture
def three_servers(db_url, store, tmp_path) -> Iterator[Servers]:
    servers = Servers(db_url, 3, tmp_path)
    yield servers
    servers.stop()


def metric_values(text: str, prefix: str) -> dict[str, float]:
    """Samples by name and labels, less the `database` label every server reports alike."""
    return {re.sub(r'database="[^"]*",?', "", line.rsplit(" ", 1)[0]).replace("{}", ""):
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def test_create_on_one_decide_on_another_long_poll_on_a_third(three_servers, keys):
    a, b, c = three_servers.urls
    agent = {"X-API-Key": keys["user"]}
    operator = {"X-API-Key": keys["operator"]}
    created = httpx.post(a + "/api/v1/approvals", headers=agent, timeout=10,
                         json={"tool_name": "deploy", "arguments": {"env": "prod"}})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]

    polled: dict[str, object] = {}

    def long_poll() -> None:
        t0 = time.monotonic()
        reply = httpx.get(f"{c}/api/v1/approvals/{rid}", params={"wait": 20}, headers=agent,
                          timeout=30)
        polled.update(status=reply.status_code, body=reply.json(), at=time.monotonic(),
                      waited=time.monotonic() - t0)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.5)  # the long-poll is parked on server c
    assert poller.is_alive()
    decided_at = time.monotonic()
    decided = httpx.put(f"{b}/api/v1/approvals/{rid}", headers=operator, timeout=10,
                        json={"action": "approve", "note": "via b"})
    assert decided.status_code == 200, decided.text
    poller.join(timeout=25)
    assert polled["status"] == 200
    assert polled["body"]["status"] == "approved" and polled["body"]["decided_by"] == \
        "operator-key"
    assert polled["at"] - decided_at < 2.0  # promptly, far inside the 20 s wait

    # a second decision through the third server loses the compare-and-set
    again = httpx.put(f"{c}/api/v1/approvals/{rid}", headers=operator, timeout=10,
                      json={"action": "reject"})
    assert again.status_code == 409
    # every server answers the same
    for url in (a, b, c):
        got = httpx.get(f"{url}/api/v1/approvals/{rid}", headers=agent, timeout=10).json()
        assert got["status"] == "approved" and got["decision_note"] == "via b"


def test_metrics_agree_on_every_server(three_servers, keys):
    agent = {"X-API-Key": keys["user"]}
    operator = {"X-API-Key": keys["operator"]}
    ids = []
    for i, url in enumerate(three_servers.urls * 2):
        r = httpx.post(url + "/api/v1/approvals", headers=agent, timeout=10,
                       json={"tool_name": f"t{i}"})
        ids.append(r.json()["id"])
    for i, rid in enumerate(ids[:4]):
        url = three_servers.urls[i % 3]
        action = "approve" if i % 2 else "reject"
        assert httpx.put(f"{url}/api/v1/approvals/{rid}", headers=operator, timeout=10,
                         json={"action": action}).status_code == 200
    scraped = [metric_values(httpx.get(u + "/metrics", timeout=10).text, "approval_")
               for u in three_servers.urls]
    ages = [s.pop("approval_oldest_pending_age_seconds") for s in scraped]
    assert all(0 < age < 60 for age in ages)  # read at each scrape's own moment
    assert scraped[0] == scraped[1] == scraped[2]
    first = scraped[0]
    assert first['approval_requests_total{status="pending"}'] == 6
    assert first['approval_requests_total{status="approved"}'] == 2
    assert first['approval_requests_total{status="rejected"}'] == 2
    assert first["approval_pending_requests"] == 2
    assert first["approval_response_time_seconds_count"] == 4


def test_servers_sweeping_at_once_expire_each_request_exactly_once(db_url, store, service,
                                                                   tmp_path):
    past = to_iso(utcnow() - timedelta(hours=2))
    overdue = bulk_create(store, 1500, created_at=past, ttl_seconds=60)
    servers = Servers(db_url, 3, tmp_path, sweep_interval=0.1)
    try:
        deadline = time.monotonic() + 60
        while store.queue_gauges()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        servers.stop()
    assert {store.get_status(i) for i in overdue} == {"expired"}
    expiries = [r for r in store.audit_rows() if r["action"] == "expire"]
    assert sorted(r["request_id"] for r in expiries) == sorted(overdue)  # once each
    values = {(n, lab): v for n, lab, v in store.counters()}
    assert values[(counters.TIMEOUT_TOTAL, "")] == len(overdue)
    assert service.audit_verify(Principal("a", "admin")).ok


@pytest.mark.postgres
def test_serve_on_an_unreachable_database_is_one_line_and_exit_6(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/approvals"
    proc = subprocess.run([sys.executable, "-m", "approvalctl", "serve", "--port",
                           str(free_port())], env=env_for(url), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 6
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "connection refused" in proc.stderr and "Traceback" not in proc.stderr

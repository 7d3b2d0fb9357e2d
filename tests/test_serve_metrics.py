"""`approvalctl serve-metrics`: a real exporter process on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import env_for, free_port, stop_process, wait_http
from prometheus_client.parser import text_string_to_metric_families


def start_exporter(db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve-metrics", "--port",
                             str(port)], env=env_for(db), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=15)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc, signal.SIGTERM, timeout=10)


@pytest.fixture
def exporter(db_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_exporter(db_path, port)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def cli(db: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "approvalctl", *args], env=env_for(db),
                          capture_output=True, text=True, timeout=30, check=True).stdout


def sample(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and {k: v for k, v in s.labels.items()
                                   if k != "database"} == labels:
                return s.value
    raise AssertionError(f"{name}{labels} not exported")


@pytest.mark.slow
def test_exporter_serves_metrics_that_follow_cli_decisions(exporter: str, db_path) -> None:
    health = httpx.get(exporter + "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    first = httpx.get(exporter + "/metrics")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert sample(first.text, "approval_requests_total", status="approved") == 0
    # the exporter serves the store metrics only, never per-process HTTP metrics
    assert "approvalctl_http_requests" not in first.text

    req_id = cli(db_path, "request", "deploy", "--user", "bot").strip()
    assert sample(httpx.get(exporter + "/metrics").text, "approval_pending_requests") == 1
    cli(db_path, "approve", req_id)
    text = httpx.get(exporter + "/metrics").text
    assert sample(text, "approval_requests_total", status="approved") == 1
    assert sample(text, "approval_pending_requests") == 0
    assert sample(text, "approval_response_time_seconds_count") == 1


def test_serve_metrics_refuses_remote_mode(db_path) -> None:
    res = subprocess.run([sys.executable, "-m", "approvalctl", "--server",
                          "http://127.0.0.1:1", "serve-metrics"], env=env_for(db_path),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: serve-metrics reads the database; it cannot be used with --server (scrape "
        "the server's own /metrics instead)"]


@pytest.mark.slow
def test_serve_metrics_on_a_busy_port_fails_cleanly(db_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "approvalctl", "serve-metrics", "--port",
                              str(port)], env=env_for(db_path), capture_output=True,
                             text=True, timeout=30)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "address already in use" in res.stderr.lower()

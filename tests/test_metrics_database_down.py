"""The metrics path while the database is down (#16.1, #12.12).

A scrape waits for the database only within a share of the scrape timeout and then reports
`approvalctl_database_up 0` in a scrape that succeeds; `serve-metrics` starts while the
database is down and sees it come back at the next scrape. PostgreSQL outages are made with
a TCP relay in front of the shared server that the test switches off and on (refused
connections, dropped sessions), so the shared server itself is never touched.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from conftest import env_for, free_port, prometheus, wait_http
from prometheus_client.parser import text_string_to_metric_families
from test_serve_metrics import stop

from approvalctl import metrics


def up_value(text: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "approvalctl_database_up":
                return s.value
    raise AssertionError("approvalctl_database_up not exported")


def families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


class HangingStore:
    """A store whose reads block until released: a database that stopped answering."""

    url = "postgresql://db.internal:5432/approvals"

    def __init__(self) -> None:
        self.release = threading.Event()

    def counters(self):
        self.release.wait()
        return []

    def queue_gauges(self):
        return 0, None

    def outbox_backlog(self):
        return 0


def test_a_hanging_database_is_reported_down_within_the_budget() -> None:
    store = HangingStore()
    reader = metrics.DatabaseReader(store)
    # the scrape returns although the read is still blocked: the database is reported down
    body, _ = metrics.render_reader(reader, include_http=False, timeout=0.05)
    assert up_value(body.decode()) == 0
    assert "approval_pending_requests" not in families(body.decode())
    assert "did not answer within 0.05s" in reader.last_error
    # a second scrape waits on the same read instead of starting another one
    assert reader.read(0.05) is None
    store.release.set()
    body, _ = metrics.render_reader(reader, include_http=False, timeout=5)
    assert up_value(body.decode()) == 1
    assert "approval_pending_requests" in families(body.decode())
    reader.close()


@pytest.mark.parametrize(("header", "budget"), [
    (None, 2.0), ("10", 2.0), ("1", 0.2), ("0.5", 0.1), ("0.01", 0.05), ("nan", 2.0),
    ("-3", 2.0), ("1e9", 2.0), ("x" * 10_000, 2.0)])
def test_scrape_budget_follows_the_scrape_timeout_header(header, budget) -> None:
    assert metrics.scrape_budget(header) == pytest.approx(budget)


@pytest.mark.parametrize(("target", "label"), [
    ("postgresql://app:s3cret@DB.example:6432/approvals?sslmode=require",
     "postgresql://db.example:6432/approvals"),
    ("postgresql://app@db.example/approvals", "postgresql://db.example:5432/approvals"),
    ("sqlite:////var/lib/approvals.db", "sqlite:/var/lib/approvals.db")])
def test_database_label_names_the_database_without_secrets(target, label) -> None:
    assert metrics.database_identity(target) == label


# ---------------------------------------------------------------- real processes
class Relay:
    """A TCP relay to `target` that can be switched off (connections refused, open ones
    dropped) and on again, on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def on(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def off(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def via(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@contextlib.contextmanager
def exporter(db: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve-metrics", "--port",
                             str(port)], env=env_for(db), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def scrape(url: str, timeout_header: str = "10") -> str:
    res = httpx.get(url + "/metrics", timeout=30,
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": timeout_header})
    assert res.status_code == 200
    return res.text


@pytest.mark.slow
def test_serve_metrics_starts_without_its_sqlite_folder_and_sees_it_appear(tmp_path) -> None:
    db = tmp_path / "volume" / "approvals.db"
    with exporter(str(db)) as url:
        assert up_value(scrape(url)) == 0
        health = httpx.get(url + "/healthz", timeout=30)
        assert health.status_code == 503
        assert "folder does not exist" in health.json()["detail"]
        assert not db.parent.exists()  # an unmounted volume is not created afresh
        db.parent.mkdir()
        assert up_value(scrape(url)) == 1


@pytest.mark.slow
def test_serve_metrics_starts_on_an_unreadable_sqlite_file(tmp_path) -> None:
    db = tmp_path / "approvals.db"
    db.write_bytes(b"this is not a database" * 100)
    with exporter(str(db)) as url:
        assert up_value(scrape(url)) == 0
        assert httpx.get(url + "/healthz", timeout=30).status_code == 503


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_outage_is_seen_at_once_both_ways(new_db) -> None:
    url = new_db("postgres")
    subprocess.run([sys.executable, "-m", "approvalctl", "migrate"], env=env_for(url),
                   check=True, capture_output=True, timeout=60)
    target = urlsplit(url)
    relay = Relay((target.hostname or "127.0.0.1", target.port or 5432))
    relayed = via(url, relay.port)
    # the exporter starts while PostgreSQL is unreachable
    with exporter(relayed) as exp:
        assert up_value(scrape(exp)) == 0
        relay.on()
        assert up_value(scrape(exp)) == 1  # the very next scrape: no reconnection backoff
        relay.off()
        assert up_value(scrape(exp)) == 0
        relay.on()
        assert up_value(scrape(exp)) == 1
        relay.off()


@pytest.mark.slow
@pytest.mark.postgres
def test_prometheus_ingests_database_up_0_from_an_unreachable_postgres(tmp_path) -> None:
    nothing = f"postgresql://postgres@127.0.0.1:{free_port()}/approvals"
    with exporter(nothing) as exp, prometheus(tmp_path, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "approvalctl", "static_configs": [
                {"targets": [exp.removeprefix("http://")]}]}]}) as prom:
        api = f"{prom}/api/v1/query"
        result: list = []
        for _ in range(300):
            result = httpx.get(api, params={"query": "approvalctl_database_up"},
                               timeout=10).json()["data"]["result"]
            if result:
                break
            time.sleep(0.1)
        assert result, "Prometheus never stored approvalctl_database_up"
        assert result[0]["value"][1] == "0"
        assert result[0]["metric"]["database"] == metrics.database_identity(nothing)
        up = httpx.get(api, params={"query": 'up{job="approvalctl"}'},
                       timeout=10).json()["data"]["result"]
        assert up[0]["value"][1] == "1"  # the scrape itself succeeded



@pytest.mark.postgres
def test_every_postgres_connection_names_the_application(new_db) -> None:
    import psycopg

    from approvalctl.store.postgres import split_url

    url = new_db("postgres")
    conninfo, _ = split_url(url)  # what the opening probe and every pooled connection use
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == "approvalctl"
    # a user's own choice wins
    conninfo, _ = split_url(url + "&application_name=billing")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == "billing"



@pytest.mark.slow
@pytest.mark.postgres
def test_the_pool_uses_postgres_again_at_once_after_a_long_outage(new_db) -> None:
    """`serve` reads through its pool: after an outage long enough for the pool's retries to
    back off far apart, the first read after PostgreSQL returns must still succeed."""
    from approvalctl.errors import Unavailable
    from approvalctl.store import open_store

    url = new_db("postgres")
    target = urlsplit(url)
    relay = Relay((target.hostname or "127.0.0.1", target.port or 5432))
    relay.on()
    store = open_store(via(url, relay.port) + "&pool_timeout=3")
    try:
        metrics.read_snapshot(store)
        relay.off()
        outage_ends = time.monotonic() + 20
        while time.monotonic() < outage_ends:
            with pytest.raises(Unavailable):
                metrics.read_snapshot(store)
            time.sleep(0.5)
        relay.on()
        metrics.read_snapshot(store)  # not after the pool's next, far-off retry
    finally:
        relay.off()
        store.close()

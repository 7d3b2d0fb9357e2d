"""Shared fixtures: every test gets its own XDG directories and database.

`db_url` (and so `store` and `service`) is parametrised over both backends: every test that
uses it runs once on a fresh SQLite file and once on PostgreSQL, in a schema of its own on
the server at 127.0.0.1:5432 (`APPROVALCTL_TEST_PG` names another), dropped afterwards.
Select one backend with `-m postgres` / `-m "not postgres"` or `-k sqlite` / `-k postgres`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click.testing
import pytest

from approvalctl.config import Settings
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import open_store


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked `slow` first, each group in collection order.

    pytest-xdist hands tests out in this order: long ones at the start are spread over both
    workers while the short ones fill the gaps, instead of one worker finishing a long
    module alone at the end. The order is the same on every worker, as xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def tls_trust_loaded_lazily() -> Iterator[None]:
    """No test speaks TLS, yet every httpx client (each `httpx.get` in a poll loop too, and
    every remote CLI, hook or serve subprocess) parses a whole CA bundle file when it is
    made: a sizeable CPU cost on two shared cores. httpx honours SSL_CERT_DIR (when
    SSL_CERT_FILE is unset), where OpenSSL reads a certificate only when a handshake needs
    it: point it at the system's hashed directory for this run and the subprocesses it
    starts. Without such a directory nothing changes."""
    import ssl

    capath = ssl.get_default_verify_paths().capath
    if not capath or not os.path.isdir(capath):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SSL_CERT_FILE", raising=False)
        patch.setenv("SSL_CERT_DIR", capath)
        yield


_COMMANDS: dict[int, tuple[object, object]] = {}


class CliRunner(click.testing.CliRunner):
    """Click's test runner over a Typer app's command tree, built once per app with Typer's
    public `typer.main.get_command` (as one real `approvalctl` process builds it once).
    typer.testing.CliRunner rebuilds the tree on every invoke, a sizeable share of each
    in-process CLI test. `invoke(app, args, ...)` takes the Typer app like Typer's runner."""

    def invoke(self, cli: Any, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        import typer
        import typer.main

        if isinstance(cli, typer.Typer):
            if id(cli) not in _COMMANDS:  # the app is kept alive with its tree: ids stay unique
                _COMMANDS[id(cli)] = (cli, typer.main.get_command(cli))
            cli = _COMMANDS[id(cli)][1]
        return super().invoke(cli, args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real home: XDG dirs and config point into tmp_path."""
    for var in ("APPROVALCTL_DB", "APPROVALCTL_SERVER", "APPROVALCTL_API_KEY",
                "APPROVALCTL_CONFIG", "APPROVALCTL_USER", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("USER", "operator")
    monkeypatch.setenv("LOGNAME", "operator")
    return tmp_path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "approvals.db"


PG_BASE = os.environ.get("APPROVALCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_schema_url(schema: str) -> str:
    """A URL whose connections work inside `schema` (libpq `options` sets search_path)."""
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[object]:
    """One autocommit connection that creates and drops the per-test schemas."""
    import psycopg

    try:
        conn = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL tests need the server at {PG_BASE} ({exc}); start it with "
                    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
                    " or deselect them with -m 'not postgres'", pytrace=False)
    # A schema still in use by a stray process is left behind rather than hanging the run.
    conn.execute("SET lock_timeout = '5s'")
    yield conn
    conn.close()


class SchemaReaper:
    """Drops the schemas of finished tests on a thread and connection of its own, so that
    no test waits for the drop of the one before it. A schema that cannot be dropped (still
    locked by a leftover process after lock_timeout, or the server away) is left behind
    rather than holding up the run, as before."""

    def __init__(self) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="schema-reaper")
        self.thread.start()

    def drop(self, schema: str) -> None:
        self.queue.put(schema)

    def close(self) -> None:
        """Drop what is queued, then stop (bounded: a stuck drop gives up at lock_timeout)."""
        self.queue.put(None)
        self.thread.join(120)

    def _run(self) -> None:
        import psycopg

        conn = None
        while (schema := self.queue.get()) is not None:
            try:
                if conn is None:
                    conn = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5)
                    conn.execute("SET lock_timeout = '5s'")
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except psycopg.Error:
                if conn is not None and conn.broken:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()


@pytest.fixture(scope="session")
def pg_reaper() -> Iterator[SchemaReaper]:
    reaper = SchemaReaper()
    yield reaper
    reaper.close()


@pytest.fixture
def new_db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """A factory of fresh, empty databases: `new_db("sqlite")` or `new_db("postgres")`."""
    schemas: list[str] = []
    reaper: list[SchemaReaper] = []
    count = [0]

    def make(kind: str) -> str:
        count[0] += 1
        if kind == "sqlite":
            return str(tmp_path / f"db{count[0]}" / "approvals.db")
        if kind != "postgres":
            raise ValueError(kind)
        admin = request.getfixturevalue("pg_admin")
        reaper.append(request.getfixturevalue("pg_reaper"))
        schema = f"apctl_t_{uuid.uuid4().hex[:16]}"
        admin.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return pg_schema_url(schema)

    yield make
    for schema in schemas:
        reaper[0].drop(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend_kind: str, db_path: Path, new_db: Callable[[str], str]) -> str:
    """The database every test works on: a SQLite file, or a fresh PostgreSQL schema."""
    return str(db_path) if backend_kind == "sqlite" else new_db("postgres")


class RawDB:
    """A plain connection to the test database, behind the tool's back (tampering tests).

    `execute` takes `?` placeholders on both backends; `error` is the driver's base error.
    """

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql://")
        if self.postgres:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.error: type[Exception] = psycopg.Error
        else:
            import sqlite3

            self.conn = sqlite3.connect(url, isolation_level=None)
            self.error = sqlite3.DatabaseError

    def execute(self, sql: str, params: tuple | list = ()):
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def fetch_dict(self, sql: str, params: tuple | list = ()) -> dict:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))

    def drop_audit_guards(self) -> None:
        """Remove the triggers that keep audit_log append-only, as an attacker would."""
        if self.postgres:
            self.execute("DROP TRIGGER audit_log_no_update ON audit_log")
            self.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
        else:
            self.execute("DROP TRIGGER audit_log_no_update")
            self.execute("DROP TRIGGER audit_log_no_delete")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def raw_db(db_url: str) -> Iterator[RawDB]:
    conn = RawDB(db_url)
    yield conn
    conn.close()


@pytest.fixture
def store(db_url: str):
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(db="")


@pytest.fixture
def service(store, settings) -> ApprovalService:
    return ApprovalService(store, settings)


@pytest.fixture
def operator() -> Principal:
    return Principal(name="olivia", role="operator")


@pytest.fixture
def agent() -> Principal:
    return Principal(name="deploy-bot", role="user")


@pytest.fixture
def admin() -> Principal:
    return Principal(name="root-admin", role="admin")


def installed() -> str:
    """The console script installed with the interpreter running the tests (an `approvalctl`
    earlier on PATH may belong to another checkout)."""
    beside = os.path.join(os.path.dirname(sys.executable), "approvalctl")
    found = beside if os.access(beside, os.X_OK) else shutil.which("approvalctl")
    assert found, "approvalctl is not installed"
    return found


def quit_with_ctrl_c(child: Any) -> None:
    """Stop a `watch`/`review` in a pexpect pty as an operator does (Ctrl-C): it must end by
    itself, with exit status 0."""
    import pexpect

    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def env_for(db: str | Path) -> dict[str, str]:
    """Environment for a real `approvalctl` subprocess on database `db`."""
    env = dict(os.environ)
    env["APPROVALCTL_DB"] = str(db)
    return env


def bulk_create(store, n: int, *, created_at: str | None = None, ttl_seconds: float = 3600,
                user_id: str = "deploy-bot", batch: int = 5000) -> list[str]:
    """Insert `n` pending requests fast (one transaction per batch), each with its audit row
    and counters exactly as `ApprovalService.create` writes them. Returns their ids."""
    import json
    from datetime import timedelta

    from approvalctl import counters
    from approvalctl.models import (
        PENDING,
        ApprovalRequest,
        Change,
        from_iso,
        new_id,
        to_iso,
        utcnow,
    )
    from approvalctl.store.sql import REQUEST_COLUMNS, seal

    start = from_iso(created_at) if created_at else None
    ids: list[str] = []
    for offset in range(0, n, batch):
        reqs, changes, payloads, rows = [], [], {}, []
        for i in range(offset, min(n, offset + batch)):
            now = start or utcnow()
            req = ApprovalRequest(
                id=new_id(now), tool_name=f"tool-{i % 7}", arguments={"n": i},
                reason=f"bulk {i}", risk=("low", "medium", "high")[i % 3], user_id=user_id,
                status=PENDING, created_at=to_iso(now),
                expires_at=to_iso(now + timedelta(seconds=ttl_seconds)))
            reqs.append(req)
            payloads[req.id] = json.dumps(req.to_dict(), sort_keys=True)
            changes.append(Change(request_id=req.id, actor=user_id, action="create",
                                  from_status=None, to_status=PENDING, at=req.created_at,
                                  detail={"tool_name": req.tool_name, "risk": req.risk,
                                          "user_id": user_id},
                                  counters=counters.for_status(PENDING), outbox=[]))
            rows.append(tuple(json.dumps(req.arguments, sort_keys=True) if c == "arguments"
                              else getattr(req, c) for c in REQUEST_COLUMNS))
            seal(changes[-1], rows[-1], req)
        with store._write() as cur:
            store._many(cur, "INSERT INTO requests (" + ", ".join(REQUEST_COLUMNS)
                        + ") VALUES (" + ", ".join("?" * len(REQUEST_COLUMNS)) + ")", rows)
            store._append_changes(cur, changes, payloads)
        ids.extend(r.id for r in reqs)
    return ids

# ---------------------------------------------------------------- HTTP server fixtures
# (appended for the HTTP API: a real uvicorn server on 127.0.0.1, on a free port)
import socketserver  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0
                 ) -> None:
    """Ask a server subprocess to shut down gracefully; kill it if it does not in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0, *,
              status: int | None = None) -> None:
    """Poll GET `url` every 50 ms until it answers: any HTTP status, or exactly `status`.

    Raises AssertionError at once, with the process's stderr, when `proc` (the server
    being waited for) exits, and after `timeout` seconds otherwise. One client for every
    attempt, each attempt bounded to 2 s.
    """
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"process exited {proc.returncode} before {url} "
                                     f"answered: {err!s}")
            try:
                answer = client.get(url)
                if status is None or answer.status_code == status:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer"
                                     f"{'' if status is None else f' {status}'} in {timeout}s")
            time.sleep(0.05)


@contextlib.contextmanager
def prometheus(tmp_path: Path, config: dict, timeout: float = 30.0) -> Iterator[str]:
    """A real Prometheus (the `prometheus` binary on PATH) with `config` as its
    prometheus.yml, temp storage, a free loopback port and its log in
    tmp_path/prometheus.log; yields its URL once /-/ready answers, stops it afterwards."""
    import yaml

    port = free_port()
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/-/ready", proc, timeout=timeout)
            yield url
        finally:
            stop_process(proc, signal.SIGTERM, timeout=10)


#: How often (s) a stdlib server started by `serve_in_thread` looks for `shutdown()`; the
#: stdlib's 0.5 s made every test with a receiver wait out about that much at its end.
SHUTDOWN_POLL = 0.02


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Run a stdlib `socketserver`/`http.server` server in a daemon thread (stop it with
    `server.shutdown()` and `server.server_close()`); returns the started thread."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval":
                                                                   SHUTDOWN_POLL},
                              daemon=True)
    thread.start()
    return thread


@dataclass
class LiveServer:
    """A running API server, the database behind it, and one API key per role."""

    url: str
    db: str
    store: object
    service: ApprovalService
    keys: dict[str, str] = field(default_factory=dict)
    clients: list = field(default_factory=list)
    _server: object = None
    _thread: threading.Thread | None = None

    def key(self, name: str, role: str, expires_seconds: float | None = None) -> str:
        secret, _ = self.service.create_key(Principal("test-admin", "admin", local=True),
                                            name, role, expires_seconds)
        return secret

    def headers(self, role: str = "user") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    def client(self, role: str = "user"):  # -> approvalctl.Client
        """A Client with this role's key, closed when the server stops."""
        from approvalctl.client import Client

        client = Client(self.url, self.keys[role], timeout=10)
        self.clients.append(client)
        return client

    def request_stop(self) -> None:
        """Ask the server to shut down, without waiting (see `stop`)."""
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=10)


def start_live_server(db_url: str, *, sweep_interval: float = 0.5,
                      **settings_kw: object) -> LiveServer:
    """Start an API server on `db_url` in a thread, with one key per role.

    Keys: user `agent-bot`, viewer `vera`, operator `olivia`, admin `root-admin`.
    """
    import uvicorn

    from approvalctl.server import create_app

    settings = Settings(db=db_url, **settings_kw)  # type: ignore[arg-type]
    store = open_store(db_url)
    service = ApprovalService(store, settings)
    app = create_app(store, settings, sweep_interval=sweep_interval)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    live = LiveServer(url=f"http://127.0.0.1:{port}", db=db_url, store=store,
                      service=service, _server=server, _thread=thread)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("API server did not start")
        time.sleep(0.01)
    for role, name in (("user", "agent-bot"), ("viewer", "vera"),
                       ("operator", "olivia"), ("admin", "root-admin")):
        live.keys[role] = live.key(name, role)
    return live


@pytest.fixture
def make_server(db_url: str):
    """Start API servers on this test's database: `make_server(rate_limit=5, ...)`."""
    started: list[LiveServer] = []

    def start(**kw: object) -> LiveServer:
        live = start_live_server(db_url, **kw)  # type: ignore[arg-type]
        started.append(live)
        return live

    yield start
    for live in started:  # all asked to stop first: they shut down side by side
        live.request_stop()
    for live in started:
        live.stop()
        live.store.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def module_live(tmp_path_factory: pytest.TempPathFactory):
    """One API server for a whole test module (for tests that only need *a* server).

    Its tests share one `user` key, so the per-key creation rate quota (on by default) is
    off here: how fast the module's tests run must not decide whether they pass. The
    quota itself is tested on servers of its own (test_quotas.py, test_api.py).
    """
    from approvalctl.limits import Quotas

    live = start_live_server(str(tmp_path_factory.mktemp("api") / "approvals.db"),
                             quotas=Quotas(create_rate=None))
    yield live
    live.stop()
    live.store.close()  # type: ignore[attr-defined]


@pytest.fixture
def live(make_server) -> LiveServer:
    """A running API server with default settings."""
    return make_server()


@pytest.fixture
def http(live: LiveServer):
    """An httpx client for `live`, with no credentials (pass headers=live.headers(role))."""
    import httpx

    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client

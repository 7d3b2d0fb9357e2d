"""Shared fixtures: every test gets its own XDG directories and database file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from approvalctl import counters
from approvalctl.config import Settings
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import open_store


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
    counters.pending.take()  # buffered RBAC deltas belong to the test that made them
    return tmp_path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "approvals.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    """The database every test works on (a path: SQLite; a postgresql:// URL: PostgreSQL)."""
    return str(db_path)


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


def env_for(db: str | Path) -> dict[str, str]:
    """Environment for a real `approvalctl` subprocess on database `db`."""
    env = dict(os.environ)
    env["APPROVALCTL_DB"] = str(db)
    return env


# ---------------------------------------------------------------- HTTP server fixtures
# (appended for the HTTP API: a real uvicorn server on 127.0.0.1, on a free port)
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
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
    for live in started:
        live.stop()
        live.store.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def module_live(tmp_path_factory: pytest.TempPathFactory):
    """One API server for a whole test module (for tests that only need *a* server)."""
    live = start_live_server(str(tmp_path_factory.mktemp("api") / "approvals.db"))
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

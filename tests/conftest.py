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

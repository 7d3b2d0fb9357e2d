"""`approvalctl keys`: the secret is printed once, alone; list never shows it; revoke locks
the key out. Run locally and against a live server with an admin key."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import CliRunner

from approvalctl.cli import app


@pytest.fixture(params=["local", "remote"])
def run(request, db_url):
    env = {"APPROVALCTL_DB": db_url}
    if request.param == "remote":
        live = request.getfixturevalue("make_server")()
        env = {"APPROVALCTL_SERVER": live.url, "APPROVALCTL_API_KEY": live.keys["admin"]}
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    invoke.mode = request.param  # type: ignore[attr-defined]
    return invoke


def test_create_prints_the_secret_alone_and_list_never_shows_it(run, db_url):
    result = run("keys", "create", "--name", "ci-bot", "--role", "user", "--expires", "30d")
    assert result.exit_code == 0, result.stderr
    secret = result.stdout.strip()
    assert result.stdout == secret + "\n"
    assert secret.startswith("actl_") and len(secret) == 54
    assert "shown only this once" in result.stderr
    listed = run("keys", "list", "--json")
    rows = {k["name"]: k for k in json.loads(listed.stdout)}
    assert rows["ci-bot"]["role"] == "user" and rows["ci-bot"]["state"] == "active"
    assert rows["ci-bot"]["expires_at"] is not None
    assert secret not in listed.stdout
    table = run("keys", "list")
    assert "ci-bot" in table.stdout and secret not in table.stdout
    assert secret[:16] in table.stdout  # the recognisable prefix, nothing more


def test_create_json_carries_the_key(run):
    result = run("keys", "create", "--name", "ops", "--role", "operator", "--json")
    data = json.loads(result.stdout)
    assert data["key"].startswith("actl_") and data["role"] == "operator"
    assert data["key"].startswith(data["key_prefix"])


def test_revoked_key_is_refused_by_the_server(run, make_server, db_url):
    live = make_server() if run.mode == "local" else None
    secret = run("keys", "create", "--name", "temp", "--role", "viewer").stdout.strip()
    assert run("keys", "revoke", "temp", "--yes").exit_code == 0
    again = run("keys", "revoke", "temp", "--yes")
    assert again.exit_code == 4 and "already revoked" in again.stderr
    states = {k["name"]: k["state"] for k in json.loads(run("keys", "list", "--json").stdout)}
    assert states["temp"] == "revoked"
    if live is not None:
        r = httpx.get(f"{live.url}/api/v1/approvals", headers={"X-API-Key": secret})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


@pytest.mark.parametrize("args,code,needle", [
    (["--name", "x", "--role", "root"], 2, "role"),
    (["--name", "a b", "--role", "user"], 2, "name"),
    (["--name", "x", "--role", "user", "--expires", "soon"], 2, "invalid --expires"),
])
def test_bad_key_requests(run, args, code, needle):
    result = run("keys", "create", *args)
    assert result.exit_code == code, result.stderr
    assert needle in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1


def test_duplicate_name_is_a_conflict_and_unknown_revoke_is_not_found(run):
    run("keys", "create", "--name", "dup", "--role", "user")
    dup = run("keys", "create", "--name", "dup", "--role", "user")
    assert dup.exit_code == 4 and "already exists" in dup.stderr and dup.stdout == ""
    missing = run("keys", "revoke", "nobody", "--yes")
    assert missing.exit_code == 3 and "no API key named 'nobody'" in missing.stderr


def test_non_admins_cannot_manage_keys_remotely(make_server):
    live = make_server()
    env = {"APPROVALCTL_SERVER": live.url, "APPROVALCTL_API_KEY": live.keys["operator"]}
    result = CliRunner().invoke(app, ["keys", "list"], env=env)
    assert result.exit_code == 5 and "may not manage API keys" in result.stderr

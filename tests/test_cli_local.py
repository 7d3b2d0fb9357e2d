"""Local-mode specifics: database selection and precedence, config file, files on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import CliRunner

from approvalctl.cli import app


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env or {}, catch_exceptions=False)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "approvalctl" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_default_database_lives_in_xdg_data_home(isolated_env: Path) -> None:
    assert run("request", "t", "--user", "bot").exit_code == 0
    db = isolated_env / "data" / "approvalctl" / "approvals.db"
    assert db.exists()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_precedence_flag_over_env_over_config(isolated_env: Path) -> None:
    cfg_db, env_db, flag_db = (isolated_env / n for n in ("cfg.db", "env.db", "flag.db"))
    write_config(isolated_env, f"db: {cfg_db}\n")
    run("request", "from-config", "--user", "b")
    run("request", "from-env", "--user", "b", env={"APPROVALCTL_DB": str(env_db)})
    run("--db", str(flag_db), "request", "from-flag", "--user", "b",
        env={"APPROVALCTL_DB": str(env_db)})
    for path, tool in ((cfg_db, "from-config"), (env_db, "from-env"), (flag_db, "from-flag")):
        listed = json.loads(run("--db", str(path), "list", "--json").stdout)
        assert [r["tool_name"] for r in listed] == [tool]


def test_config_file_location_can_be_moved(isolated_env: Path) -> None:
    other = isolated_env / "elsewhere.yaml"
    other.write_text(f"db: {isolated_env / 'moved.db'}\nuser: ci-agent\n")
    result = run("request", "t", "--json", env={"APPROVALCTL_CONFIG": str(other)})
    assert json.loads(result.stdout)["user_id"] == "ci-agent"
    assert (isolated_env / "moved.db").exists()


def test_default_user_is_the_login_name_and_self_approval_is_refused(isolated_env) -> None:
    rid = run("request", "t").stdout.strip()
    result = run("approve", rid)
    assert result.exit_code == 5
    assert "own request" in result.stderr and "allow_self_approval" in result.stderr
    write_config(isolated_env, "allow_self_approval: true\n")
    assert run("approve", rid).exit_code == 0


@pytest.mark.parametrize("text,needle", [
    ("db: [1, 2\n", "cannot read config file"),
    ("- just\n- a list\n", "must be a mapping"),
    ("colour: blue\n", "unknown setting 'colour'"),
    ("allow_self_approval: maybe\n", "allow_self_approval must be true or false"),
    ("default_ttl: forever\n", "default_ttl"),
    # one schema for the whole file: every key is checked when the file is read
    ("rate_limit: 0\n", "rate_limit must be a number of requests per second greater than "
                        "zero, got 0"),
    ("server: 5\n", "server: 5 is not of type 'string'"),
    ("notifications:\n  teams: {}\n", "notifications.teams: unknown setting"),
])
def test_broken_config_is_named(isolated_env: Path, text: str, needle: str) -> None:
    write_config(isolated_env, text)
    result = run("list")
    assert result.exit_code == 2
    assert needle in result.stderr


def test_default_ttl_from_config(isolated_env: Path) -> None:
    write_config(isolated_env, "default_ttl: 2h\n")
    req = json.loads(run("request", "t", "--user", "b", "--json").stdout)
    from approvalctl.models import from_iso

    ttl = (from_iso(req["expires_at"]) - from_iso(req["created_at"])).total_seconds()
    assert ttl == 7200


def test_not_a_database_exits_6_and_leaves_the_file_alone(isolated_env: Path) -> None:
    bogus = isolated_env / "notes.txt"
    bogus.write_text("my notes\n" * 500)
    result = run("--db", str(bogus), "list")
    assert result.exit_code == 6
    assert "not a database" in result.stderr
    assert bogus.read_text() == "my notes\n" * 500


def test_unreadable_database_exits_6(isolated_env: Path) -> None:
    if os.geteuid() == 0:
        target = "/proc/version/x.db"  # root reads everything: use a path that cannot exist
    else:
        target = str(isolated_env / "locked.db")
        Path(target).write_bytes(b"")
        os.chmod(target, 0)
    result = run("--db", target, "list")
    assert result.exit_code == 6
    assert "cannot" in result.stderr


def test_migrate_list(isolated_env: Path) -> None:
    result = run("migrate", "--list")
    assert result.exit_code == 0
    assert "0001_requests" in result.stdout and "pending" not in result.stdout
    rows = json.loads(run("migrate", "--json").stdout)
    assert all(r["applied_at"] for r in rows)


def test_help_exits_0_and_lists_every_verb() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for verb in ("request", "list", "show", "approve", "reject", "cancel", "wait", "sweep",
                 "stats", "migrate", "audit"):
        assert verb in result.stdout


def test_usage_error_exits_2() -> None:
    result = run("approve")
    assert result.exit_code == 2
    result = run("list", "--limit", "many")
    assert result.exit_code == 2


def test_a_new_setting_is_one_line_of_schema(isolated_env: Path, monkeypatch) -> None:
    from approvalctl import config

    write_config(isolated_env, "some_future_key: 5m\n")
    assert "unknown setting 'some_future_key'" in run("list").stderr
    monkeypatch.setitem(config.SCHEMA["properties"], "some_future_key", {"type": "string"})
    monkeypatch.setattr(config, "_COMPILED", [])
    assert run("list").exit_code == 0
    assert config.Settings.load().get("some_future_key") == "5m"


def test_a_repeated_key_in_the_config_file_is_refused(isolated_env: Path) -> None:
    write_config(isolated_env, "allow_self_approval: false\nallow_self_approval: true\n")
    result = run("list")
    assert result.exit_code == 2
    assert "duplicate key 'allow_self_approval'" in result.stderr and "line 2" in result.stderr

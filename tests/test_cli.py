"""The CLI contract: verbs, flags, exit codes, JSON fields, stdout vs stderr.

Every scenario runs through the `cli` fixture, which drives the real Typer app. The same
scenarios are meant to run against a live server too (remote mode), so they talk only
through the command line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
from conftest import CliRunner

from approvalctl.cli import app

FIELDS = {"id", "tool_name", "arguments", "reason", "risk", "user_id", "status", "created_at",
          "expires_at", "decided_at", "decided_by", "decision_note",
          "digest", "use_by", "consumed_at"}


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class CLI:
    """Runs approvalctl commands as the operator, or as an agent with `as_agent=True`."""

    mode = "local"

    def __init__(self, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.db_url = db_url
        self.monkeypatch = monkeypatch
        self.runner = CliRunner()
        self.env = {"APPROVALCTL_DB": db_url}
        self.agent_env = {**self.env, "APPROVALCTL_USER": "deploy-bot"}

    def run(self, *args: str, as_agent: bool = False, env: dict[str, str] | None = None
            ) -> Result:
        full_env = {**(self.agent_env if as_agent else self.env), **(env or {})}
        result = self.runner.invoke(app, list(args), env=full_env, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def submit(self, tool: str = "git_push", *args: str) -> str:
        result = self.run("request", tool, *args, as_agent=True)
        assert result.exit_code == 0, result.stderr
        return result.stdout.strip()


class RemoteCLI(CLI):
    """The same commands over HTTP: `--server` via APPROVALCTL_SERVER, with an admin key named
    like the local operator ($USER) and a `user` key for the agent."""

    mode = "remote"

    def __init__(self, db_url: str, monkeypatch: pytest.MonkeyPatch, live) -> None:
        super().__init__(db_url, monkeypatch)
        operator = live.key(os.environ["USER"], "admin")
        agent = live.key("deploy-bot", "user")
        self.env = {"APPROVALCTL_SERVER": live.url, "APPROVALCTL_API_KEY": operator}
        self.agent_env = {**self.env, "APPROVALCTL_API_KEY": agent}


@pytest.fixture(params=["local", "remote"])
def cli(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> CLI:
    if request.param == "local":
        return CLI(db_url, monkeypatch)
    # no background sweep: scenarios that sweep expect to be the ones that expire
    live = request.getfixturevalue("make_server")(sweep_interval=3600)
    return RemoteCLI(db_url, monkeypatch, live)


def test_request_prints_only_the_id(cli) -> None:
    result = cli.run("request", "git_push", "--args", '{"branch": "main"}', "--reason", "ship",
                     as_agent=True)
    assert result.exit_code == 0
    rid = result.stdout.strip()
    assert len(rid) == 26 and "\n" not in rid
    shown = cli.run("show", rid, "--json").json()
    assert set(shown) == FIELDS
    assert shown["arguments"] == {"branch": "main"}
    assert shown["reason"] == "ship"
    assert shown["user_id"] == "deploy-bot"
    assert shown["status"] == "pending"
    assert shown["risk"] == "medium"


def test_request_json_is_the_whole_object(cli) -> None:
    result = cli.run("request", "rm_rf", "--risk", "high", "--ttl", "10m", "--json",
                     as_agent=True)
    data = result.json()
    assert set(data) == FIELDS and data["risk"] == "high" and data["status"] == "pending"


def test_operator_flow_list_approve_reject(cli) -> None:
    first = cli.submit("git_push")
    second = cli.submit("db_migrate")
    listed = cli.run("list", "--json")
    assert listed.exit_code == 0
    assert [r["id"] for r in listed.json()] == [first, second]

    approved = cli.run("approve", first[:13], "--note", "ok")
    assert approved.exit_code == 0
    assert approved.stdout == ""
    assert f"approved {first}" in approved.stderr
    rejected = cli.run("reject", second, "--reason", "not today")
    assert rejected.exit_code == 0

    assert cli.run("list", "--json").json() == []
    decided = cli.run("list", "--status", "all", "--json").json()
    assert [(r["id"], r["status"]) for r in decided] == [(second, "rejected"),
                                                          (first, "approved")]
    assert decided[0]["decision_note"] == "not today"
    assert decided[1]["decision_note"] == "ok"
    assert cli.run("list", "--status", "approved", "--json").json()[0]["id"] == first


def test_list_filters_and_limit(cli) -> None:
    ids = [cli.submit(tool) for tool in ("a", "b", "a", "c")]
    assert [r["id"] for r in cli.run("list", "--tool", "a", "--json").json()] == \
        [ids[0], ids[2]]
    assert [r["id"] for r in cli.run("list", "--limit", "2", "--json").json()] == ids[:2]
    assert [r["id"] for r in cli.run("list", "--user", "deploy-bot", "--json").json()] == ids
    assert cli.run("list", "--user", "nobody", "--json").json() == []


def test_human_table_has_no_colour_off_a_tty(cli) -> None:
    rid = cli.submit("git_push", "--reason", "release 1.2")
    out = cli.run("list").stdout
    assert rid in out and "git_push" in out and "release 1.2" in out
    assert "\x1b[" not in out
    assert "\x1b[" not in cli.run("show", rid, env={"NO_COLOR": "1"}).stdout


def test_deciding_twice_is_a_conflict(cli) -> None:
    rid = cli.submit()
    assert cli.run("approve", rid).exit_code == 0
    again = cli.run("reject", rid)
    assert again.exit_code == 4
    assert "already approved" in again.stderr
    assert cli.run("cancel", rid).exit_code == 4


def test_several_ids_at_once_report_each(cli) -> None:
    a, b = cli.submit(), cli.submit()
    cli.run("approve", a)
    result = cli.run("approve", a, b, "zzzzzzzzz", "--yes")
    assert result.exit_code == 4  # the first failure decides the exit code
    assert "already approved" in result.stderr
    assert f"approved {b}" in result.stderr
    assert "no approval request 'zzzzzzzzz'" in result.stderr


def test_cancel(cli) -> None:
    rid = cli.submit()
    assert cli.run("cancel", rid, as_agent=True).exit_code == 0
    assert cli.run("show", rid, "--json").json()["status"] == "cancelled"


@pytest.mark.parametrize("status,code", [("approve", 0), ("reject", 10), ("cancel", 12)])
def test_wait_exit_codes(cli, status, code) -> None:
    rid = cli.submit()
    cli.run(status, rid)
    result = cli.run("wait", rid, "--json")
    assert result.exit_code == code
    assert result.json()["id"] == rid


def test_wait_times_out_with_124(cli) -> None:
    rid = cli.submit()
    result = cli.run("wait", rid, "--timeout", "0.2s")
    assert result.exit_code == 124
    assert "still pending" in result.stderr


def test_request_wait_on_an_expiring_request_exits_11(cli) -> None:
    result = cli.run("request", "t", "--ttl", "0.5s", "--wait", "--timeout", "10s",
                     as_agent=True)
    assert result.exit_code == 11
    assert len(result.stdout.strip()) == 26
    assert "expired" in result.stderr


def test_sweep_and_stats(cli) -> None:
    cli.run("request", "t", "--ttl", "0.1s", as_agent=True)
    keep = cli.submit()
    cli.run("approve", keep)
    import time

    time.sleep(0.2)
    swept = cli.run("sweep", "--json")
    assert swept.exit_code == 0
    assert swept.json()["expired"] == 1
    assert cli.run("sweep", "--json").json() == {"expired": 0, "ids": [], "reminders": 0,
                                                 "escalations": 0, "no_channel": 0}
    stats = cli.run("stats", "--json").json()
    assert stats["by_status"]["expired"] == 1
    assert stats["by_status"]["approved"] == 1
    assert stats["approval_rate"] == 1.0
    assert set(stats["response_time_seconds"]) == {"avg", "p50", "p95"}
    human = cli.run("stats", "--since", "7d")
    assert human.exit_code == 0 and "approval rate" in human.stdout


@pytest.mark.parametrize("args,code,needle", [
    (["request", "t", "--args", "{not json"], 2, "--args is not valid JSON"),
    (["request", "t", "--args", "[1, 2]"], 2, "must be a JSON object"),
    (["request", "t", "--args", '"text"'], 2, "must be a JSON object"),
    (["request", "shell.exec", "--args", '{"cmd": "ls", "cmd": "rm -rf /"}'], 2,
     "--args: duplicate key 'cmd'"),
    (["request", "t", "--args", '{"a": {"b": [{"c": 1, "c": 2}]}}'], 2, "duplicate key 'c'"),
    (["request", "t", "--args", '{"n": NaN}'], 2, "NaN is not valid JSON"),
    (["request", "t", "--args", '{"n": 9007199254740993}'], 2, "RFC 8785"),
    (["request", "read_file\x1b[2K"], 2, "tool_name"),
    (["request", "git push"], 2, "tool_name"),
    (["request", "t" * 201], 2, "tool_name"),
    (["request", "t", "--risk", "extreme"], 2, "unknown risk 'extreme'"),
    (["request", "t", "--ttl", "soon"], 2, "invalid --ttl 'soon'"),
    (["request", "t", "--ttl", "0"], 2, "greater than zero"),
    (["request", "t", "--ttl", "-5m"], 2, "invalid --ttl"),
    (["list", "--status", "done"], 2, "unknown status 'done'"),
    (["list", "--limit", "0"], 2, "limit must be between"),
    (["stats", "--since", "yesterday"], 2, "invalid --since"),
    (["show", "zzzzzzzz"], 3, "no approval request"),
    (["approve", "zzzzzzzz"], 3, "no approval request"),
    (["show", "bad/id"], 2, "invalid request id"),
    (["wait", "zzzzzzzz", "--timeout", "1x"], 2, "invalid --timeout"),
])
def test_bad_input_is_one_line_with_the_documented_exit_code(cli, args, code, needle) -> None:
    before = cli.run("list", "--status", "all", "--json").json()
    result = cli.run(*args, as_agent=args[0] == "request")
    assert result.exit_code == code, result.stderr
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert cli.run("list", "--status", "all", "--json").json() == before


def test_ambiguous_prefix(cli) -> None:
    ids = sorted(cli.submit() for _ in range(3))
    common = 0
    while all(i[common] == ids[0][common] for i in ids):
        common += 1
    result = cli.run("approve", ids[0][:common])
    assert result.exit_code == 2
    assert "ambiguous" in result.stderr


def test_audit_list_and_verify(cli) -> None:
    rid = cli.submit()
    cli.run("approve", rid, "--note", "fine")
    every = cli.run("audit", "list", "--json").json()
    rows = [r for r in every if r["request_id"] == rid]  # remotely: the keys' rows too
    assert [(r["action"], r["to_status"]) for r in rows] == [("create", "pending"),
                                                            ("approve", "approved")]
    assert rows[1]["detail"] == {"note": "fine"}
    assert {r["action"] for r in every} <= {"create", "approve", "key_create"}
    verified = cli.run("audit", "verify", "--json")
    assert verified.exit_code == 0
    assert verified.json()["ok"] is True and verified.json()["rows"] == len(every)
    for bad in ("0", "-1"):  # refused alike locally and remotely
        refused = cli.run("audit", "list", "--limit", bad)
        assert refused.exit_code == 2 and "limit" in refused.stderr, refused.stderr


def test_consume_once_with_the_digest_and_confirmations_show_it(cli) -> None:
    """`consume` locally and remotely: wrong digest exit 2, pending exit 4, once exit 0,
    again exit 4; `approve` and `show` print the short digest."""
    from approvalctl.digest import digest

    rid = cli.submit("shell.exec", "--args", '{"argv": ["ls"]}')
    right = digest("shell.exec", {"argv": ["ls"]})
    pending = cli.run("consume", rid, "--digest", right, as_agent=True)
    assert pending.exit_code == 4 and "is pending, not approved" in pending.stderr
    approved = cli.run("approve", rid)
    assert approved.exit_code == 0
    assert f"(shell.exec for deploy-bot, {right[:19]})" in approved.stderr
    assert right[:19] in cli.run("show", rid).stdout
    wrong = cli.run("consume", rid, "--digest", digest("shell.exec", {"argv": ["rm"]}),
                    as_agent=True)
    assert wrong.exit_code == 2 and "not that of the approved call" in wrong.stderr
    done = cli.run("consume", rid, "--digest", right, "--json", as_agent=True)
    assert done.exit_code == 0 and done.json()["consumed_at"]
    again = cli.run("consume", rid, "--digest", right, as_agent=True)
    assert again.exit_code == 4 and "already consumed" in again.stderr

"""The conventions of a good CLI (issue 14): --version, global options after the command,
`list --risk/--since`, --json everywhere, confirmation before bulk or destructive actions,
and static shell completion run in a real bash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
from conftest import CliRunner, env_for
from test_cli import CLI, RemoteCLI, cli  # noqa: F401  (the local/remote fixture)
from test_notify_cli import SLACK_URL, run, slack_config, submit  # noqa: F401

import approvalctl
from approvalctl.cli import app
from approvalctl.models import to_iso, utcnow


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"approvalctl {approvalctl.__version__}\n")


def test_db_after_the_command_wins(tmp_path, db_path) -> None:
    """`approvalctl list --db X` reads X, even with APPROVALCTL_DB or an earlier --db set."""
    other = tmp_path / "other.db"
    runner = CliRunner()
    made = runner.invoke(app, ["request", "deploy", "--db", str(other)],
                         env={"APPROVALCTL_DB": str(db_path)})
    assert made.exit_code == 0, made.stderr
    rid = made.stdout.strip()
    listed = runner.invoke(app, ["--db", str(db_path), "list", "--json", "--db", str(other)])
    assert [r["id"] for r in json.loads(listed.stdout)] == [rid]
    assert json.loads(runner.invoke(app, ["list", "--json"],
                                    env={"APPROVALCTL_DB": str(db_path)}).stdout) == []


def test_server_after_a_nested_command(tmp_path) -> None:
    result = CliRunner().invoke(app, ["keys", "list", "--server", "http://127.0.0.1:9"],
                                env={"APPROVALCTL_API_KEY": "ak_" + "x" * 40})
    assert result.exit_code == 6  # it went to the (absent) server, not the database
    assert "cannot reach approvalctl server at http://127.0.0.1:9" in result.stderr


def test_list_by_risk_and_since(cli, raw_db) -> None:  # noqa: F811
    low = cli.submit("deploy", "--risk", "low")
    high = cli.submit("deploy", "--risk", "high")
    old = cli.submit("deploy", "--risk", "high")
    raw_db.execute("UPDATE requests SET created_at = ? WHERE id = ?",
                   (to_iso(utcnow() - timedelta(days=2)), old))

    def ids(*args: str) -> list[str]:
        result = cli.run("list", "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [r["id"] for r in result.json()]

    assert ids("--risk", "high") == [high, old] if high < old else [old, high]
    assert ids("--risk", "low") == [low]
    assert ids("--since", "1d") == [low, high]
    assert ids("--since", "1d", "--risk", "high") == [high]
    assert ids("--status", "all", "--since", "3d", "--risk", "high") == [old, high]
    bad = cli.run("list", "--risk", "extreme")
    assert bad.exit_code == 2
    assert "unknown risk 'extreme'" in bad.stderr or "unknown risk extreme" in bad.stderr


def test_bulk_decisions_need_yes_off_a_terminal(cli) -> None:  # noqa: F811
    a, b = cli.submit(), cli.submit()
    refused = cli.run("reject", a, b, "--reason", "no")
    assert refused.exit_code == 2
    assert refused.stderr == ("error: rejection of 2 requests at once: pass --yes to confirm, "
                              "stdin is not a terminal\n")
    assert {r["status"] for r in cli.run("list", "--json").json()} == {"pending"}
    assert len(cli.run("list", "--json").json()) == 2
    single = cli.run("cancel", a, "--json")  # one id is not a bulk action: never asks
    assert single.exit_code == 0 and single.json()[0]["status"] == "cancelled"
    done = cli.run("cancel", b, a, "--yes")
    assert done.exit_code == 4  # b cancelled; a was already
    assert cli.run("list", "--json").json() == []


def test_keys_revoke_asks_and_reports_json(db_url) -> None:
    runner = CliRunner()
    env = {"APPROVALCTL_DB": db_url}
    assert runner.invoke(app, ["keys", "create", "--name", "ci", "--role", "user"],
                         env=env).exit_code == 0
    refused = runner.invoke(app, ["keys", "revoke", "ci"], env=env)
    assert refused.exit_code == 2
    assert "revoking an API key: pass --yes to confirm" in refused.stderr
    keys = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
    assert keys[0]["state"] == "active"
    done = runner.invoke(app, ["keys", "revoke", "ci", "--yes", "--json"], env=env)
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "ci", "state": "revoked"}


def test_notify_commands_report_json(db_url, slack_config, httpx_mock) -> None:  # noqa: F811
    rid = submit(db_url)
    httpx_mock.add_response(url=SLACK_URL, status_code=404)  # permanent: dead-lettered
    code, out, _ = run(db_url, "notify", "run", "--once", "--json")
    assert code == 0
    [outcome] = json.loads(out)
    assert (outcome["request_id"], outcome["channel"], outcome["result"]) == (
        rid, "slack", "failed")
    code, out, _ = run(db_url, "notify", "retry", "--failed", "--json")
    assert (code, json.loads(out)) == (0, {"requeued": 1})
    httpx_mock.add_response(url=SLACK_URL)
    code, out, _ = run(db_url, "notify", "test", "slack", "--json")
    assert (code, json.loads(out)) == (0, {"channel": "slack", "delivered": True,
                                           "transient": None, "error": None})
    code, _, err = run(db_url, "notify", "run", "--json")
    assert code == 2 and "--json only makes sense with --once" in err


@pytest.mark.slow
def test_bulk_approve_asks_on_a_terminal(db_url, tmp_path) -> None:
    import pexpect

    a, b = (run(db_url, "request", "deploy", env={"APPROVALCTL_USER": "deploy-bot"})[1].strip()
            for _ in range(2))
    exe = shutil.which("approvalctl")
    child = pexpect.spawn(exe, ["approve", a, b, "--db", db_url], encoding="utf-8",
                          timeout=30, cwd=str(tmp_path))
    child.expect(r"Approve 2 requests")
    child.sendline("n")
    child.expect("nothing done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert len(json.loads(run(db_url, "list", "--json")[1])) == 2
    child = pexpect.spawn(exe, ["approve", a, b, "--db", db_url], encoding="utf-8",
                          timeout=30, cwd=str(tmp_path))
    child.expect(r"Approve 2 requests")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(run(db_url, "list", "--json")[1]) == []


# ---------------------------------------------------------------- completion
def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `words` (the last one is being typed), from the script."""
    line = " ".join(f"'{w}'" for w in words)
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c",
         'eval "$SCRIPT"; complete -p approvalctl >&2; COMP_WORDS=(' + line + '); '
         'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _approvalctl; '
         'printf "%s\\n" "${COMPREPLY[@]}"'],
        env={"SCRIPT": script, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "complete -o default -F _approvalctl approvalctl" in proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    result = CliRunner().invoke(app, ["completion", "bash"])
    assert result.exit_code == 0
    return result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_offers_commands_options_and_paths(bash_script, tmp_path) -> None:
    assert _complete(bash_script, "approvalctl", "ke") == ["keys"]
    assert _complete(bash_script, "approvalctl", "keys", "") == ["create", "list", "revoke"]
    assert _complete(bash_script, "approvalctl", "--db", "x.db", "keys", "re") == ["revoke"]
    assert _complete(bash_script, "approvalctl", "list", "--ri") == ["--risk"]
    assert "--yes" in _complete(bash_script, "approvalctl", "keys", "revoke", "--")
    # global options after the command, and a value is never taken for a command
    assert _complete(bash_script, "approvalctl", "list", "--server", "") == []
    assert "--server" in _complete(bash_script, "approvalctl", "show", "--s")
    (tmp_path / "approvals.db").write_text("")
    assert _complete(bash_script, "approvalctl", "--db", str(tmp_path / "appr")) == [
        str(tmp_path / "approvals.db")]


@pytest.mark.slow
def test_installed_completion_scripts_load_in_their_shells() -> None:
    exe = shutil.which("approvalctl")
    proc = subprocess.run(["bash", "--norc", "-c",
                           f"source <({exe} completion bash); complete -p approvalctl"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "complete -o default -F _approvalctl approvalctl"
    fish = subprocess.run([exe, "completion", "fish"], capture_output=True, text=True,
                          timeout=60)
    assert "complete -c approvalctl -n __fish_use_subcommand -a review" in fish.stdout or \
        "complete -c approvalctl -n __fish_use_subcommand -a list" in fish.stdout
    for shell in ("zsh", "fish"):
        if shutil.which(shell):
            script = subprocess.run([exe, "completion", shell], capture_output=True,
                                    text=True, timeout=60).stdout
            check = subprocess.run([shell, "-c", script], capture_output=True, text=True,
                                   timeout=60)
            assert check.returncode == 0, check.stderr
    bad = subprocess.run([sys.executable, "-m", "approvalctl", "completion", "tcsh"],
                         capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stderr) == (2, "error: unknown shell 'tcsh': expected one of "
                                               "bash, zsh, fish\n")


@pytest.mark.parametrize("args, says", [
    (["approve"], "Missing argument"),
    (["require", "01abc", "abc"], "'abc' is not a valid int"),
    (["--bogus"], "No such option: --bogus"),
    (["list", "--limit"], "requires an argument"),
])
def test_usage_errors_are_one_line_and_exit_2(args, says, db_path) -> None:
    """The installed command answers a usage error like any refused input: one stderr line
    naming it and where to look, exit 2 — not Typer's multi-line usage box."""
    done = subprocess.run([sys.executable, "-m", "approvalctl", *args], env=env_for(db_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "--help" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""

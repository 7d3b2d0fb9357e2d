"""`approvalctl notify run|list|retry|test`: exit codes, output, and the config check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CliRunner, env_for
from notify_support import FAST_RETRY, SECRET

from approvalctl.cli import app

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXX"


def configure(isolated_env: Path, **notifications) -> Path:
    path = isolated_env / "config" / "approvalctl" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"notifications": notifications}))
    return path


@pytest.fixture
def slack_config(isolated_env):
    return configure(isolated_env, slack={"webhook_url": SLACK_URL,
                                          "events": ["created", "decided"]},
                     retry={**FAST_RETRY, "max_attempts": 2})


def run(db_url: str, *args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, list(args), env={"APPROVALCTL_DB": db_url, **(env or {})},
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def submit(db_url: str, tool: str = "deploy") -> str:
    code, out, err = run(db_url, "request", tool, "--reason", "ship")
    assert code == 0, err
    return out.strip()


def test_run_once_delivers_and_list_shows_it(db_url, slack_config, httpx_mock):
    rid = submit(db_url)
    httpx_mock.add_response(url=SLACK_URL)
    code, out, err = run(db_url, "notify", "run", "--once")
    assert (code, out) == (0, "")
    assert f"#1 created {rid} -> slack: sent (attempt 1)" in err
    assert "1 sent, 0 to retry, 0 failed" in err
    code, out, err = run(db_url, "notify", "list", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert {k: row[k] for k in ("id", "event", "channel", "request_id", "status", "attempts",
                                "last_error")} == {
        "id": 1, "event": "created", "channel": "slack", "request_id": rid,
        "status": "sent", "attempts": 1, "last_error": None}
    assert "payload" not in row
    code, out, _ = run(db_url, "notify", "list", "--status", "pending", "--json")
    assert json.loads(out) == []


def test_run_once_with_nothing_due_is_quiet(db_url, slack_config):
    assert run(db_url, "notify", "run", "--once") == (0, "", "")


def test_list_table_and_status_filter(db_url, slack_config, httpx_mock):
    submit(db_url, "alpha")
    httpx_mock.add_response(url=SLACK_URL, status_code=404, text="no_service")
    run(db_url, "notify", "run", "--once")
    code, out, _ = run(db_url, "notify", "list", "--status", "failed")
    assert code == 0
    assert "ID" in out and "LAST ERROR" in out
    assert "failed" in out and "Slack answered HTTP 404: no_service" in out
    code, _, err = run(db_url, "notify", "list", "--status", "sent")
    assert (code, err.strip()) == (0, "no sent notifications")


def test_list_rejects_an_unknown_status(db_url):
    code, out, err = run(db_url, "notify", "list", "--status", "done")
    assert (code, out) == (2, "")
    assert err == "error: unknown status 'done': expected one of pending, sent, failed, skipped\n"


def test_retry_one_then_all_failed(db_url, slack_config, httpx_mock):
    submit(db_url, "a")
    submit(db_url, "b")
    httpx_mock.add_response(url=SLACK_URL, status_code=400, is_reusable=True)
    run(db_url, "notify", "run", "--once")
    code, _, err = run(db_url, "notify", "retry", "1")
    assert code == 0 and "requeued #1 (created -> slack)" in err
    rows = {r["id"]: r for r in json.loads(run(db_url, "notify", "list", "--json")[1])}
    assert (rows[1]["status"], rows[1]["attempts"]) == ("pending", 0)
    assert rows[2]["status"] == "failed"
    code, _, err = run(db_url, "notify", "retry", "--failed")
    assert (code, err) == (0, "requeued 1 failed notification\n")
    statuses = {r["status"] for r in json.loads(run(db_url, "notify", "list", "--json")[1])}
    assert statuses == {"pending"}


def test_retry_errors(db_url, slack_config, httpx_mock):
    submit(db_url)
    httpx_mock.add_response(url=SLACK_URL)
    run(db_url, "notify", "run", "--once")
    assert run(db_url, "notify", "retry", "1")[0] == 4  # already sent
    code, _, err = run(db_url, "notify", "retry", "99")
    assert (code, err) == (3, "error: no notification #99 in the outbox\n")
    assert run(db_url, "notify", "retry")[0] == 2
    assert run(db_url, "notify", "retry", "1", "--failed")[0] == 2


def test_test_command_reports_the_outcome(db_url, slack_config, httpx_mock):
    httpx_mock.add_response(url=SLACK_URL)
    code, _, err = run(db_url, "notify", "test", "slack")
    assert (code, err) == (0, "slack: sample notification delivered\n")
    body = json.loads(httpx_mock.get_requests()[0].content)
    assert body["blocks"][0]["text"]["text"] == "Approval requested: shell.exec"

    httpx_mock.add_response(url=SLACK_URL, status_code=403, text="invalid_token")
    code, _, err = run(db_url, "notify", "test", "slack")
    assert code == 1
    assert err == ("error: slack: not delivered (permanent failure): Slack answered HTTP "
                   "403: invalid_token\n")

    httpx_mock.add_response(url=SLACK_URL, status_code=503)
    code, _, err = run(db_url, "notify", "test", "slack")
    assert code == 6 and "temporary failure" in err
    # `notify test` writes nothing to the outbox
    assert json.loads(run(db_url, "notify", "list", "--json")[1]) == []


def test_test_command_for_a_webhook(db_url, isolated_env, httpx_mock, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    configure(isolated_env, webhooks=[{"url": "https://hooks.example.com/a",
                                       "secret_env": "HOOK_SECRET", "events": ["created"]}])
    httpx_mock.add_response(url="https://hooks.example.com/a")
    assert run(db_url, "notify", "test", "webhook")[0] == 0
    assert "X-Approvalctl-Signature" in httpx_mock.get_requests()[0].headers
    code, _, err = run(db_url, "notify", "test", "webhook:3")
    assert (code, err) == (2, "error: unknown channel 'webhook:3': configured are webhook:0\n")


def test_without_channels_run_explains(db_url):
    code, _, err = run(db_url, "notify", "run", "--once")
    assert code == 2
    assert err.startswith("error: no notification channels configured: add a notifications:")


def test_notify_is_local_only(db_url):
    code, _, err = run(db_url, "--server", "http://127.0.0.1:9", "notify", "list")
    assert code == 2 and "cannot be used with --server" in err


def test_bad_config_is_one_line_and_exit_2_in_a_real_process(db_path, isolated_env):
    config = configure(isolated_env, slack={"webhook_url": SLACK_URL, "events": ["created"],
                                            "chanel": "#ops"})
    env = env_for(db_path)
    env["APPROVALCTL_CONFIG"] = str(config)
    proc = subprocess.run([sys.executable, "-m", "approvalctl", "notify", "run", "--once"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == ("error: config: notifications.slack.chanel: unknown setting "
                           "(known: events, timeout, webhook_url, webhook_url_env)\n")
    assert proc.stdout == ""


def test_missing_secret_is_named(db_url, isolated_env):
    configure(isolated_env, webhooks=[{"url": "https://x.example.com/",
                                       "secret_env": "NOT_SET_ANYWHERE",
                                       "events": ["created"]}])
    code, _, err = run(db_url, "notify", "test", "webhook")
    assert code == 2
    assert err == ("error: config: notifications.webhooks[0].secret_env: environment "
                   "variable NOT_SET_ANYWHERE is not set\n")


def test_request_with_an_unknown_event_in_config_fails_cleanly(db_url, isolated_env):
    configure(isolated_env, slack={"webhook_url": SLACK_URL, "events": ["approved"]})
    code, out, err = run(db_url, "request", "deploy")
    assert (code, out) == (2, "")
    assert "notifications.slack.events[0]: unknown event 'approved'" in err

"""The `notifications:` config block: schema validation that names the bad key, secrets from
the environment, and template overrides."""

from __future__ import annotations

import re

import pytest

from approvalctl.errors import InvalidInput
from approvalctl.notify import messages
from approvalctl.notify.config import load_config

GOOD = {
    "slack": {"webhook_url_env": "APPROVALCTL_SLACK_WEBHOOK_URL",
              "events": ["created", "expired"]},
    "email": {"host": "smtp.example.com", "port": 587, "starttls": True,
              "username": "ops@example.com", "password_env": "APPROVALCTL_SMTP_PASSWORD",
              "from": "approvalctl@example.com", "to": ["ops@example.com"],
              "events": ["created"]},
    "webhooks": [{"url": "https://hooks.example.com/approvals",
                  "secret_env": "APPROVALCTL_WEBHOOK_SECRET",
                  "events": ["created", "decided", "expired"]}],
}
ENV = {"APPROVALCTL_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
       "APPROVALCTL_SMTP_PASSWORD": "pw", "APPROVALCTL_WEBHOOK_SECRET": "sec"}


def test_the_design_example_loads_with_secrets_from_the_environment():
    cfg = load_config(GOOD, env=ENV)
    assert cfg.channel_names() == ["slack", "email", "webhook:0"]
    assert cfg.slack.url == ENV["APPROVALCTL_SLACK_WEBHOOK_URL"]
    assert (cfg.email.password, cfg.email.port, cfg.email.starttls) == ("pw", 587, True)
    assert cfg.webhooks[0].secret == "sec"
    assert "sec" not in repr(cfg) and "'pw'" not in repr(cfg)  # secrets never in logs


def bad(block_change, env=ENV) -> str:
    import copy

    block = copy.deepcopy(GOOD)
    block_change(block)
    with pytest.raises(InvalidInput) as info:
        load_config(block, env=env)
    return info.value.detail


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b["slack"].update(events=["create"]),
     "notifications.slack.events[0]: unknown event 'create'"),
    (lambda b: b["slack"].update(evnts=["created"]),
     "notifications.slack.evnts: unknown setting (known: events, timeout, webhook_url, "
     "webhook_url_env)"),
    (lambda b: b["email"].pop("to"), "notifications.email: 'to' is required"),
    (lambda b: b["email"].update(port="587"), "notifications.email.port: '587' is not of "
     "type 'integer'"),
    (lambda b: b["email"].update(to=["ops"]), "notifications.email.to[0]: 'ops' is not an "
     "e-mail address"),
    (lambda b: b["webhooks"][0].update(url="ftp://x"),
     "notifications.webhooks[0].url: 'ftp://x' is not an http:// or https:// URL"),
    (lambda b: b["webhooks"][0].pop("secret_env"),
     "notifications.webhooks[0]: 'secret_env' is required"),
    (lambda b: b["webhooks"][0].update(secret_env="my secret"),
     "notifications.webhooks[0].secret_env: 'my secret' is not an environment variable name"),
    (lambda b: b.update(teams={}), "notifications.teams: unknown setting"),
    (lambda b: b["slack"].update(webhook_url="https://hooks.slack.com/x"),
     "notifications.slack: set exactly one of webhook_url or webhook_url_env"),
    (lambda b: b["email"].pop("password_env"),
     "notifications.email: a login needs both username and password_env"),
    (lambda b: b.update(worker={"lease": 5}),
     "notifications.worker.lease: 5s must be longer than the slowest channel timeout (10s)"),
    (lambda b: b.update(retry={"initial_delay": "soon"}),
     "notifications.retry.initial_delay: 'soon' is not a duration"),
    (lambda b: b["slack"].update(timeout=0), "notifications.slack.timeout: 0 is not a "
     "duration"),
])
def test_a_bad_key_is_named(change, message):
    detail = bad(change)
    assert detail.startswith("config: ")
    assert message in detail


@pytest.mark.parametrize(("var", "key"), [
    ("APPROVALCTL_WEBHOOK_SECRET", "notifications.webhooks[0].secret_env"),
    ("APPROVALCTL_SMTP_PASSWORD", "notifications.email.password_env"),
    ("APPROVALCTL_SLACK_WEBHOOK_URL", "notifications.slack.webhook_url_env"),
])
def test_a_missing_secret_names_the_variable(var, key):
    env = {k: v for k, v in ENV.items() if k != var}
    assert bad(lambda b: None, env=env) == \
        f"config: {key}: environment variable {var} is not set"


def test_durations_accept_numbers_and_short_forms():
    cfg = load_config({**GOOD, "retry": {"initial_delay": "30s", "max_delay": "2h",
                                         "max_attempts": 5},
                       "worker": {"lease": 60, "poll_interval": "1s"}}, env=ENV)
    assert (cfg.retry.initial_delay, cfg.retry.max_delay, cfg.retry.max_attempts) == \
        (30, 7200, 5)
    assert (cfg.worker.lease, cfg.worker.poll_interval) == (60, 1)


def test_template_override_from_the_user_config_dir(isolated_env):
    folder = isolated_env / "config" / "approvalctl" / "templates"
    folder.mkdir(parents=True)
    (folder / "email_subject.txt").write_text("APPROVE? ${tool_name} by ${user_id}\n")
    subject, plain, _ = messages.email_parts("created", messages.SAMPLE_REQUEST)
    assert subject == "APPROVE? shell.exec by approvalctl-test"
    assert "approvalctl approve 01kzzzzzzzzzzzzzzzzzzzzzzz" in plain  # shipped default


def test_template_override_from_templates_dir_wins(isolated_env, tmp_path):
    user = isolated_env / "config" / "approvalctl" / "templates"
    user.mkdir(parents=True)
    (user / "email.txt").write_text("user dir\n")
    explicit = tmp_path / "mine"
    explicit.mkdir()
    (explicit / "email.txt").write_text("explicit ${id}\n")
    _, plain, _ = messages.email_parts("created", messages.SAMPLE_REQUEST, str(explicit))
    assert plain == "explicit 01kzzzzzzzzzzzzzzzzzzzzzzz\n"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("email.txt", "hi ${nobody}", "template email.txt: unknown placeholder $nobody"),
    ("email.html", "cost: $5", "template email.html: Invalid placeholder"),
    ("slack.json", '{"text": ${headline}}', "template slack.json is not valid JSON"),
])
def test_a_broken_override_is_reported_at_start_up(isolated_env, name, text, message):
    folder = isolated_env / "config" / "approvalctl" / "templates"
    folder.mkdir(parents=True)
    (folder / name).write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        messages.check_templates()

"""docs/notifications.md cannot go stale: its config example loads, its receiver code
verifies a real signature, and every template placeholder it lists exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from approvalctl.notify import channels, messages
from approvalctl.notify.config import load_config

DOC = (Path(__file__).resolve().parents[1] / "docs" / "notifications.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def test_the_documented_config_is_valid():
    block = yaml.safe_load(blocks("yaml")[0])["notifications"]
    env = {"APPROVALCTL_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
           "APPROVALCTL_SMTP_PASSWORD": "pw", "APPROVALCTL_WEBHOOK_SECRET": "s"}
    cfg = load_config(block, env=env)
    assert cfg.channel_names() == ["slack", "email", "webhook:0"]
    assert (cfg.retry.max_attempts, cfg.retry.initial_delay, cfg.retry.max_delay) == \
        (8, 10, 3600)  # "these are the defaults"
    defaults = load_config({}, env={})
    assert (defaults.retry, defaults.worker) == (cfg.retry, cfg.worker)


def test_the_documented_receiver_code_verifies_a_real_signature():
    namespace: dict = {}
    exec(blocks("python")[0], namespace)  # noqa: S102 - our own documentation
    verify = namespace["verify"]
    body = channels.webhook_body(7, "created", messages.SAMPLE_REQUEST)
    header = channels.sign("topsecret", body)
    assert verify("topsecret", body, header)
    assert not verify("topsecret", body + b" ", header)
    assert not verify("wrong", body, header)
    stale = channels.sign("topsecret", body, timestamp=1_000_000_000)
    assert not verify("topsecret", body, stale)


def test_every_documented_placeholder_exists():
    section = DOC.split("## Templates", 1)[1]
    listed = set(re.findall(r"`([a-z_]+)`", section.split("Placeholders", 1)[1]))
    known = set(messages.variables("created", messages.SAMPLE_REQUEST, "text"))
    assert listed == known
    for name in messages.TEMPLATES:
        assert f"`{name}`" in section

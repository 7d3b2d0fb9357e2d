"""E-mail over SMTP against a real in-process SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import time
from typing import Any

import pytest
from notify_support import free_port, notify_settings, until

from approvalctl.notify.config import from_settings
from approvalctl.notify.worker import process_due
from approvalctl.service import ApprovalService


class Mailbox:
    """An aiosmtpd handler that keeps what it receives, or answers with a scripted error."""

    def __init__(self, rcpt_reply: str | None = None, data_reply: str | None = None) -> None:
        self.messages: list[Any] = []
        self.envelopes: list[Any] = []
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted for delivery"


def smtp_server(handler: Mailbox, port: int, **kwargs: Any):
    from aiosmtpd.controller import Controller

    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


def email_settings(port: int, **extra: Any):
    return notify_settings(email={"host": "127.0.0.1", "port": port, "starttls": False,
                                  "from": "approvalctl@example.com",
                                  "to": ["ops@example.com", "oncall@example.com"],
                                  "events": ["created", "expired"], "timeout": 5, **extra})


def test_message_is_received_with_plain_text_and_html(store, agent):
    port = free_port()
    box = Mailbox()
    controller = smtp_server(box, port)
    try:
        settings = email_settings(port)
        svc = ApprovalService(store, settings)
        req = svc.create(agent, "db_migrate", {"target": "prod"}, reason="schema <v7>",
                         risk="high")
        report = process_due(store, from_settings(settings))
    finally:
        controller.stop()
    assert [o.result for o in report.outcomes] == ["sent"]
    assert len(box.messages) == 1
    env, msg = box.envelopes[0], box.messages[0]
    assert env.mail_from == "approvalctl@example.com"
    assert env.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert msg["Subject"] == "[approvalctl] Approval requested: db_migrate (high risk)"
    assert msg["From"] == "approvalctl@example.com"
    assert msg["To"] == "ops@example.com, oncall@example.com"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for body in (plain, html):
        assert f"approvalctl approve {req.id}" in body
        assert f"approvalctl reject {req.id}" in body
        assert req.expires_at in body and "deploy-bot" in body
    assert "Reason:        schema <v7>" in plain
    assert "<td>schema &lt;v7&gt;</td>" in html  # escaped in HTML, never raw markup
    assert '"target": "prod"' in plain
    seq, head = store.audit_head()  # the chain head the creation left, usable as an anchor
    assert f"audit head {seq}:{head}" in plain
    assert store.list_outbox()[0]["status"] == "sent"


def test_login_when_configured(store, agent, monkeypatch):
    from aiosmtpd.smtp import AuthResult

    port = free_port()
    box = Mailbox()

    def authenticator(server, session, envelope, mechanism, auth_data):
        box.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"app-password-123")

    monkeypatch.setenv("TEST_SMTP_PASSWORD", "app-password-123")
    controller = smtp_server(box, port, authenticator=authenticator, auth_require_tls=False)
    try:
        settings = email_settings(port, username="ops@example.com",
                                  password_env="TEST_SMTP_PASSWORD")
        ApprovalService(store, settings).create(agent, "deploy")
        process_due(store, from_settings(settings))
    finally:
        controller.stop()
    assert box.logins == [("ops@example.com", "app-password-123")]
    assert len(box.messages) == 1


def test_smtp_down_then_up_is_delivered(store, agent):
    port = free_port()  # nothing listens here yet
    settings = email_settings(port)
    cfg = from_settings(settings)
    ApprovalService(store, settings).create(agent, "deploy")
    first = process_due(store, cfg).outcomes[0]
    assert first.result == "retry" and "ConnectionRefusedError" in first.error
    box = Mailbox()
    controller = smtp_server(box, port)
    try:
        until(lambda: process_due(store, cfg).outcomes or None)
    finally:
        controller.stop()
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert len(box.messages) == 1


def test_smtp_4xx_is_retried(store, agent):
    port = free_port()
    box = Mailbox(data_reply="451 4.3.0 try again later")
    controller = smtp_server(box, port)
    try:
        settings = email_settings(port)
        cfg = from_settings(settings)
        ApprovalService(store, settings).create(agent, "deploy")
        first = process_due(store, cfg).outcomes[0]
        assert first.result == "retry" and "451" in first.error
        box.data_reply = None  # the server recovers
        until(lambda: process_due(store, cfg).outcomes or None)
    finally:
        controller.stop()
    assert store.list_outbox()[0]["status"] == "sent"
    assert len(box.messages) == 1


@pytest.mark.parametrize("where", ["rcpt", "data"])
def test_smtp_5xx_is_dead_lettered_at_once(store, agent, where):
    port = free_port()
    reply = "550 5.1.1 mailbox unavailable"
    box = Mailbox(rcpt_reply=reply) if where == "rcpt" else Mailbox(data_reply=reply)
    controller = smtp_server(box, port)
    try:
        settings = email_settings(port)
        cfg = from_settings(settings)
        ApprovalService(store, settings).create(agent, "deploy")
        assert process_due(store, cfg).outcomes[0].result == "failed"
        time.sleep(0.3)
        assert process_due(store, cfg).outcomes == []
    finally:
        controller.stop()
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "550" in row["last_error"] and "mailbox unavailable" in row["last_error"]


def test_notify_test_email_sends_a_sample(db_url, isolated_env):
    import yaml
    from conftest import CliRunner

    from approvalctl.cli import app

    port = free_port()
    box = Mailbox()
    config = isolated_env / "config" / "approvalctl" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"notifications": email_settings(port).notifications}))
    controller = smtp_server(box, port)
    try:
        result = CliRunner().invoke(app, ["notify", "test", "email"],
                                    env={"APPROVALCTL_DB": db_url})
    finally:
        controller.stop()
    assert (result.exit_code, result.stderr) == (0, "email: sample notification delivered\n")
    assert box.messages[0]["Subject"] == "[approvalctl] Approval requested: shell.exec (low " \
                                         "risk)"
    result = CliRunner().invoke(app, ["notify", "test", "email"],
                                env={"APPROVALCTL_DB": db_url})  # the server is gone now
    assert result.exit_code == 6
    assert result.stderr.startswith("error: email: not delivered (temporary failure): SMTP "
                                    f"127.0.0.1:{port}: ConnectionRefusedError")


class Greylist(Mailbox):
    """Answers 451 for `grey` until `open_after` RCPTs for it were refused; 550 for `bad`."""

    def __init__(self, grey: str, open_after: int = 1, bad: str | None = None) -> None:
        super().__init__()
        self.grey, self.open_after, self.bad = grey, open_after, bad
        self.rcpts: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.rcpts.append(address)
        if address == self.bad:
            return "550 5.1.1 no such mailbox"
        if address == self.grey and self.rcpts.count(address) <= self.open_after:
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_greylisted_recipient_alone_is_retried(store, agent):
    """#12.9: 451 for one of two recipients: only that one is tried again, the other
    gets the message exactly once, and the row says who accepted on which attempt."""
    port = free_port()
    box = Greylist("oncall@example.com")
    controller = smtp_server(box, port)
    try:
        settings = email_settings(port)
        svc = ApprovalService(store, settings)
        svc.create(agent, "db_migrate")
        cfg = from_settings(settings)
        first = process_due(store, cfg)
        assert [o.result for o in first.outcomes] == ["retry"]
        row = store.list_outbox()[0]
        assert row["status"] == "pending"
        assert row["last_error"] == (
            f"SMTP 127.0.0.1:{port}: accepted by <ops@example.com>; <oncall@example.com> "
            "451 4.7.1 greylisted, try again later (temporary, retried)")
        until(lambda: process_due(store, cfg).outcomes, timeout=10, step=0.05)
    finally:
        controller.stop()
    assert [e.rcpt_tos for e in box.envelopes] == [["ops@example.com"],
                                                   ["oncall@example.com"]]
    assert box.rcpts == ["ops@example.com", "oncall@example.com", "oncall@example.com"]
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert row["last_error"] == (f"SMTP 127.0.0.1:{port}: accepted by <oncall@example.com>, "
                                 "<ops@example.com>")


def test_permanent_refusal_of_one_recipient_is_not_retried(store, agent):
    port = free_port()
    box = Greylist("nobody@example.com", bad="oncall@example.com")
    controller = smtp_server(box, port)
    try:
        settings = email_settings(port)
        ApprovalService(store, settings).create(agent, "db_migrate")
        report = process_due(store, from_settings(settings))
    finally:
        controller.stop()
    assert [o.result for o in report.outcomes] == ["failed"]
    assert [e.rcpt_tos for e in box.envelopes] == [["ops@example.com"]]
    row = store.list_outbox()[0]
    assert row["last_error"] == (f"SMTP 127.0.0.1:{port}: accepted by <ops@example.com>; "
                                 "<oncall@example.com> 550 5.1.1 no such mailbox (permanent)")


def test_per_recipient_outcome_in_notify_list_json(db_path, agent, monkeypatch):
    """The per-recipient record is what `notify list --json` shows in last_error."""
    import json

    from conftest import CliRunner

    from approvalctl.cli import app
    from approvalctl.store import open_store

    port = free_port()
    box = Greylist("oncall@example.com", open_after=99)
    controller = smtp_server(box, port)
    store = open_store(str(db_path))
    try:
        settings = email_settings(port)
        ApprovalService(store, settings).create(agent, "db_migrate")
        process_due(store, from_settings(settings))
    finally:
        controller.stop()
        store.close()
    out = CliRunner().invoke(app, ["--db", str(db_path), "notify", "list", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["last_error"].startswith(
        f"SMTP 127.0.0.1:{port}: accepted by <ops@example.com>; <oncall@example.com> 451")

"""Reminders and escalation of pending requests (issue #15), on both backends.

Real HTTP receivers on 127.0.0.1 stand in for Slack and webhooks. The steps are due by the
clock that decides expiry (the database server's on PostgreSQL), so the tests use a
`remind_after` of 1s and poll until the step is due; what they assert is counts, never
times: exactly one reminder per channel, one escalation to `escalate_to` only, whoever
sweeps and however many sweep at once, and nothing after a decision.
"""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from conftest import env_for, free_port, stop_process
from notify_support import SECRET, Receiver, notify_settings, until, webhook

from approvalctl.config import Settings
from approvalctl.errors import InvalidInput
from approvalctl.models import Principal, from_iso, to_iso, utcnow
from approvalctl.notify.config import from_settings, load_config
from approvalctl.notify.worker import run_once
from approvalctl.service import ApprovalService
from approvalctl.store import open_store

AGENT = Principal("deploy-bot", "user")
OPERATOR = Principal("olivia", "operator")
ADMIN = Principal("root-admin", "admin", local=True)
#: A sweep that queued nothing and left nothing.
NONE = {"reminders": 0, "escalations": 0, "no_channel": 0}


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)


def _settings(first: str, second: str, **steps) -> Settings:
    """Two webhooks: webhook:0 hears of new requests, webhook:1 only of decisions (the
    escalation target); plus the given reminder settings."""
    return notify_settings(webhooks=[webhook(first, ["created", "decided"]),
                                     webhook(second, ["decided"])], **steps)


def _events(receiver: Receiver) -> list[tuple[str, str]]:
    return [(json.loads(r["body"])["event"], json.loads(r["body"])["request"]["id"])
            for r in receiver.requests]


def _due(svc: ApprovalService, kind: str = "reminders") -> dict[str, int]:
    """Sweep until a step of `kind` is queued (the steps fall due by the clock)."""
    return until(lambda: (lambda got: got if got[kind] else None)(svc.send_reminders()),
                 timeout=20, step=0.1)


def test_one_reminder_per_channel_with_links_then_nothing_more(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s")
        settings.file = {"public_url": "https://approvals.example.com"}
        svc = ApprovalService(store, settings)
        req = svc.create(AGENT, "deploy.run", {"env": "prod"}, reason="ship it")
        assert svc.send_reminders() == NONE  # not due yet
        assert _due(svc) == {"reminders": 1, "escalations": 0, "no_channel": 0}
        assert svc.send_reminders() == NONE  # once only
        run_once(store, from_settings(settings))
        assert svc.send_reminders() == NONE
        run_once(store, from_settings(settings))
        assert sorted(_events(first)) == [("created", req.id), ("reminder", req.id)]
        assert second.requests == []  # not a `created` channel: no reminder there
        body = next(json.loads(r["body"]) for r in first.requests
                    if json.loads(r["body"])["event"] == "reminder")
    assert body["request"]["step"] == {"name": "remind", "after_seconds": 1}
    assert body["request"]["status"] == "pending"


def test_reminder_messages_say_so_and_carry_the_links(store):
    with Receiver() as slack:
        settings = notify_settings(slack={"webhook_url": slack.url, "events": ["created"]},
                                   remind_after="1s")
        settings.file = {"public_url": "https://approvals.example.com"}
        svc = ApprovalService(store, settings)
        svc.create(AGENT, "deploy.run", {"cmd": "<script>x</script>\n`rm`"},
                   reason="<!channel> hi")
        _due(svc)
        run_once(store, from_settings(settings))
        # one batch sends both at once, in any order
        got = sorted((json.loads(r["body"]) for r in slack.requests),
                     key=lambda m: m["text"].startswith("Reminder"))
        created, reminder = got
    assert reminder["text"].startswith("Reminder: still pending after 1s: deploy.run")
    text = json.dumps(reminder)
    assert "https://approvals.example.com/d/" in text and "Approve" in text
    assert "<!channel>" not in text and "<script>" not in text  # the one safe renderer
    assert created["text"].startswith("Approval requested")


def test_escalation_goes_to_escalate_to_only(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, escalate_after="1s",
                             escalate_to=["webhook:1"])
        svc = ApprovalService(store, settings)
        req = svc.create(AGENT, "deploy.run", {"env": "prod"})
        assert _due(svc, "escalations") == {"reminders": 0, "escalations": 1, "no_channel": 0}
        assert svc.send_reminders()["escalations"] == 0
        run_once(store, from_settings(settings))
        assert _events(first) == [("created", req.id)]
        assert _events(second) == [("escalated", req.id)]
        body = json.loads(second.requests[0]["body"])
    assert body["request"]["step"]["name"] == "escalate"


def test_nothing_after_a_decision_or_cancel(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s",
                             escalate_after="1s", escalate_to=["webhook:1"])
        svc = ApprovalService(store, settings)
        decided = svc.create(AGENT, "deploy.run", {"n": 1})
        cancelled = svc.create(AGENT, "deploy.run", {"n": 2})
        svc.decide(OPERATOR, decided.id, "approve")
        svc.cancel(AGENT, cancelled.id)
        waiting = svc.create(AGENT, "deploy.run", {"n": 3})
        got = _due(svc)
        assert got == {"reminders": 1, "escalations": 1, "no_channel": 0}  # the pending one
        assert [s for s, _ in store.steps_taken(decided.id)] == []
        assert [s for s, _ in store.steps_taken(cancelled.id)] == []
        assert sorted(s for s, _ in store.steps_taken(waiting.id)) == ["escalate", "remind"]


def test_a_reminder_queued_before_the_decision_is_not_sent_after_it(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s")
        svc = ApprovalService(store, settings)
        req = svc.create(AGENT, "deploy.run", {"n": 1})
        _due(svc)  # queued, not yet delivered
        svc.decide(OPERATOR, req.id, "reject", note="no")
        report = run_once(store, from_settings(settings))
        assert sorted(e for e, _ in _events(first)) == ["created", "decided"]
    rows = {r["event"]: r for r in store.list_outbox()}
    assert rows["reminder"]["status"] == "skipped"
    assert rows["reminder"]["last_error"] == "not sent: the request is rejected now"
    assert report.summary() == "3 sent, 0 to retry, 0 failed, 1 skipped (no longer pending)"


def _race(db_url: str, settings: Settings, sweepers: int = 2) -> list[dict[str, int]]:
    """`sweepers` threads, each with its own store (own connections), sweep at once."""
    stores = [open_store(db_url) for _ in range(sweepers)]
    services = [ApprovalService(s, settings) for s in stores]
    start = threading.Barrier(sweepers)
    results: list[dict[str, int]] = []
    lock = threading.Lock()

    def sweep(svc: ApprovalService) -> None:
        start.wait()
        for _ in range(5):
            got = svc.send_reminders()
            with lock:
                results.append(got)

    threads = [threading.Thread(target=sweep, args=(svc,)) for svc in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    return results


def test_two_concurrent_sweepers_queue_each_step_once(store, db_url):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s", escalate_after="1s",
                             escalate_to=["webhook:1"])
        svc = ApprovalService(store, settings)
        ids = [svc.create(AGENT, "deploy.run", {"n": i}).id for i in range(30)]
        # wait until every step is due (by the deciding clock), without queueing any
        due = to_iso(from_iso(svc.get(OPERATOR, ids[-1]).created_at) + timedelta(seconds=1))
        until(lambda: (store.db_now() or to_iso(utcnow())) >= due, timeout=20, step=0.05)
        results = _race(db_url, settings)
        assert sum(r["reminders"] for r in results) == 30
        assert sum(r["escalations"] for r in results) == 30
        run_once(store, from_settings(settings))
        reminders = [i for e, i in _events(first) if e == "reminder"]
        escalations = [i for e, i in _events(second) if e == "escalated"]
    assert sorted(reminders) == sorted(ids) and sorted(escalations) == sorted(ids)


def test_a_rule_sets_its_own_steps_and_unknown_channels_are_refused(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url)  # no global reminders at all
        svc = ApprovalService(store, settings)
        with pytest.raises(InvalidInput, match="escalate_to: channel 'ntfy' is not "
                                               "configured"):
            svc.add_rule(ADMIN, {"name": "prod", "tools": ["deploy.*"], "action": "ask",
                                 "escalate_after": "1s", "escalate_to": ["ntfy"]})
        with pytest.raises(InvalidInput, match="escalate_after and escalate_to go together"):
            svc.add_rule(ADMIN, {"name": "prod", "tools": ["deploy.*"], "action": "ask",
                                 "escalate_after": "1s"})
        with pytest.raises(InvalidInput, match="applies to rules whose action is ask"):
            svc.add_rule(ADMIN, {"name": "prod", "tools": ["deploy.*"], "action": "allow",
                                 "remind_after": "1m"})
        with pytest.raises(InvalidInput, match="remind_after: invalid"):
            svc.add_rule(ADMIN, {"name": "prod", "tools": ["deploy.*"], "action": "ask",
                                 "remind_after": "soon"})
        with pytest.raises(InvalidInput, match=r"rule 1: rule 'p': escalate_to: channel "
                                               r"'webhook:7' is not configured"):
            svc.import_rules(ADMIN, [{"name": "p", "tools": ["x"], "action": "ask",
                                      "escalate_after": 5, "escalate_to": ["webhook:7"]}])
        stored = svc.add_rule(ADMIN, {"name": "prod", "tools": ["deploy.*"], "action": "ask",
                                      "remind_after": "1s", "escalate_after": "1s",
                                      "escalate_to": ["webhook:1"]})
        assert stored["remind_after"] == 1 and stored["escalate_to"] == ["webhook:1"]
        ruled = svc.create(AGENT, "deploy.run", {"n": 1})
        other = svc.create(AGENT, "build.run", {"n": 2})  # no rule: no steps
        _due(svc)
        run_once(store, from_settings(settings))
        assert sorted(_events(first)) == sorted([("created", ruled.id), ("created", other.id),
                                                 ("reminder", ruled.id)])
        assert _events(second) == [("escalated", ruled.id)]


def test_config_is_checked_by_the_one_schema(monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    hook = webhook("https://example.com/h")
    with pytest.raises(InvalidInput, match="escalate_after and escalate_to go together"):
        load_config({"webhooks": [hook], "escalate_after": "10m"})
    with pytest.raises(InvalidInput, match=r"notifications\.remind_after: 'soon' is not a "
                                           "duration"):
        load_config({"webhooks": [hook], "remind_after": "soon"})
    with pytest.raises(InvalidInput, match="escalate_to: 'pager' is not a channel name"):
        load_config({"webhooks": [hook], "escalate_after": "1m", "escalate_to": ["pager"]})
    with pytest.raises(InvalidInput, match="escalate_to: channel 'slack' is not configured"):
        load_config({"webhooks": [hook], "escalate_after": "1m", "escalate_to": ["slack"]})
    cfg = load_config({"webhooks": [hook, hook], "remind_after": "10m",
                       "escalate_after": 1800, "escalate_to": ["webhook:1"]})
    assert cfg.webhooks
    from approvalctl.config import Settings

    for huge in ("99999999999d", 10**12):  # overflowed a date before: a traceback, a 500
        with pytest.raises(InvalidInput, match="remind_after must be a duration between"):
            Settings(notifications={"remind_after": huge}).reminders()


# ---------------------------------------------------------------- a real `approvalctl serve`
def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    import time

    import httpx

    proc = subprocess.Popen(["approvalctl", "serve", "--port", str(port), "--sweep-interval",
                             "0.2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_reminds_and_escalates_once_across_a_restart(db_url, tmp_path: Path):
    with Receiver() as first, Receiver() as second:
        config = tmp_path / "config.yaml"
        block = {"webhooks": [webhook(first.url, ["created", "decided"]),
                              webhook(second.url, ["decided"])],
                 "worker": {"poll_interval": 0.1, "lease": 30},
                 "remind_after": "1s", "escalate_after": "4s", "escalate_to": ["webhook:1"]}
        config.write_text(yaml.safe_dump({"notifications": block}))
        env = {**env_for(db_url), "APPROVALCTL_CONFIG": str(config),
               "TEST_WEBHOOK_SECRET": SECRET}
        port = free_port()
        store = open_store(db_url)
        svc = ApprovalService(store, Settings(db=db_url, notifications=block))
        server = _serve(env, port)
        try:
            req = svc.create(AGENT, "deploy.run", {"env": "prod"})
            until(lambda: ("reminder", req.id) in _events(first), timeout=30)
            stop_process(server)  # restarted between the steps
            server = _serve(env, port)
            until(lambda: ("escalated", req.id) in _events(second), timeout=30)
            # a second server on the same database sweeps too
            other = _serve(env, free_port())
            try:
                svc.decide(OPERATOR, req.id, "approve")
                until(lambda: ("decided", req.id) in _events(first), timeout=30)
                late = svc.create(AGENT, "deploy.run", {"env": "dev"})
                until(lambda: ("escalated", late.id) in _events(second) and
                      ("reminder", late.id) in _events(first), timeout=30)
            finally:
                stop_process(other)
        finally:
            stop_process(server)
            store.close()
        assert [e for e, i in _events(first) if i == req.id] == ["created", "reminder",
                                                                  "decided"]
        assert [e for e, i in _events(second) if i == req.id] == ["escalated", "decided"]
        assert [e for e, i in _events(first) if i == late.id] == ["created", "reminder"]
        assert [e for e, i in _events(second) if i == late.id] == ["escalated"]


def test_email_reminder_and_ntfy_escalation_carry_their_own_links(store, monkeypatch):
    from test_notify_email import Mailbox, smtp_server

    port = free_port()
    box = Mailbox()
    controller = smtp_server(box, port)
    try:
        with Receiver() as ntfy:
            settings = notify_settings(
                email={"host": "127.0.0.1", "port": port, "starttls": False,
                       "from": "approvalctl@example.com", "to": ["ops@example.com"],
                       "events": ["created"], "timeout": 5},
                ntfy={"url": ntfy.url, "topic": "oncall", "events": ["expired"]},
                remind_after="1s", escalate_after="1s", escalate_to=["ntfy"])
            settings.file = {"public_url": "https://approvals.example.com"}
            svc = ApprovalService(store, settings)
            req = svc.create(AGENT, "db.drop", {"table": "users"}, reason="<b>now</b>",
                             risk="high")
            until(lambda: svc.send_reminders()["escalations"], timeout=20, step=0.1)
            run_once(store, from_settings(settings))
            pushed = [json.loads(r["body"]) for r in ntfy.requests]
    finally:
        controller.stop()
    subjects = sorted(m["Subject"] for m in box.messages)
    assert subjects == ["[approvalctl] Approval requested: db.drop (high risk)",
                        "[approvalctl] Reminder: still pending after 1s: db.drop (high risk)"]
    reminder = next(m for m in box.messages if "Reminder" in m["Subject"])
    plain = reminder.get_body(("plain",)).get_content()
    html = reminder.get_body(("html",)).get_content()
    assert "Approve: https://approvals.example.com/d/" in plain
    assert "&lt;b&gt;now&lt;/b&gt;" in html and "<b>now</b>" not in html
    assert len(pushed) == 1 and pushed[0]["title"] == "Escalated: nobody decided in 1s: db.drop"
    assert pushed[0]["priority"] == 5
    buttons = {a["label"]: a["url"] for a in pushed[0]["actions"]}
    assert set(buttons) == {"Approve…", "Reject…"}
    # the ntfy links are signed for the ntfy topic, the e-mail's for the mailbox
    from approvalctl.notify import links

    key = store.server_secret(links.KEY_NAME, links.new_key, "2026-01-01T00:00:00.000Z")
    token = buttons["Approve…"].rsplit("/", 1)[1]
    assert links.read_token(key, token).recipient == "ntfy:oncall"
    assert req.id in json.dumps(pushed[0])


def test_a_standalone_worker_queues_and_delivers_reminders(store, monkeypatch):
    from approvalctl.notify.worker import run_forever

    monkeypatch.setattr("approvalctl.notify.worker.TICK_SECONDS", 0.1)

    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s")
        svc = ApprovalService(store, settings)
        req = svc.create(AGENT, "deploy.run", {"n": 1})
        stop = threading.Event()
        worker = threading.Thread(target=run_forever, args=(store, from_settings(settings),
                                                            stop),
                                  kwargs={"tick": svc.send_reminders}, daemon=True)
        worker.start()
        try:
            until(lambda: ("reminder", req.id) in _events(first), timeout=20)
        finally:
            stop.set()
            worker.join(30)
        assert sorted(_events(first)) == [("created", req.id), ("reminder", req.id)]


def test_cli_rules_add_takes_the_reminder_flags_and_refuses_unknown_channels(db_url,
                                                                            tmp_path):
    from conftest import CliRunner

    from approvalctl.cli import app

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"notifications": {
        "webhooks": [webhook("https://example.com/a"), webhook("https://example.com/b")]}}))
    env = {"APPROVALCTL_DB": db_url, "APPROVALCTL_CONFIG": str(config)}
    r = CliRunner().invoke(app, ["rules", "add", "prod", "--action", "ask", "--tool", "x*",
                                 "--escalate-after", "5m", "--escalate-to", "slack"], env=env)
    assert r.exit_code == 2
    assert r.stderr == ("error: rule 'prod': escalate_to: channel 'slack' is not configured "
                        "(configured: webhook:0, webhook:1)\n")
    r = CliRunner().invoke(app, ["rules", "add", "prod", "--action", "ask", "--tool", "x*",
                                 "--remind-after", "soon"], env=env)
    assert r.exit_code == 2 and "--remind-after" in r.stderr
    r = CliRunner().invoke(app, ["rules", "add", "prod", "--action", "ask", "--tool", "x*",
                                 "--remind-after", "2m", "--escalate-after", "10m",
                                 "--escalate-to", "webhook:1", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"name": "prod", "tools": ["x*"], "action": "ask",
                                    "remind_after": 120.0, "escalate_after": 600.0,
                                    "escalate_to": ["webhook:1"]}


def test_an_expired_request_gets_no_reminder(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url, remind_after="1s")
        svc = ApprovalService(store, settings)
        short = svc.create(AGENT, "deploy.run", {"n": 1}, ttl_seconds=1)
        until(lambda: svc.sweep(), timeout=20, step=0.1)  # expired (by the deciding clock)
        longer = svc.create(AGENT, "deploy.run", {"n": 2})
        _due(svc)
        assert store.steps_taken(short.id) == []
        assert [s for s, _ in store.steps_taken(longer.id)] == ["remind"]


# ------------------------------------------------ a sweeper without the channels claims nothing
def _wait_until_due(store, svc: ApprovalService, request_id: str, seconds: float = 1) -> None:
    """Wait until a step `seconds` after the request's creation is due by the deciding
    clock, without sweeping (so no step is queued meanwhile)."""
    created = from_iso(svc.get(OPERATOR, request_id).created_at)
    due = to_iso(created + timedelta(seconds=seconds))
    until(lambda: (store.db_now() or to_iso(utcnow())) >= due, timeout=20, step=0.05)


def _step_rows(store) -> list[tuple[str, str, str]]:
    return sorted((r["event"], r["channel"], r["request_id"]) for r in store.list_outbox()
                  if r["event"] in ("reminder", "escalated"))


def test_a_sweep_without_channels_claims_nothing_and_the_right_one_sends_once(
        store, db_url, tmp_path):
    from conftest import CliRunner

    from approvalctl.cli import app

    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url)  # no global reminders: the rule's
        svc = ApprovalService(store, settings)
        svc.add_rule(ADMIN, {"name": "esc", "tools": ["e.*"], "action": "ask",
                             "remind_after": "1s", "escalate_after": "1s",
                             "escalate_to": ["webhook:0"]})
        req = svc.create(AGENT, "e.x", {"n": 1})
        _wait_until_due(store, svc, req.id)
        # cron under another HOME: a config with no notification channels at all
        bare = tmp_path / "bare.yaml"
        bare.write_text(yaml.safe_dump({"db": db_url}))
        env = {"APPROVALCTL_DB": db_url, "APPROVALCTL_CONFIG": str(bare)}
        r = CliRunner().invoke(app, ["sweep"], env=env)
        assert r.exit_code == 0, r.output
        assert "queued" not in r.stderr
        assert "2 due step(s) left" in r.stderr and "no channel" in r.stderr
        r = CliRunner().invoke(app, ["sweep", "--json"], env=env)
        assert json.loads(r.stdout) == {"expired": 0, "ids": [], "reminders": 0,
                                        "escalations": 0, "no_channel": 2}
        assert store.steps_taken(req.id) == []  # still to be sent
        assert _step_rows(store) == []
        # the sweeper with the webhooks queues both, once
        assert svc.send_reminders() == {"reminders": 1, "escalations": 1, "no_channel": 0}
        assert svc.send_reminders() == {"reminders": 0, "escalations": 0, "no_channel": 0}
        assert sorted(s for s, _ in store.steps_taken(req.id)) == ["escalate", "remind"]
        run_once(store, from_settings(settings))
        assert sorted(_events(first)) == sorted([("created", req.id), ("reminder", req.id),
                                                 ("escalated", req.id)])
        assert second.requests == []


def test_an_escalation_to_a_channel_the_sweeper_lacks_is_not_claimed(store):
    with Receiver() as first, Receiver() as second:
        settings = _settings(first.url, second.url)
        svc = ApprovalService(store, settings)
        svc.add_rule(ADMIN, {"name": "esc", "tools": ["e.*"], "action": "ask",
                             "remind_after": "1s", "escalate_after": "1s",
                             "escalate_to": ["webhook:1"]})
        svc.add_rule(ADMIN, {"name": "both", "tools": ["b.*"], "action": "ask",
                             "escalate_after": "1s", "escalate_to": ["webhook:0", "webhook:1"]})
        lone = svc.create(AGENT, "e.x", {"n": 1})
        both = svc.create(AGENT, "b.x", {"n": 2})
        _wait_until_due(store, svc, both.id)
        # a sweeper whose config has webhook:0 only
        one = ApprovalService(store, notify_settings(webhooks=[webhook(first.url,
                                                                       ["created"])]))
        assert one.send_reminders() == {"reminders": 1, "escalations": 1, "no_channel": 1}
        assert [s for s, _ in store.steps_taken(lone.id)] == ["remind"]  # not the escalation
        assert [s for s, _ in store.steps_taken(both.id)] == ["escalate"]
        # rows only for the channels this config has
        assert _step_rows(store) == sorted([("reminder", "webhook:0", lone.id),
                                            ("escalated", "webhook:0", both.id)])
        assert one.send_reminders() == {"reminders": 0, "escalations": 0, "no_channel": 1}
        # the sweeper with webhook:1 sends the escalation left, once
        assert svc.send_reminders() == {"reminders": 0, "escalations": 1, "no_channel": 0}
        assert svc.send_reminders() == {"reminders": 0, "escalations": 0, "no_channel": 0}
        assert ("escalated", "webhook:1", lone.id) in _step_rows(store)
        run_once(store, from_settings(settings))
        assert _events(second) == [("escalated", lone.id)]

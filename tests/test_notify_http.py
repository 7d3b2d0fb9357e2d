"""Slack and signed webhooks: exact payloads, status sequences, retries and dead letters.

External endpoints (Slack, a customer's webhook) are mocked with pytest-httpx; the retry
sequence also runs once against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
from notify_support import SECRET, Receiver, notify_settings, until, webhook

from approvalctl.notify import channels
from approvalctl.notify.config import from_settings
from approvalctl.notify.worker import process_due
from approvalctl.service import ApprovalService

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXX"
HOOK_URL = "https://hooks.example.com/approvals"


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)


def make(store, **channels_cfg):
    settings = notify_settings(**channels_cfg)
    return ApprovalService(store, settings), from_settings(settings)


def drain(store, cfg, *, until_status=("sent", "failed"), timeout=15.0):
    """Run the worker until every row is sent or dead-lettered."""
    def done():
        process_due(store, cfg)
        return all(r["status"] in until_status for r in store.list_outbox())
    until(done, timeout=timeout, step=0.02)


# ---------------------------------------------------------------- Slack
def test_slack_block_kit_message_is_exact(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    req = svc.create(agent, "git_push", {"branch": "main", "force": True},
                     reason="release <v2> & tag", risk="high")
    httpx_mock.add_response(url=SLACK_URL, method="POST", status_code=200, text="ok")
    report = process_due(store, cfg)
    assert [o.result for o in report.outcomes] == ["sent"]
    sent = httpx_mock.get_requests()
    assert len(sent) == 1
    args = json.dumps({"branch": "main", "force": True}, indent=2, sort_keys=True)
    assert json.loads(sent[0].content) == {
        "text": "Approval requested: git_push (high risk, requested by `deploy-bot`)",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                        "text": "Approval requested: git_push"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*Tool:*\n`git_push`"},
                {"type": "mrkdwn", "text": "*Risk:*\nhigh"},
                {"type": "mrkdwn", "text": "*Requested by:*\n`deploy-bot`"},
                {"type": "mrkdwn", "text": f"*Expires:*\n{req.expires_at}"}]},
            # agent-written text sits in a code span and cannot inject Slack markup
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "*Reason:* `release &lt;v2&gt; &amp; tag`"}},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"*Arguments:*\n```{args}```"}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                                         f"*Approve:* `approvalctl approve {req.id}`\n"
                                         f"*Reject:* `approvalctl reject {req.id}`"}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"approvalctl · request {req.id} · pending · "
                                           f"digest {req.digest[7:19]} · "
                                           f"audit head 1:{store.audit_head()[1]}"}]},
        ],
    }
    assert sent[0].headers["content-type"] == "application/json"
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)


def test_slack_webhook_url_from_the_environment(store, agent, operator, httpx_mock,
                                               monkeypatch):
    monkeypatch.setenv("APPROVALCTL_SLACK_WEBHOOK_URL", SLACK_URL)
    svc, cfg = make(store, slack={"webhook_url_env": "APPROVALCTL_SLACK_WEBHOOK_URL",
                                  "events": ["decided"]})
    req = svc.create(agent, "rm", {"path": "/tmp/x"})
    svc.decide(operator, req.id, "reject", "too risky")
    httpx_mock.add_response(url=SLACK_URL, status_code=200)
    process_due(store, cfg)
    body = json.loads(httpx_mock.get_requests()[0].content)
    assert body["blocks"][0]["text"]["text"] == "Rejected by olivia: rm"
    assert "*Note:* `too risky`" in body["blocks"][4]["text"]["text"]


def test_long_arguments_are_truncated(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    req = svc.create(agent, "write_file", {"content": "x" * 5000})
    httpx_mock.add_response(url=SLACK_URL)
    process_due(store, cfg)
    block = json.loads(httpx_mock.get_requests()[0].content)["blocks"][3]["text"]["text"]
    assert len(block) <= 3000
    assert block.endswith(f"… (+2,290 chars; see all: approvalctl show {req.id})```")


def test_slack_5xx_then_ok_is_retried_and_delivered_once(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    svc.create(agent, "deploy")
    httpx_mock.add_response(url=SLACK_URL, status_code=500, text="internal_error")
    httpx_mock.add_response(url=SLACK_URL, status_code=502)
    httpx_mock.add_response(url=SLACK_URL, status_code=200, text="ok")
    drain(store, cfg)
    assert len(httpx_mock.get_requests()) == 3
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert row["last_error"] == "Slack answered HTTP 502"


@pytest.mark.parametrize("code", [400, 403, 404, 410])
def test_permanent_4xx_is_attempted_once_and_dead_lettered(store, agent, httpx_mock, code):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    svc.create(agent, "deploy")
    httpx_mock.add_response(url=SLACK_URL, status_code=code, text="invalid_payload")
    report = process_due(store, cfg)
    assert [o.result for o in report.outcomes] == ["failed"]
    time.sleep(0.3)  # longer than any backoff in these settings: nothing is retried
    assert process_due(store, cfg).outcomes == []
    assert len(httpx_mock.get_requests()) == 1
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith(f"Slack answered HTTP {code}: invalid_payload")
    assert ("notification_deliveries_total", "channel=slack,result=failed", 1.0) in \
        store.counters()


def test_attempts_are_bounded_then_dead_lettered(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    svc.create(agent, "deploy")
    httpx_mock.add_response(url=SLACK_URL, status_code=503, is_reusable=True)
    drain(store, cfg)
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("failed", cfg.retry.max_attempts)
    assert len(httpx_mock.get_requests()) == cfg.retry.max_attempts
    counts = {lab: v for n, lab, v in store.counters() if n == "notification_deliveries_total"}
    assert counts == {"channel=slack,result=retry": cfg.retry.max_attempts - 1,
                      "channel=slack,result=failed": 1}


def test_timeouts_and_connection_errors_are_retried(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    svc.create(agent, "deploy")
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), url=SLACK_URL)
    httpx_mock.add_exception(httpx.ConnectError("connection refused"), url=SLACK_URL)
    httpx_mock.add_response(url=SLACK_URL)
    drain(store, cfg)
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("sent", 3)


def test_429_retry_after_is_honoured(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    svc.create(agent, "deploy")
    seen: list[float] = []

    def answer(status, headers=None):
        def respond(request: httpx.Request) -> httpx.Response:
            seen.append(time.monotonic())
            return httpx.Response(status, headers=headers or {})
        return respond

    httpx_mock.add_callback(answer(429, {"Retry-After": "2"}), url=SLACK_URL)
    httpx_mock.add_callback(answer(200), url=SLACK_URL)
    first = process_due(store, cfg).outcomes[0]
    assert first.result == "retry" and "429" in first.error
    drain(store, cfg)
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 2.0  # the receiver asked for 2 s; backoff alone is 0.05 s
    assert store.list_outbox()[0]["status"] == "sent"


# ---------------------------------------------------------------- webhooks
def test_webhook_payload_and_signature_verify_as_a_receiver_would(store, agent, httpx_mock):
    svc, cfg = make(store, webhooks=[webhook(HOOK_URL, ["created"])])
    req = svc.create(agent, "deploy", {"env": "prod"}, reason="ship")
    httpx_mock.add_response(url=HOOK_URL, status_code=204)
    before = int(time.time())
    process_due(store, cfg)
    sent = httpx_mock.get_requests()[0]
    raw = sent.content
    outbox_id = store.list_outbox()[0]["id"]
    seq, head = store.audit_head()  # the chain head the creation left: an anchor
    assert json.loads(raw) == {"id": outbox_id, "event": "created", "request": req.to_dict(),
                               "audit": {"seq": seq, "hash": head}}
    assert sent.headers["X-Approvalctl-Event"] == "created"
    assert sent.headers["X-Approvalctl-Delivery"] == str(outbox_id)

    # What a receiver does, written out with nothing but the standard library:
    header = sent.headers["X-Approvalctl-Signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    t = int(fields["t"])
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert before <= t <= int(time.time())  # fresh: a receiver rejects old timestamps
    # ...and the helper we document agrees, and refuses tampering, wrong keys and replays.
    assert channels.verify(SECRET, raw, header)
    assert not channels.verify(SECRET, raw.replace(b"prod", b"dev!"), header)
    assert not channels.verify("other-secret", raw, header)
    assert not channels.verify(SECRET, raw, header, now=t + 301)


def test_webhook_per_event_filter_and_several_hooks(store, agent, operator, httpx_mock):
    svc, cfg = make(store, webhooks=[webhook(HOOK_URL, ["created"]),
                                     webhook(HOOK_URL + "/decisions", ["decided"])])
    req = svc.create(agent, "deploy")
    svc.decide(operator, req.id, "approve")
    httpx_mock.add_response(url=HOOK_URL)
    httpx_mock.add_response(url=HOOK_URL + "/decisions")
    process_due(store, cfg)
    got = sorted((str(r.url), json.loads(r.content)["event"])
                 for r in httpx_mock.get_requests())
    assert got == [(HOOK_URL, "created"), (HOOK_URL + "/decisions", "decided")]


def test_webhook_retry_keeps_the_same_body_and_delivery_id(store, agent, httpx_mock):
    svc, cfg = make(store, webhooks=[webhook(HOOK_URL, ["created"])])
    svc.create(agent, "deploy")
    httpx_mock.add_response(url=HOOK_URL, status_code=503)
    httpx_mock.add_response(url=HOOK_URL, status_code=200)
    drain(store, cfg)
    first, second = httpx_mock.get_requests()
    assert first.content == second.content
    assert first.headers["X-Approvalctl-Delivery"] == second.headers["X-Approvalctl-Delivery"]
    assert channels.verify(SECRET, second.content, second.headers["X-Approvalctl-Signature"])


def test_real_server_503_twice_then_ok_delivers_exactly_once(store, agent):
    with Receiver([503, 503, 200]) as receiver:
        svc, cfg = make(store, webhooks=[webhook(receiver.url, ["created"])])
        svc.create(agent, "deploy", {"env": "prod"})
        drain(store, cfg)
        # a further pass finds nothing to do: no duplicate delivery
        time.sleep(0.3)
        assert process_due(store, cfg).outcomes == []
    assert [json.loads(r["body"])["event"] for r in receiver.requests] == ["created"] * 3
    row = store.list_outbox()[0]
    assert (row["status"], row["attempts"]) == ("sent", 3)
    counts = {lab: v for n, lab, v in store.counters() if n == "notification_deliveries_total"}
    assert counts == {"channel=webhook,result=retry": 2, "channel=webhook,result=sent": 1}
    accepted = receiver.requests[2]
    assert channels.verify(SECRET, accepted["body"], accepted["headers"]
                           ["X-Approvalctl-Signature"])


def test_a_channel_removed_from_the_config_dead_letters_its_rows(store, agent):
    svc, _ = make(store, webhooks=[webhook(HOOK_URL, ["created"])])
    svc.create(agent, "deploy")
    _, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["created"]})
    report = process_due(store, cfg)
    assert report.outcomes[0].result == "failed"
    assert "webhook:0 is not configured" in store.list_outbox()[0]["last_error"]


@pytest.mark.parametrize(("header", "expected"), [
    ("2", 2.0), ("0", 0.0), ("garbage", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
])
def test_retry_after_parsing(header, expected):
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:27:50 GMT").timestamp()
    assert channels.parse_retry_after(header, now=now) == expected


def test_expired_event_reaches_slack_and_webhook(store, agent, httpx_mock):
    svc, cfg = make(store, slack={"webhook_url": SLACK_URL, "events": ["expired"]},
                    webhooks=[webhook(HOOK_URL, ["expired"])])
    req = svc.create(agent, "deploy", ttl_seconds=0.001)
    time.sleep(0.01)
    assert svc.sweep() == [req.id]
    httpx_mock.add_response(url=SLACK_URL)
    httpx_mock.add_response(url=HOOK_URL)
    assert sorted(o.channel for o in process_due(store, cfg).outcomes) == ["slack",
                                                                         "webhook:0"]
    by_url = {str(r.url): r for r in httpx_mock.get_requests()}
    slack = json.loads(by_url[SLACK_URL].content)
    assert slack["blocks"][0]["text"]["text"] == "Expired unanswered: deploy"
    assert "approvalctl approve" not in json.dumps(slack)  # nothing left to decide
    hook = json.loads(by_url[HOOK_URL].content)
    assert (hook["event"], hook["request"]["status"]) == ("expired", "expired")
    assert by_url[HOOK_URL].headers["X-Approvalctl-Event"] == "expired"

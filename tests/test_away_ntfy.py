"""The ntfy channel (issue #15): a real HTTP receiver on 127.0.0.1 stands in for ntfy.

Checks the JSON published (topic, title, priority by risk, bounded inert text), the Bearer
token from the environment, `view` action buttons that open decision links on a real server,
and that following the button's link decides as `ntfy:TOPIC`.
"""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest
from notify_support import Receiver, notify_settings

from approvalctl.errors import InvalidInput
from approvalctl.models import Principal
from approvalctl.notify.config import from_settings, load_config
from approvalctl.notify.worker import run_once
from approvalctl.service import ApprovalService

AGENT = Principal("deploy-bot", "user")


@pytest.fixture(autouse=True)
def generous_rate(monkeypatch):
    monkeypatch.setattr("approvalctl.server.links.LINK_RATE", 1000.0)
    monkeypatch.setenv("NTFY_TOKEN", "tk_secret123")


def _ntfy(url: str, **extra):
    return {"url": url, "topic": "ops-approvals", "token_env": "NTFY_TOKEN",
            "events": ["created", "decided"], **extra}


def _make(store, url: str, public_url: str | None = None):
    settings = notify_settings(ntfy=_ntfy(url))
    if public_url:
        settings.file = {"public_url": public_url}
    return ApprovalService(store, settings), from_settings(settings)


@pytest.mark.parametrize("risk,priority", [("high", 5), ("medium", 4), ("low", 3)])
def test_ntfy_message_priority_by_risk_and_token(store, risk, priority):
    with Receiver() as ntfy:
        svc, cfg = _make(store, ntfy.url)
        svc.create(AGENT, "deploy.run", {"env": "prod"}, reason="ship", risk=risk)
        report = run_once(store, cfg)
        assert [o.result for o in report.outcomes] == ["sent"]
        got = ntfy.requests[0]
    body = json.loads(got["body"])
    assert got["headers"]["Authorization"] == "Bearer tk_secret123"
    assert body["topic"] == "ops-approvals" and body["priority"] == priority
    assert body["title"] == "Approval requested: deploy.run"
    assert "Tool: deploy.run" in body["message"] and 'Arguments: {"env": "prod"}' in body["message"]
    assert "actions" not in body  # no public_url: no links


def test_hostile_agent_text_is_inert_and_bounded(store):
    hostile = "line1\nline2\x1b[2J\u202e<b>" + "y" * 3900
    with Receiver() as ntfy:
        svc, cfg = _make(store, ntfy.url)
        svc.create(AGENT, "deploy.run", {"cmd": hostile}, reason=hostile, risk="low")
        run_once(store, cfg)
        body = json.loads(ntfy.requests[0]["body"])
    text = body["message"]
    assert "\x1b" not in text and "\u202e" not in text
    assert "Reason: line1\\nline2" in text  # the agent cannot start a line of its own
    assert len(text) <= 3500 and len(body["title"]) <= 200
    assert "chars)" in text  # cuts are marked


def test_ntfy_buttons_open_decision_links_that_decide_as_the_topic(make_server, store):
    live = make_server()
    with Receiver() as ntfy:
        svc, cfg = _make(store, ntfy.url, public_url=live.url)
        req = svc.create(AGENT, "deploy.run", {"x": 1}, risk="high")
        run_once(store, cfg)
        body = json.loads(ntfy.requests[0]["body"])
    actions = {a["label"]: a for a in body["actions"]}
    assert set(actions) == {"Approve…", "Reject…"}
    assert all(a["action"] == "view" and a["url"].startswith(live.url + "/d/")
               for a in actions.values())
    with httpx.Client(timeout=10) as client:
        page = client.get(actions["Approve…"]["url"])
        assert page.status_code == 200 and "ntfy:ops-approvals" in page.text
        form = {n: html.unescape(v) for n, v in re.findall(
            r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)}
        done = client.post(actions["Approve…"]["url"], data=form)
    assert done.status_code == 200
    got = svc.get(Principal("o", "operator"), req.id)
    assert (got.status, got.decided_by) == ("approved", "ntfy:ops-approvals")


def test_ntfy_config_errors_name_the_key(monkeypatch):
    monkeypatch.delenv("NTFY_TOKEN")
    with pytest.raises(InvalidInput, match=r"notifications\.ntfy\.token_env: .*NTFY_TOKEN"):
        load_config({"ntfy": _ntfy("https://ntfy.example.com")})
    with pytest.raises(InvalidInput, match=r"notifications\.ntfy"):
        load_config({"ntfy": {"url": "https://ntfy.example.com", "topic": "a b",
                              "events": ["created"]}})

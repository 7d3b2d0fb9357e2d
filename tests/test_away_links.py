"""Decision links (issue #15): signed, single-use, expiring links in Slack/e-mail messages
that open a page on a real server; the page's POST decides, as the link's recipient.

Slack is a local HTTP receiver; the server is a real uvicorn on 127.0.0.1 over SQLite and
PostgreSQL; links are followed with httpx as a phone's browser would.
"""

from __future__ import annotations

import html
import json
import re
import threading

import httpx
import pytest
from notify_support import Receiver, notify_settings

from approvalctl.config import Settings
from approvalctl.errors import ApprovalConflict, Forbidden, InvalidInput
from approvalctl.models import Principal, to_iso, utcnow
from approvalctl.notify import links, messages
from approvalctl.notify.config import from_settings
from approvalctl.notify.worker import run_once
from approvalctl.service import ApprovalService

AGENT = Principal("deploy-bot", "user")
HOSTILE = {"command": "<script>alert(1)</script>\x1b[31mred\x1b[0m \u202etxt.exe",
           "note": "</pre><form action=https://evil.example>" + "x" * 5000}


def _setup(store, public_url: str, slack_url: str, **extra):
    settings = notify_settings(slack={"webhook_url": slack_url, "events": ["created"]})
    settings.file = {"public_url": public_url}
    cfg = from_settings(settings)
    return ApprovalService(store, settings), cfg


def _slack_links(receiver: Receiver) -> dict[str, str]:
    body = json.loads(receiver.requests[-1]["body"])
    text = json.dumps(body)
    found = dict(re.findall(r"<(http[^|>]+)\|\*(Approve|Reject)", text))
    return {v.lower(): k for k, v in found.items()}


@pytest.fixture(autouse=True)
def generous_rate(monkeypatch):
    """These tests open pages faster than a person; the rate test sets its own limit."""
    monkeypatch.setattr("approvalctl.server.links.LINK_RATE", 1000.0)


@pytest.fixture
def linked(make_server, store):
    """A live server, a Slack receiver, and a request whose Slack message was delivered."""
    live = make_server()
    with Receiver() as slack:
        svc, cfg = _setup(store, live.url, slack.url)
        req = svc.create(AGENT, "deploy.run", HOSTILE, reason="ship <b>it</b>", risk="high")
        run_once(store, cfg)
        assert len(slack.requests) == 1
        yield live, svc, req, _slack_links(slack), cfg


def _form(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)}


def test_token_round_trip_tamper_rotation_and_garbage():
    key = links.new_key()
    token = links.make_token(key, "01abc", "sha256:" + "0" * 64, "approve", "slack",
                             "2030-01-01T00:00:00.000Z")
    link = links.read_token(key, token)
    assert (link.request_id, link.action, link.recipient) == ("01abc", "approve", "slack")
    head, payload, mac = token.split(".")
    forged = payload.replace(payload[5], "A" if payload[5] != "A" else "B", 1)
    with pytest.raises(Forbidden, match="does not match"):
        links.read_token(key, f"{head}.{forged}.{mac}")
    with pytest.raises(Forbidden, match="rotated"):
        links.read_token(links.new_key(), token)
    for junk in ("", "v1..", "v2.a.b", "x" * 5000, "v1.a"):
        with pytest.raises(InvalidInput):
            links.read_token(key, junk)


def test_links_in_email_text_and_html_and_not_without_public_url():
    req = {**messages.SAMPLE_REQUEST, "digest": "sha256:" + "1" * 64,
           "links": {"approve": "https://a.example/d/v1.x.y", "reject":
                     "https://a.example/d/v1.x.z"}}
    subject, text, page = messages.email_parts("created", req)
    assert "Approve: https://a.example/d/v1.x.y" in text
    assert "https://a.example/d/v1.x.z" in page
    plain = messages.email_parts("created", messages.SAMPLE_REQUEST)[1]
    assert "/d/" not in plain and "approvalctl approve" in plain


def test_follow_the_slack_link_and_approve(linked, raw_db):
    live, svc, req, found, _ = linked
    assert set(found) == {"approve", "reject"}
    with httpx.Client(timeout=10) as client:
        page = client.get(found["approve"])
        assert page.status_code == 200
        h = page.headers
        assert "default-src 'none'" in h["content-security-policy"]
        assert "form-action 'self'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
        assert h["cache-control"] == "no-store"
        # a GET never decides
        assert svc.get(Principal("olivia", "operator"), req.id).status == "pending"
        text = page.text
        assert "<script" not in text.lower() and "\x1b" not in text and "\u202e" not in text
        assert "&lt;script&gt;" in text and "\\u001b[31m" in text
        assert "<form action=https://evil" not in text
        assert req.digest in text and "deploy-bot" in text and "high" in text
        done = client.post(found["approve"], data=_form(text))
    assert done.status_code == 200, done.text
    assert "approved" in done.text
    row = raw_db.fetch_dict("SELECT status, decided_by FROM requests WHERE id = ?", (req.id,))
    assert row == {"status": "approved", "decided_by": "slack"}
    audit = svc.audit_list(Principal("root", "admin"), request_id=req.id)
    assert [(a["actor"], a["action"]) for a in audit][-1] == ("slack", "approve")
    assert svc.audit_verify(Principal("root", "admin")).ok


def test_reused_link_and_the_other_actions_link_are_refused(linked):
    live, svc, req, found, _ = linked
    with httpx.Client(timeout=10) as client:
        form = _form(client.get(found["approve"]).text)
        reject_form = _form(client.get(found["reject"]).text)
        assert client.post(found["approve"], data=form).status_code == 200
        again = client.post(found["approve"], data=form)
        assert again.status_code == 409 and "already approved" in again.text
        assert client.get(found["approve"]).status_code == 409
        other = client.post(found["reject"], data={**reject_form, "reason": "no"})
        assert other.status_code == 409
        assert "Traceback" not in other.text
    assert svc.get(Principal("o", "operator"), req.id).status == "approved"


def test_reject_needs_a_reason_and_records_it(linked):
    live, svc, req, found, _ = linked
    with httpx.Client(timeout=10) as client:
        form = _form(client.get(found["reject"]).text)
        empty = client.post(found["reject"], data=form)
        assert empty.status_code == 400 and "needs a reason" in empty.text
        ok = client.post(found["reject"], data={**form, "reason": "not on a Friday"})
    assert ok.status_code == 200
    got = svc.get(Principal("o", "operator"), req.id)
    assert (got.status, got.decided_by, got.decision_note) == ("rejected", "slack",
                                                                "not on a Friday")


def test_tampered_foreign_expired_and_formless_posts_are_refused(linked, store):
    live, svc, req, found, _ = linked
    key = store.server_secret(links.KEY_NAME, links.new_key, to_iso(utcnow()))
    base = live.url + "/d/"
    token = found["approve"].rsplit("/", 1)[1]
    head, payload, mac = token.split(".")
    flipped = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    foreign = links.make_token(key, req.id, "sha256:" + "f" * 64, "approve", "slack",
                               req.expires_at)
    expired = links.make_token(key, req.id, req.digest, "approve", "slack",
                               "2001-01-01T00:00:00.000Z")
    other = svc.create(AGENT, "other.tool", {})
    unknown = links.make_token(key, "0" * 26, req.digest, "approve", "slack", req.expires_at)
    with httpx.Client(timeout=10) as client:
        cases = {f"{head}.{payload}.{flipped}": 403, foreign: 403, expired: 410,
                 "v1.junk": 400, unknown: 404,
                 links.make_token(key, other.id, req.digest, "approve", "slack",
                                  other.expires_at): 403}
        for bad, status in cases.items():
            got = client.get(base + bad)
            assert got.status_code == status, (bad, got.text)
            assert "Traceback" not in got.text and got.headers["x-frame-options"] == "DENY"
        form = _form(client.get(found["approve"]).text)
        assert client.post(found["approve"], data={"token": token}).status_code == 403
        assert client.post(found["approve"], data={**form, "check": "x"}).status_code == 403
        assert client.post(found["approve"], json=form).status_code == 415
        assert client.post(found["approve"], data=form,
                           headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.post(found["approve"], data=form,  # another site's page posting it
                           headers={"Origin": "http://evil.example"}).status_code == 403
        # a link rotated away stops working
        store.replace_server_secret(links.KEY_NAME, links.new_key(), to_iso(utcnow()))
        rotated = client.get(found["approve"])
        assert rotated.status_code == 403 and "rotated" in rotated.text
    assert svc.get(Principal("o", "operator"), req.id).status == "pending"


def test_self_approval_through_a_link_is_refused(make_server, store):
    live = make_server()
    with Receiver() as slack:
        svc, cfg = _setup(store, live.url, slack.url)
        req = svc.create(Principal("slack", "user"), "deploy.run", {"x": 1})
        run_once(store, cfg)
        found = _slack_links(slack)
    with httpx.Client(timeout=10) as client:
        form = _form(client.get(found["approve"]).text)
        got = client.post(found["approve"], data=form)
    assert got.status_code == 403 and "own request" in got.text
    assert svc.get(Principal("o", "operator"), req.id).status == "pending"


def test_a_link_and_the_cli_racing_have_one_winner(linked):
    live, svc, req, found, _ = linked
    outcomes: list[object] = []
    with httpx.Client(timeout=10) as client:
        form = _form(client.get(found["approve"]).text)
        start = threading.Barrier(2)

        def by_link():
            start.wait()
            outcomes.append(client.post(found["approve"], data=form).status_code)

        def by_cli():
            start.wait()
            try:
                svc.decide(Principal("olivia", "operator"), req.id, "reject", "no")
                outcomes.append("cli")
            except ApprovalConflict:
                outcomes.append("cli-lost")

        threads = [threading.Thread(target=by_link), threading.Thread(target=by_cli)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(map(str, outcomes)) in (["200", "cli-lost"], ["409", "cli"])
    audit = svc.audit_list(Principal("root", "admin"), request_id=req.id)
    assert sum(a["action"] in ("approve", "reject") for a in audit) == 1


def test_link_pages_are_rate_limited_per_address(make_server, monkeypatch):
    monkeypatch.setattr("approvalctl.server.links.LINK_RATE", 1.0)
    live = make_server()
    with httpx.Client(timeout=10) as client:
        codes = [client.get(live.url + "/d/v1.a.b").status_code for _ in range(3)]
    assert codes[0] == 403 and 429 in codes


def test_public_url_is_checked_by_the_config_schema():
    from approvalctl.config import validate_config

    validate_config({"public_url": "https://approvals.example.com/base"})
    for bad in ("ftp://x", "https://x/a|b", "https://x/?q=1", "https://x y"):
        with pytest.raises(InvalidInput, match="public_url"):
            validate_config({"public_url": bad})
    assert Settings(file={"public_url": "https://a.example"}).get("public_url")


@pytest.mark.slow
def test_link_page_in_headless_chromium(linked, tmp_path):
    import shutil
    import subprocess

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser",
                                              "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium/chromium-browser installed")
    live, svc, req, found, _ = linked
    shot = tmp_path / "page.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu",
              "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(common + ["--dump-dom", found["approve"]], capture_output=True,
                         text=True, timeout=60)
    assert "<form" in dom.stdout and "&lt;script&gt;" in dom.stdout
    subprocess.run(common + [f"--screenshot={shot}", found["approve"]], capture_output=True,
                   timeout=60)
    assert shot.exists() and shot.stat().st_size > 0
    assert svc.get(Principal("o", "operator"), req.id).status == "pending"


def test_follow_the_link_from_a_real_email_and_reject(make_server, store):
    from notify_support import free_port
    from test_notify_email import Mailbox, smtp_server

    live = make_server()
    port, box = free_port(), Mailbox()
    controller = smtp_server(box, port)
    try:
        settings = notify_settings(email={
            "host": "127.0.0.1", "port": port, "starttls": False,
            "from": "approvalctl@example.com", "to": ["ops@example.com"],
            "events": ["created"], "timeout": 5})
        settings.file = {"public_url": live.url}
        svc = ApprovalService(store, settings)
        req = svc.create(AGENT, "db.drop", {"table": "users"}, risk="high")
        run_once(store, from_settings(settings))
    finally:
        controller.stop()
    plain = box.messages[0].get_body(("plain",)).get_content()
    reject = re.search(r"Reject:\s+(\S+)", plain).group(1)
    assert reject.startswith(live.url + "/d/")
    with httpx.Client(timeout=10) as client:
        form = _form(client.get(reject).text)
        done = client.post(reject, data={**form, "reason": "never on prod"})
    assert done.status_code == 200
    got = svc.get(Principal("o", "operator"), req.id)
    assert (got.status, got.decided_by) == ("rejected", "email:ops@example.com")


def test_rotate_secret_command_invalidates_earlier_links(db_url, store):
    from conftest import CliRunner

    from approvalctl.cli import app

    before = store.server_secret(links.KEY_NAME, links.new_key, to_iso(utcnow()))
    token = links.make_token(before, "01abc", "sha256:" + "0" * 64, "approve", "slack",
                             "2099-01-01T00:00:00.000Z")
    result = CliRunner().invoke(app, ["links", "rotate-secret", "--json"],
                                env={"APPROVALCTL_DB": db_url})
    assert result.exit_code == 0, result.output
    after = store.server_secret(links.KEY_NAME, links.new_key, to_iso(utcnow()))
    assert after != before and json.loads(result.stdout)["key_id"] == links.key_id(after)
    with pytest.raises(Forbidden, match="rotated"):
        links.read_token(after, token)


@pytest.mark.slow
def test_real_serve_process_delivers_links_and_the_link_decides(tmp_path, isolated_env):
    """`approvalctl serve` as a process: its worker sends the Slack message with links, and
    the page it serves decides (the database and the audit trail agree)."""
    import signal

    import yaml
    from notify_support import free_port, until
    from test_api_live import start_serve

    from approvalctl.store import open_store

    db = tmp_path / "serve.db"
    port = free_port()
    with Receiver() as slack:
        config = isolated_env / "config" / "approvalctl" / "config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump({
            "public_url": f"http://127.0.0.1:{port}",
            "notifications": {"slack": {"webhook_url": slack.url, "events": ["created"]},
                              "worker": {"poll_interval": 0.05, "lease": 30}}}))
        store = open_store(str(db))
        proc = start_serve(db, port)
        try:
            svc = ApprovalService(store, Settings.load())
            req = svc.create(AGENT, "deploy.run", {"x": "<script>1</script>"}, risk="high")
            until(lambda: slack.requests, timeout=20)
            found = _slack_links(slack)
            with httpx.Client(timeout=10) as client:
                page = client.get(found["approve"])
                assert page.status_code == 200 and "<script>1" not in page.text
                done = client.post(found["approve"], data=_form(page.text))
            assert done.status_code == 200
            assert store.get_status(req.id) == "approved"
            rows = store.audit_rows(request_id=req.id)
            assert (rows[-1]["actor"], rows[-1]["action"]) == ("slack", "approve")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
            store.close()


def test_the_rate_limiter_table_is_bounded(make_server, monkeypatch):
    monkeypatch.setattr("approvalctl.server.links.LINK_RATE", 1.0)
    monkeypatch.setattr("approvalctl.server.links.MAX_CHECKS", 2)
    live = make_server()
    with httpx.Client(timeout=10) as client:
        codes = [client.get(live.url + "/d/v1.a.b").status_code for _ in range(3)]
    assert codes == [403, 429, 403]  # the third starts a fresh table

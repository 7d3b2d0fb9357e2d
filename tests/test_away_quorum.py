"""Quorum (issue #15): a request that needs N distinct approvers, on both backends.

Approvers are identities (key names, the local OS account, a link's recipient), not keys
used: the same identity twice counts once. Any rejection rejects; the Nth approval makes the
one final transition, counted once in the metrics and stats; every approval is audited and
`audit verify` accepts the partial ones.
"""

from __future__ import annotations

import json
import threading

import pytest

from approvalctl.client import Client
from approvalctl.errors import ApprovalConflict, Forbidden, InvalidInput
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import open_store

AGENT = Principal("deploy-bot", "user")
OLIVIA = Principal("olivia", "operator")
OSCAR = Principal("oscar", "operator")
ADMIN = Principal("root-admin", "admin")


def _actions(service, rid):
    return [(a["actor"], a["action"], a["to_status"])
            for a in service.audit_list(ADMIN, request_id=rid)]


def test_two_approvers_needed_same_identity_counts_once(service):
    req = service.create(AGENT, "db.drop", {"table": "users"}, risk="high")
    service.require_approvals(OLIVIA, req.id, 2)
    first = service.decide(OLIVIA, req.id, "approve", "looks right")
    assert first.status == "pending"
    assert service.approvals(OLIVIA, req.id) == {"required": 2, "approvers": ["olivia"]}
    with pytest.raises(ApprovalConflict, match="already approved"):
        service.decide(OLIVIA, req.id, "approve")  # same identity, second time
    assert service.get(OLIVIA, req.id).status == "pending"
    final = service.decide(OSCAR, req.id, "approve")
    assert (final.status, final.decided_by) == ("approved", "oscar")
    assert _actions(service, req.id) == [
        ("deploy-bot", "create", "pending"), ("olivia", "require", "pending"),
        ("olivia", "approve_partial", "pending"), ("oscar", "approve", "approved")]
    assert service.audit_verify(ADMIN).ok
    stats = service.stats(ADMIN)
    assert stats["by_status"]["approved"] == 1 and stats["by_status"]["pending"] == 0


def test_any_rejection_rejects_and_requirements_only_rise(service):
    req = service.create(AGENT, "db.drop", {}, risk="high")
    service.require_approvals(OLIVIA, req.id, 3)
    with pytest.raises(ApprovalConflict, match="only be raised"):
        service.require_approvals(OSCAR, req.id, 2)
    with pytest.raises(InvalidInput, match="from 2 to"):
        service.require_approvals(OSCAR, req.id, 1)
    with pytest.raises(Forbidden):
        service.require_approvals(AGENT, req.id, 4)
    service.decide(OLIVIA, req.id, "approve")
    done = service.decide(OSCAR, req.id, "reject", "no")
    assert done.status == "rejected"
    with pytest.raises(ApprovalConflict):
        service.require_approvals(OLIVIA, req.id, 4)
    assert service.audit_verify(ADMIN).ok


def test_simultaneous_approvers_are_each_counted_once_one_final_transition(db_url, service):
    req = service.create(AGENT, "db.drop", {}, risk="high")
    service.require_approvals(OLIVIA, req.id, 3)
    service.decide(Principal("first", "operator"), req.id, "approve")
    names = ["a1", "a2", "a3", "a4"]
    stores = [open_store(db_url) for _ in names]
    start = threading.Barrier(len(names))
    results: dict[str, str] = {}

    def approve(name: str, store) -> None:
        svc = ApprovalService(store, service.settings)
        start.wait()
        try:
            results[name] = svc.decide(Principal(name, "operator"), req.id, "approve").status
        except ApprovalConflict as exc:
            results[name] = f"conflict:{exc.current_status}"

    threads = [threading.Thread(target=approve, args=(n, s)) for n, s in zip(names, stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert service.get(OLIVIA, req.id).status == "approved"
    actions = [a for _, a, _ in _actions(service, req.id)]
    assert actions.count("approve") == 1  # one final transition
    assert actions.count("approve_partial") == 2  # first + one of the four
    assert sorted(results.values()).count("approved") == 1
    assert service.audit_verify(ADMIN).ok


def test_quorum_over_http_two_operator_keys_one_used_twice(make_server):
    live = make_server()
    oscar = Client(live.url, live.key("oscar", "operator"), timeout=10)
    try:
        req = live.service.create(AGENT, "db.drop", {"t": 1}, risk="high")
        live.service.require_approvals(OLIVIA, req.id, 2)
        olivia = live.client("operator")
        assert olivia.decide(req.id, "approve").status == "pending"
        with pytest.raises(ApprovalConflict):
            olivia.decide(req.id, "approve")
        assert oscar.decide(req.id, "approve").status == "approved"
        assert live.service.audit_verify(ADMIN).ok
    finally:
        oscar.close()


def test_cli_require_and_show_one_of_two(db_url):
    from conftest import CliRunner

    from approvalctl.cli import app

    store = open_store(db_url)
    try:
        req = ApprovalService(store).create(AGENT, "db.drop", {}, risk="high")
        env = {"APPROVALCTL_DB": db_url}
        r = CliRunner().invoke(app, ["require", req.id, "2"], env=env)
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(app, ["approve", req.id], env=env)
        assert r.exit_code == 0 and "needs more approvers" in r.stderr
        r = CliRunner().invoke(app, ["show", req.id], env=env)
        assert "1 of 2" in r.stdout
        r = CliRunner().invoke(app, ["approve", req.id], env=env)  # the same OS account
        assert r.exit_code == 4 and "already approved" in r.stderr
        assert store.get_status(req.id) == "pending"
    finally:
        store.close()


def test_a_policy_rule_demands_a_quorum_from_creation(service):
    service.add_rule(ADMIN, {"name": "two-for-prod", "tools": ["db.*"],
                             "match": {"env": "prod"}, "action": "ask",
                             "approvals_required": 2})
    req = service.create(AGENT, "db.drop", {"env": "prod"}, risk="high")
    other = service.create(AGENT, "db.drop", {"env": "dev"})
    assert service.approvals(OLIVIA, req.id) == {"required": 2, "approvers": []}
    assert service.approvals(OLIVIA, other.id) is None
    assert service.decide(OLIVIA, req.id, "approve").status == "pending"
    assert service.decide(OLIVIA, other.id, "approve").status == "approved"
    assert service.decide(OSCAR, req.id, "approve").status == "approved"
    assert service.audit_verify(ADMIN).ok


@pytest.mark.parametrize("bad", [0, 11, True, "2"])
def test_rule_approvals_required_is_checked(service, bad):
    with pytest.raises(InvalidInput, match="approvals_required"):
        service.add_rule(ADMIN, {"name": "r", "tools": ["x"], "action": "ask",
                                 "approvals_required": bad})


def test_rule_approvals_required_only_with_ask(service):
    with pytest.raises(InvalidInput, match="action is ask"):
        service.add_rule(ADMIN, {"name": "r", "tools": ["x"], "action": "allow",
                                 "approvals_required": 2})


def test_a_link_approval_counts_as_its_recipient_and_the_page_shows_the_count(
        make_server, monkeypatch):
    import html as html_lib
    import re

    import httpx

    from approvalctl.models import to_iso, utcnow
    from approvalctl.notify import links

    monkeypatch.setattr("approvalctl.server.links.LINK_RATE", 1000.0)
    live = make_server()
    req = live.service.create(AGENT, "db.drop", {}, risk="high")
    live.service.require_approvals(OLIVIA, req.id, 2)
    key = live.store.server_secret(links.KEY_NAME, links.new_key, to_iso(utcnow()))
    url = links.url_for(live.url, links.make_token(key, req.id, req.digest, "approve",
                                                   "slack", req.expires_at))
    with httpx.Client(timeout=10) as client:
        page = client.get(url)
        assert "0 of 2" in page.text
        form = {n: html_lib.unescape(v) for n, v in re.findall(
            r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)}
        counted = client.post(url, data=form)
        assert counted.status_code == 200 and "Approval counted" in counted.text
        assert "1 of 2" in client.get(url).text
        assert client.post(url, data=form).status_code == 409  # the same identity again
    assert live.service.decide(OSCAR, req.id, "approve").status == "approved"
    assert live.service.approvals(OLIVIA, req.id)["approvers"] == ["slack", "oscar"]


# ---------------------------------------------------------------- the count everywhere
def test_the_count_is_in_the_json_of_http_get_list_and_decide(make_server):
    live = make_server()
    import httpx

    with httpx.Client(base_url=live.url, timeout=10) as web:
        req = live.service.create(AGENT, "db.drop", {"t": 1}, risk="high")
        plain = live.service.create(AGENT, "db.read", {"t": 2})
        live.service.require_approvals(OLIVIA, req.id, 2)
        got = web.put(f"/api/v1/approvals/{req.id}", json={"action": "approve"},
                      headers=live.headers("operator"))
        assert got.status_code == 200, got.text
        assert (got.json()["status"], got.json()["approvals_required"],
                got.json()["approvals"]) == ("pending", 2, ["olivia"])
        one = web.get(f"/api/v1/approvals/{req.id}", headers=live.headers("viewer")).json()
        assert (one["approvals_required"], one["approvals"]) == (2, ["olivia"])
        items = {r["id"]: r for r in web.get("/api/v1/approvals",
                                             headers=live.headers("viewer")).json()["items"]}
        assert (items[req.id]["approvals_required"], items[req.id]["approvals"]) == \
            (2, ["olivia"])
        assert "approvals_required" not in items[plain.id]  # one approval: no quorum
        assert "approvals_required" not in web.get(
            f"/api/v1/approvals/{plain.id}", headers=live.headers("viewer")).json()


def test_the_create_answer_carries_the_quorum_a_rule_set(make_server):
    """POST /api/v1/approvals answers with the quorum a policy rule gave the request at
    creation, as GET does after it; a request without one has no quorum fields."""
    import httpx

    live = make_server()
    live.service.add_rule(ADMIN, {"name": "two", "tools": ["db.*"], "action": "ask",
                                  "approvals_required": 2})
    with httpx.Client(base_url=live.url, timeout=10) as web:
        made = web.post("/api/v1/approvals", json={"tool_name": "db.drop", "arguments": {}},
                        headers=live.headers("user"))
        assert made.status_code == 201, made.text
        assert (made.json()["approvals_required"], made.json()["approvals"]) == (2, [])
        plain = web.post("/api/v1/approvals", json={"tool_name": "fs.read"},
                         headers=live.headers("user"))
        assert plain.status_code == 201 and "approvals_required" not in plain.json()


def test_require_over_http_operators_only_raise_only(make_server):
    import httpx

    live = make_server()
    req = live.service.create(AGENT, "db.drop", {"t": 1}, risk="high")
    path = f"/api/v1/approvals/{req.id}/require"
    with httpx.Client(base_url=live.url, timeout=10) as web:
        for role in ("user", "viewer"):
            r = web.post(path, json={"approvals_required": 2}, headers=live.headers(role))
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
        r = web.post(path, json={"approvals_required": 2}, headers=live.headers("operator"))
        assert r.status_code == 200, r.text
        assert (r.json()["approvals_required"], r.json()["approvals"]) == (2, [])
        for bad in (1, 11, "2", None):  # the spec validates the body
            r = web.post(path, json={"approvals_required": bad},
                         headers=live.headers("operator"))
            assert r.status_code == 400, (bad, r.text)
        r = web.post(path, json={"approvals_required": 2}, headers=live.headers("admin"))
        assert r.status_code == 409 and "only be raised" in r.json()["detail"]
        assert r.json()["current_status"] == "pending"
        r = web.post(path, json={}, headers=live.headers("operator"))
        assert r.status_code == 400
        r = web.post("/api/v1/approvals/01ARZ3NDEKTSV4RRFFQ69G5FAV/require",
                     json={"approvals_required": 3}, headers=live.headers("operator"))
        assert r.status_code == 404
        live.service.decide(OLIVIA, req.id, "reject", "no")
        r = web.post(path, json={"approvals_required": 3}, headers=live.headers("operator"))
        assert r.status_code == 409 and r.json()["current_status"] == "rejected"
    assert live.service.audit_verify(ADMIN).ok


def _cli(args, env):
    from conftest import CliRunner

    from approvalctl.cli import app

    return CliRunner().invoke(app, args, env=env)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_cli_require_list_show_json_and_human_alike_locally_and_remotely(make_server,
                                                                          remote):
    live = make_server()
    req = live.service.create(AGENT, "db.drop", {"t": 1}, risk="high")
    env = ({"APPROVALCTL_SERVER": live.url, "APPROVALCTL_API_KEY": live.keys["operator"]}
           if remote else {"APPROVALCTL_DB": live.db})
    r = _cli(["require", req.id, "2", "--json"], env)
    assert r.exit_code == 0, r.output
    assert (json.loads(r.stdout)["approvals_required"], json.loads(r.stdout)["approvals"]) \
        == (2, [])
    live.service.decide(OSCAR, req.id, "approve")
    r = _cli(["show", req.id, "--json"], env)
    assert (json.loads(r.stdout)["approvals_required"], json.loads(r.stdout)["approvals"]) \
        == (2, ["oscar"])
    r = _cli(["show", req.id], env)
    assert "1 of 2 (oscar)" in r.stdout
    r = _cli(["list", "--json"], env)
    assert [(x["id"], x["approvals"]) for x in json.loads(r.stdout)] == [(req.id, ["oscar"])]
    r = _cli(["list"], env)
    assert "pending (1 of 2)" in r.stdout
    r = _cli(["require", req.id, "2"], env)
    assert r.exit_code == 4 and "only be raised" in r.stderr


def test_review_detail_shows_the_count():
    from approvalctl.cli.review import detail_text
    from approvalctl.models import ApprovalRequest

    req = ApprovalRequest(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", tool_name="db.drop", arguments={},
                          reason=None, risk="high", user_id="bot", status="pending",
                          created_at="2026-01-01T00:00:00.000Z",
                          expires_at="2026-01-01T01:00:00.000Z")
    text = detail_text(req, [], {"approvals_required": 2, "approvals": ["olivia\x1b[2J"]})
    assert "approvals  1 of 2 (olivia" in text.plain and "\x1b" not in text.plain


def test_prune_removes_the_quorum_and_reminder_rows_of_what_it_prunes(service, store,
                                                                      raw_db):
    old = service.create(AGENT, "db.drop", {"n": 1}, risk="high")
    kept = service.create(AGENT, "db.drop", {"n": 2}, risk="high")
    for req in (old, kept):
        service.require_approvals(OLIVIA, req.id, 2)
        service.decide(OLIVIA, req.id, "approve")
        service.decide(OSCAR, req.id, "approve")
    for table in ("request_steps", "request_schedule"):  # as a reminder step leaves them
        cols = "(request_id, step, at)" if table == "request_steps" else \
            "(request_id, remind_at)"
        for req in (old, kept):
            raw_db.execute(f"INSERT INTO {table} {cols} VALUES (?, ?"
                           + (", ?)" if table == "request_steps" else ")"),
                           (req.id, "remind", "2020-01-01T00:00:00.000Z")
                           if table == "request_steps" else
                           (req.id, "2020-01-01T00:00:00.000Z"))
    long_ago = "2020-01-01T00:00:00.000Z"
    raw_db.execute("UPDATE requests SET created_at = ?, decided_at = ? WHERE id = ?",
                   (long_ago, long_ago, old.id))

    def rows(rid):
        return {t: raw_db.execute(f"SELECT COUNT(*) FROM {t} WHERE request_id = ?",
                                  (rid,)).fetchone()[0]
                for t in ("request_quorum", "request_approvals", "request_steps",
                          "request_schedule")}

    assert rows(old.id) == {"request_quorum": 1, "request_approvals": 2, "request_steps": 1,
                         "request_schedule": 1}
    done = service.prune(ADMIN, 30 * 86400)
    assert done["requests"] == 1
    assert rows(old.id) == dict.fromkeys(rows(old.id), 0)
    assert rows(kept.id) == {"request_quorum": 1, "request_approvals": 2, "request_steps": 1,
                          "request_schedule": 1}


def test_approve_always_cannot_outvote_a_quorum(service):
    """One operator's `approve --always` on a request that needs two approvers would add an
    allow rule, and the agent's next identical call would pass with nobody else asked."""
    req = service.create(AGENT, "db.drop", {"table": "users"}, risk="high")
    service.require_approvals(OLIVIA, req.id, 2)
    with pytest.raises(ApprovalConflict, match="without --always"):
        service.approve_always(OLIVIA, req.id)
    assert service.list_rules(ADMIN) == []
    assert service.approvals(OLIVIA, req.id) == {"required": 2, "approvers": []}
    again = service.create(AGENT, "db.drop", {"table": "users"}, risk="high")
    assert again.status == "pending"  # no rule lets the same call through


def test_approve_always_over_http_cannot_outvote_a_quorum(make_server):
    live = make_server()
    req = live.service.create(AGENT, "db.drop", {"t": 1}, risk="high")
    live.service.require_approvals(OLIVIA, req.id, 2)
    olivia = live.client("operator")
    with pytest.raises(ApprovalConflict, match="without --always"):
        olivia.approve_always(req.id)
    assert live.service.list_rules(ADMIN) == []
    assert live.service.get(OLIVIA, req.id).status == "pending"


def test_require_on_a_decided_request_says_it_is_no_longer_pending(service):
    req = service.create(AGENT, "db.drop", {})
    service.require_approvals(OLIVIA, req.id, 2)
    service.decide(OLIVIA, req.id, "approve")
    service.decide(OSCAR, req.id, "approve")
    with pytest.raises(ApprovalConflict, match="no longer pending"):
        service.require_approvals(OSCAR, req.id, 2)

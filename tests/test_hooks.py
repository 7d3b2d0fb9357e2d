"""`approvalctl hook AGENT` end to end: real processes, real events, real decisions.

Each agent's real event shapes (tests/fixtures/hooks/) go through stdin of a real
`approvalctl hook` process, against a real `approvalctl serve` or the local database, and
an operator decides from another process. The fail-closed cases check that nothing but an
approval of this very call ever lets it run: for Claude Code, Codex and Gemini CLI any exit
status other than 0 and 2 lets the tool run, so a hook may only ever exit 0 (allow) or 2.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import env_for, free_port, stop_process, wait_http

from approvalctl.client import Client
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import open_store

FIXTURES = Path(__file__).parent / "fixtures" / "hooks"
EVENTS = sorted(p.name[:-5] for p in FIXTURES.glob("*.json"))  # "claude-code.PreToolUse", ...
ROOT = Path(__file__).resolve().parents[1]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def expected_call(name: str) -> tuple[str, dict]:
    """The tool name and arguments the hook must file for a fixture."""
    event = fixture(name)
    if event["hook_event_name"] == "beforeShellExecution":
        return "Shell", {"command": event["command"], "cwd": event["cwd"]}
    tool_input = event["tool_input"]
    return event["tool_name"], json.loads(tool_input) if isinstance(tool_input, str) \
        else tool_input


def start_hook(agent: str, stdin: bytes, env: dict, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "hook", agent, *args],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # written and closed: communicate() must not flush it again
    return proc


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def run_hook(agent: str, stdin: bytes, env: dict, *args: str) -> tuple[int, str, str]:
    return finish(start_hook(agent, stdin, env, *args))


def verdict(agent: str, event: str, code: int, out: str) -> str:
    """What the agent would do with this answer: 'allow' or 'deny' (anything else fails)."""
    assert code in (0, 2), f"exit {code} would let the tool run"
    if agent == "codex" and code == 0:
        assert out == "", "Codex refuses any allow output (and then runs the tool)"
        return "allow"
    data = json.loads(out)
    if agent == "claude-code" and event == "PermissionRequest":
        spec = data["hookSpecificOutput"]
        assert spec["hookEventName"] == "PermissionRequest"
        said = spec["decision"]["behavior"]
    elif agent in ("claude-code", "codex"):
        spec = data["hookSpecificOutput"]
        assert spec["hookEventName"] == "PreToolUse"
        assert set(spec) <= {"hookEventName", "permissionDecision", "permissionDecisionReason"}
        said = spec["permissionDecision"]
    elif agent == "gemini":
        said = data["decision"]
    else:
        said = data["permission"]
    assert (said == "allow") == (code == 0)
    return said


# ---------------------------------------------------------------- a real `approvalctl serve`
class Serve:
    def __init__(self, db: Path) -> None:
        self.db = db
        service = ApprovalService(open_store(str(db)))
        admin = Principal("t", "admin", local=True)
        self.agent_key, _ = service.create_key(admin, "agent-bot", "user")
        self.operator_key, _ = service.create_key(admin, "olivia", "operator")
        service.store.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = env_for(db)
        self.proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port",
                                      str(self.port)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_http(f"{self.url}/healthz", self.proc, timeout=20, status=200)
        self.operator = Client(self.url, self.operator_key, timeout=10)

    def hook_env(self, key: str | None = None) -> dict:
        env = env_for(self.db)
        env["APPROVALCTL_SERVER"] = self.url
        env["APPROVALCTL_API_KEY"] = key or self.agent_key
        return env

    def operator_cli(self, *args: str) -> subprocess.CompletedProcess:
        env = env_for(self.db)
        env["APPROVALCTL_API_KEY"] = self.operator_key
        return subprocess.run([sys.executable, "-m", "approvalctl", "--server", self.url,
                               *args], env=env, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        self.operator.close()
        stop_process(self.proc)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    s = Serve(tmp_path_factory.mktemp("hooks") / "approvals.db")
    yield s
    s.stop()


@pytest.fixture
def clean_rules(serve: Serve):
    yield
    for rule in serve.operator.list_rules():
        serve.operator.remove_rule(rule["name"])


def pending_for(list_pending, tool: str, proc: subprocess.Popen, timeout: float = 30):
    """The pending request the hook filed (polled: it is another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in list_pending() if r.tool_name == tool]
        if found:
            return found[0]
        assert proc.poll() is None, finish(proc)
        time.sleep(0.05)
    raise AssertionError("the hook filed no request")


# ---------------------------------------------------------------- through the server
@pytest.mark.slow
@pytest.mark.parametrize("name", EVENTS)
def test_each_real_event_waits_for_the_operator_and_allows_exactly_that_call(serve, name):
    agent, event = name.split(".")
    tool, arguments = expected_call(name)
    proc = start_hook(agent, (FIXTURES / f"{name}.json").read_bytes(), serve.hook_env())
    req = pending_for(lambda: serve.operator.list().items, tool, proc)
    # The operator sees exactly the input the agent will run, and which session asks.
    assert req.arguments == arguments
    assert req.user_id == "agent-bot"
    raw = fixture(name)
    session = raw.get("session_id") or raw.get("conversation_id")
    assert session in req.reason and raw.get("cwd", raw.get("workspace_roots", [""])[0]) \
        in req.reason
    if raw.get("tool_input", {}).get("description") if isinstance(raw.get("tool_input"),
                                                                  dict) else False:
        assert req.reason.startswith(raw["tool_input"]["description"])
    approved = serve.operator_cli("approve", req.id)
    assert approved.returncode == 0, approved.stderr
    code, out, err = finish(proc)
    assert verdict(agent, event, code, out) == "allow", err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["claude-code.PreToolUse", "codex.PreToolUse",
                                  "gemini.BeforeTool", "cursor.beforeShellExecution",
                                  "claude-code.PermissionRequest"])
def test_a_rejection_is_a_deny_carrying_the_operators_note(serve, name):
    agent, event = name.split(".")
    tool, _ = expected_call(name)
    proc = start_hook(agent, (FIXTURES / f"{name}.json").read_bytes(), serve.hook_env())
    req = pending_for(lambda: serve.operator.list().items, tool, proc)
    done = serve.operator_cli("reject", req.id, "--reason", "not on a Friday")
    assert done.returncode == 0, done.stderr
    code, out, err = finish(proc)
    assert verdict(agent, event, code, out) == "deny"
    assert code == 2 and "not on a Friday" in err and "not on a Friday" in out


@pytest.mark.slow
@pytest.mark.parametrize("agent,name", [("claude-code", "claude-code.PreToolUse"),
                                        ("codex", "codex.PreToolUse"),
                                        ("gemini", "gemini.BeforeTool"),
                                        ("cursor", "cursor.beforeMCPExecution")])
def test_a_policy_allow_answers_at_once_and_is_recorded(serve, clean_rules, agent, name):
    tool, arguments = expected_call(name)
    serve.operator.add_rule({"name": "trusted", "tools": [tool], "action": "allow"})
    code, out, err = run_hook(agent, (FIXTURES / f"{name}.json").read_bytes(),
                              serve.hook_env())
    assert verdict(agent, fixture(name)["hook_event_name"], code, out) == "allow", err
    req = serve.operator.list(status="approved", tool_name=tool).items[0]
    assert req.decided_by == "policy:trusted" and req.arguments == arguments


@pytest.mark.slow
def test_a_policy_deny_is_a_deny_without_waiting(serve, clean_rules):
    serve.operator.add_rule({"name": "no-force", "tools": ["Bash"],
                             "match": {"command": "git push*--force*"}, "action": "deny",
                             "note": "force pushes are off"})
    code, out, err = run_hook("claude-code", (FIXTURES / "claude-code.PreToolUse.json")
                              .read_bytes(), serve.hook_env())
    assert code == 2 and "force pushes are off" in err
    assert verdict("claude-code", "PreToolUse", code, out) == "deny"


# ---------------------------------------------------------------- locally
@pytest.mark.slow
def test_locally_the_hook_files_in_the_database_and_the_operator_decides(db_url):
    env = env_for(db_url)
    proc = start_hook("gemini", (FIXTURES / "gemini.BeforeTool.json").read_bytes(), env)
    store = open_store(db_url)
    try:
        service = ApprovalService(store)
        operator = Principal("olivia", "operator")
        req = pending_for(lambda: service.list(operator).items, "run_shell_command", proc)
        assert req.user_id == "gemini"  # the agent's request, so the local operator may decide
        assert req.arguments == fixture("gemini.BeforeTool")["tool_input"]
        approved = subprocess.run([sys.executable, "-m", "approvalctl", "approve", req.id],
                                  env=env, capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0, approved.stderr
        code, out, _ = finish(proc)
        assert verdict("gemini", "BeforeTool", code, out) == "allow"
    finally:
        store.close()


@pytest.mark.slow
def test_locally_a_policy_rule_allows_through_the_installed_command(db_path, tmp_path):
    env = env_for(db_path)
    exe = Path(sys.executable).parent / "approvalctl"
    added = subprocess.run([str(exe), "rules", "add", "reads", "--action", "allow", "--tool",
                            "Write", "--match", "file_path=/home/dev/shop/*"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    proc = subprocess.run([str(exe), "hook", "claude-code"], env=env, timeout=60,
                          input=(FIXTURES / "claude-code.PermissionRequest.json").read_bytes(),
                          capture_output=True)
    assert verdict("claude-code", "PermissionRequest", proc.returncode,
                   proc.stdout.decode()) == "allow"
    # filed, allowed by the rule and used in one transaction, audited as those three steps
    store = open_store(str(db_path))
    try:
        service = ApprovalService(store)
        admin = Principal("t", "admin", local=True)
        (req,) = service.list(admin, status="all").items
        assert req.decided_by == "policy:reads" and req.consumed_at
        assert [r["action"] for r in store.audit_rows(request_id=req.id)] == [
            "create", "approve", "consume"]
        assert service.audit_verify(admin).ok
    finally:
        store.close()


# ---------------------------------------------------------------- it never fails open
BASH = (FIXTURES / "claude-code.PreToolUse.json").read_bytes()


def _assert_denied(agent: str, event: str, result: tuple[int, str, str], why: str) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert verdict(agent, event, code, out) == "deny"
    assert why in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["claude-code.PreToolUse", "codex.PreToolUse",
                                  "gemini.BeforeTool", "cursor.beforeShellExecution"])
def test_server_down_is_a_deny(db_path, name):
    agent, event = name.split(".")
    env = env_for(db_path)
    env["APPROVALCTL_SERVER"] = f"http://127.0.0.1:{free_port()}"
    env["APPROVALCTL_API_KEY"] = "actl_x"
    _assert_denied(agent, event, run_hook(agent, (FIXTURES / f"{name}.json").read_bytes(),
                                          env), "cannot reach")


@pytest.mark.slow
def test_bad_or_missing_key_is_a_deny(serve):
    env = serve.hook_env("actl_AAAAAAAAAA_" + "B" * 43)
    _assert_denied("claude-code", "PreToolUse", run_hook("claude-code", BASH, env), "key")
    env.pop("APPROVALCTL_API_KEY")
    _assert_denied("claude-code", "PreToolUse", run_hook("claude-code", BASH, env),
                   "APPROVALCTL_API_KEY")


@pytest.mark.slow
@pytest.mark.parametrize("stdin,why", [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"hook_event_name": "PreToolUse"}', "tool_name"),
    (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": [1]}',
     "tool_input"),
    (b'{"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {}}',
     "unknown claude-code hook event"),
    (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "'
     + b"x" * (2 * 1024 * 1024) + b'"}}', "larger than"),
    (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "'
     + b"x" * (100 * 1024) + b'"}}', "64 KiB"),
    # a repeated key: the agent (first-wins parser) and the operator would read different
    # values, so neither value may be filed
    (b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": '
     b'{"command": "rm -rf ~", "command": "ls"}}', "duplicate key 'command'"),
    (b'{"hook_event_name": "PreToolUse", "hook_event_name": "PreToolUse", "tool_name": "Bash",'
     b' "tool_input": {"command": "ls"}}', "duplicate key 'hook_event_name'"),
], ids=["empty", "not-json", "array", "no-tool", "tool-input-array", "unknown-event",
        "2-MiB-event", "100-KiB-arguments", "duplicate-tool-input-key", "duplicate-event-key"])
def test_malformed_unknown_and_huge_events_are_denied(serve, stdin, why):
    _assert_denied("claude-code", "PreToolUse", run_hook("claude-code", stdin,
                                                         serve.hook_env()), why)


@pytest.mark.slow
def test_no_decision_within_the_budget_is_a_deny_and_the_request_is_withdrawn(serve):
    code, out, err = run_hook("codex", (FIXTURES / "codex.PreToolUse.json").read_bytes(),
                              serve.hook_env(), "--timeout", "1s")
    _assert_denied("codex", "PreToolUse", (code, out, err), "time budget")
    rid = err.split("no decision on ")[1].split()[0]
    assert serve.operator.get(rid).status == "cancelled"


@pytest.mark.slow
def test_being_stopped_mid_wait_is_a_deny(serve):
    proc = start_hook("claude-code", BASH, serve.hook_env())
    req = pending_for(lambda: serve.operator.list().items, "Bash", proc)
    time.sleep(0.5)  # the request is stored before the hook has read the server's answer
    proc.send_signal(signal.SIGTERM)
    _assert_denied("claude-code", "PreToolUse", finish(proc), "stopped")
    assert serve.operator.get(req.id).status == "cancelled"  # withdrawn, not left pending


def test_cursor_tool_input_as_json_text_with_a_repeated_key_is_denied(db_path):
    """Cursor may send an MCP tool input as JSON text: a repeated key inside it is refused
    even when a policy rule would allow the value the operator would have been shown."""
    env = env_for(db_path)
    subprocess.run([sys.executable, "-m", "approvalctl", "rules", "add", "safe-read",
                    "--action", "allow", "--tool", "read_file", "--match", "path=/tmp/safe"],
                   env=env, check=True, capture_output=True)
    event = {"hook_event_name": "beforeMCPExecution", "conversation_id": "c",
             "tool_name": "read_file",
             "tool_input": '{"path": "/etc/shadow", "path": "/tmp/safe"}'}
    _assert_denied("cursor", "beforeMCPExecution",
                   run_hook("cursor", json.dumps(event).encode(), env), "duplicate key 'path'")


def test_unknown_agent_and_bad_options_are_denied(db_path):
    env = env_for(db_path)
    code, out, err = run_hook("aider", BASH, env)
    assert code == 2 and "unknown agent" in err
    _assert_denied("claude-code", "PreToolUse", run_hook("claude-code", BASH, env,
                                                         "--timeout", "soon"), "--timeout")
    _assert_denied("claude-code", "PreToolUse", run_hook("claude-code", BASH, env, "--yes"),
                   "unknown option")


def test_the_installed_command_blocks_even_when_approvalctl_is_missing(tmp_path):
    from approvalctl.hook_install import command_for

    command = command_for("claude-code", str(tmp_path / "no-such-approvalctl"))
    proc = subprocess.run(["sh", "-c", command], input=BASH, capture_output=True, timeout=30)
    assert proc.returncode == 2


class _HoldingProxy:
    """A TCP proxy in front of `serve` that holds the server's answers back until released:
    the request is stored, but the hook has not read the answer yet."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.answered = threading.Event()  # the server has answered (the change committed)
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True),
                             daemon=True).start()

    def _pipe(self, src, dst, answers: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if answers:
                    self.answered.set()
                    self.release.wait(30)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.release.set()
        self.listener.close()


@pytest.mark.slow
def test_being_stopped_while_the_create_answer_is_in_flight_withdraws_the_request(serve):
    """SIGTERM after the server stored the request but before the hook read its id: the
    hook still learns the id and withdraws it, so the operator is never asked to approve a
    call that will not run."""
    proxy = _HoldingProxy(serve.port)
    try:
        env = serve.hook_env()
        env["APPROVALCTL_SERVER"] = f"http://127.0.0.1:{proxy.port}"
        proc = start_hook("claude-code", BASH, env)
        assert proxy.answered.wait(30), finish(proc)
        req = pending_for(lambda: serve.operator.list().items, "Bash", proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the signal is in; only then does the answer reach the hook
        proxy.release.set()
        _assert_denied("claude-code", "PreToolUse", finish(proc), "stopped")
        assert serve.operator.get(req.id).status == "cancelled"
    finally:
        proxy.close()

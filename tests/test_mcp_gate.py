"""`approvalctl mcp proxy` and `approvalctl mcp serve`, as real processes, driven by the
`mcp` SDK's own stdio client. Under the proxy runs tests/fixtures/mcp_recorder.py, a real
MCP server that records every tools/call it runs, so each test can tell exactly what
reached it. The operator decides from this process, through the service on the same
SQLite file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp")

from conftest import env_for, free_port  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from approvalctl.models import Principal  # noqa: E402
from approvalctl.service import ApprovalService  # noqa: E402
from approvalctl.store import open_store  # noqa: E402

pytestmark = pytest.mark.slow

RECORDER = Path(__file__).parent / "fixtures" / "mcp_recorder.py"
OPERATOR = Principal("olivia", "operator")
ADMIN = Principal("t", "admin", local=True)
STARTUP = 120  # seconds: importing the SDK is slow on a loaded machine


@pytest.fixture
def svc(db_path: Path):
    service = ApprovalService(open_store(str(db_path)))
    yield service
    service.store.close()


def proxy_params(db_path: Path, record: Path, *extra: str, env: dict | None = None,
                 command: list[str] | None = None) -> StdioServerParameters:
    # MCP clients start servers with a minimal environment: the database is passed here,
    # as a user passes it in the client's MCP config.
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "approvalctl", "mcp", "proxy", "--name", "rec", "--progress-every",
              "0.2s", *extra, "--",
              *(command or [sys.executable, str(RECORDER), str(record)])],
        env=env or env_for(db_path))


def recorded(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def text_of(result) -> str:
    return " ".join(c.text for c in result.content if c.type == "text")


def pending(svc: ApprovalService, tool: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in svc.list(ADMIN, status="pending").items if r.tool_name == tool]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no pending request for {tool}")


async def decide_later(svc: ApprovalService, tool: str, action: str, note: str,
                       after: float = 0) -> None:
    req = await anyio.to_thread.run_sync(pending, svc, tool)
    await anyio.sleep(after)  # a slow operator: the client sees progress meanwhile
    await anyio.to_thread.run_sync(lambda: svc.decide(OPERATOR, req.id, action, note))


def run_session(params: StdioServerParameters, body) -> None:
    async def main() -> None:
        with anyio.fail_after(STARTUP):
            async with stdio_client(params) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                await body(session)

    anyio.run(main)


# ---------------------------------------------------------------- the proxy
def test_approved_call_reaches_the_server_once_with_exactly_the_approved_arguments(
        db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"
    args = {"path": "/etc/motd", "content": "hello\nworld"}
    progress: list[float] = []

    async def body(session: ClientSession) -> None:
        tools = [t.name for t in (await session.list_tools()).tools]
        assert "write_file" in tools  # lists pass untouched
        async with anyio.create_task_group() as tg:
            tg.start_soon(decide_later, svc, "mcp__rec__write_file", "approve", "ok", 1.5)

            async def on_progress(p: float, total, message) -> None:
                progress.append(p)

            result = await session.call_tool("write_file", args,
                                             progress_callback=on_progress)
        assert not result.is_error, text_of(result)
        assert "wrote 11 characters" in text_of(result)
        res = await session.read_resource("note://hello")  # resources pass untouched
        assert res.contents[0].text == "hello from the recorder"

    run_session(proxy_params(db_path, record), body)
    assert recorded(record) == [{"tool": "write_file", "arguments": args}]
    req = svc.list(ADMIN, status="all").items[0]
    assert req.tool_name == "mcp__rec__write_file" and req.arguments == args
    assert req.status == "approved" and req.consumed_at, "the approval was used, once"
    assert progress and progress == sorted(progress), "kept alive with progress"


def test_rejected_call_is_an_error_result_with_the_note_and_never_reaches_the_server(
        db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"

    async def body(session: ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(decide_later, svc, "mcp__rec__write_file", "reject",
                          "not that file")
            result = await session.call_tool("write_file", {"path": "/etc/passwd",
                                                            "content": "x"})
        assert result.is_error
        assert "rejected by olivia" in text_of(result)
        assert "not that file" in text_of(result)

    run_session(proxy_params(db_path, record), body)
    assert recorded(record) == []


def test_policy_allow_passes_without_asking_and_deny_refuses(db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"
    svc.add_rule(ADMIN, {"name": "echo-ok", "tools": ["mcp__rec__echo"], "action": "allow"})
    svc.add_rule(ADMIN, {"name": "no-writes", "tools": ["mcp__rec__write_*"],
                         "action": "deny", "note": "read-only session"})

    async def body(session: ClientSession) -> None:
        result = await session.call_tool("echo", {"text": "hi"})
        assert not result.is_error and text_of(result) == "hi"
        result = await session.call_tool("write_file", {"path": "a", "content": "b"})
        assert result.is_error and "no-writes" in text_of(result)

    run_session(proxy_params(db_path, record), body)
    assert recorded(record) == [{"tool": "echo", "arguments": {"text": "hi"}}]
    by_tool = {r.tool_name: r for r in svc.list(ADMIN, status="all").items}
    assert by_tool["mcp__rec__echo"].decided_by == "policy:echo-ok"
    assert by_tool["mcp__rec__echo"].consumed_at
    assert by_tool["mcp__rec__write_file"].status == "rejected"
    # filed, allowed and used in one transaction, audited as the three steps it stands for
    trail = [(r["action"], r["actor"]) for r in
             svc.store.audit_rows(request_id=by_tool["mcp__rec__echo"].id)]
    assert [a for a, _ in trail] == ["create", "approve", "consume"]
    assert trail[1] == ("approve", "policy:echo-ok") and trail[0][1] == trail[2][1]
    assert svc.audit_verify(ADMIN).ok
    svc.store.flush_counters()
    assert {n: v for n, lab, v in svc.store.counters()}["approval_consumed_total"] == 1


def test_approvalctl_unreachable_fails_closed(db_path, tmp_path):
    record = tmp_path / "calls.jsonl"
    env = env_for(db_path)
    env["APPROVALCTL_SERVER"] = f"http://127.0.0.1:{free_port()}"
    env["APPROVALCTL_API_KEY"] = "ak_nothing_listens_there"

    async def body(session: ClientSession) -> None:
        result = await session.call_tool("echo", {"text": "hi"})
        assert result.is_error and "cannot reach approvalctl server" in text_of(result)

    run_session(proxy_params(db_path, record, env=env), body)
    assert recorded(record) == []


def test_a_crashing_server_gives_an_error_result(db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"
    svc.add_rule(ADMIN, {"name": "all", "tools": ["mcp__rec__*"], "action": "allow"})

    async def body(session: ClientSession) -> None:
        result = await session.call_tool("crash", {})
        assert result.is_error and "exited (status 3)" in text_of(result)
        result = await session.call_tool("echo", {"text": "after"})
        assert result.is_error and "not running" in text_of(result)

    run_session(proxy_params(db_path, record), body)
    assert recorded(record) == [{"tool": "crash", "arguments": {}}]


def test_a_server_that_never_answers_gets_an_error_result(db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"
    svc.add_rule(ADMIN, {"name": "all", "tools": ["mcp__rec__*"], "action": "allow"})

    async def body(session: ClientSession) -> None:
        result = await session.call_tool("hang", {})
        assert result.is_error and "did not answer within 1 s" in text_of(result)

    run_session(proxy_params(db_path, record, "--server-timeout", "1s"), body)


def test_a_server_that_sends_garbage_is_not_relayed(db_path, tmp_path):
    noisy = tmp_path / "noisy.py"
    noisy.write_text(
        "import sys, runpy\n"
        "sys.stdout.write('this is not json\\n'); sys.stdout.flush()\n"
        f"sys.argv = [{str(RECORDER)!r}, {str(tmp_path / 'calls.jsonl')!r}]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")

    async def body(session: ClientSession) -> None:
        assert (await session.list_tools()).tools  # the session survives the garbage

    run_session(proxy_params(db_path, tmp_path / "calls.jsonl",
                             command=[sys.executable, str(noisy)]), body)


def test_client_disconnecting_mid_wait_withdraws_the_request(db_path, tmp_path, svc):
    record = tmp_path / "calls.jsonl"

    async def body(session: ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.call_tool, "write_file", {"path": "p", "content": "c"})
            await anyio.to_thread.run_sync(pending, svc, "mcp__rec__write_file")
            tg.cancel_scope.cancel()

    run_session(proxy_params(db_path, record), body)  # leaving it closes the proxy's stdin
    deadline = time.monotonic() + 30
    while svc.list(ADMIN, status="all").items[0].status == "pending":
        assert time.monotonic() < deadline, "the request was not withdrawn"
        time.sleep(0.05)
    assert svc.list(ADMIN, status="all").items[0].status == "cancelled"
    assert recorded(record) == []


# ---------------------------------------------------------------- mcp serve
def test_serve_requests_checks_and_withdraws_but_never_decides(db_path, svc):
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "approvalctl", "mcp", "serve"],
                                   env=env_for(db_path))

    async def body(session: ClientSession) -> None:
        names = {t.name for t in (await session.list_tools()).tools}
        assert names == {"request_approval", "check_approval", "withdraw_approval"}
        result = await session.call_tool("request_approval", {
            "tool_name": "deploy", "arguments": {"env": "prod"}, "reason": "release",
            "risk": "high", "ttl": "10m"})
        assert not result.is_error, text_of(result)
        req = result.structured_content
        assert req["status"] == "pending" and req["digest"].startswith("sha256:")
        async with anyio.create_task_group() as tg:
            tg.start_soon(decide_later, svc, "deploy", "approve", "go")
            result = await session.call_tool("check_approval",
                                             {"id": req["id"], "wait_seconds": 60})
        assert result.structured_content["status"] == "approved"
        other = (await session.call_tool("request_approval", {"tool_name": "rm"})
                 ).structured_content
        result = await session.call_tool("withdraw_approval", {"id": other["id"]})
        assert result.structured_content["status"] == "cancelled"
        result = await session.call_tool("check_approval", {"id": "nope"})
        assert result.is_error

    run_session(params, body)


# ---------------------------------------------------------------- raw JSON-RPC edge cases
RAW_SERVER = """
import json, sys
record = open(sys.argv[1], "a")
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "tools/call":
        record.write(line); record.flush()
    if "id" in msg:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}), flush=True)
"""


class RawProxy:
    """The proxy in front of a stdlib line server, spoken to with raw JSON-RPC lines."""

    def __init__(self, db_path: Path, tmp_path: Path) -> None:
        import subprocess

        server = tmp_path / "raw_server.py"
        server.write_text(RAW_SERVER)
        self.record = tmp_path / "raw_calls.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "approvalctl", "mcp", "proxy", "--name", "raw", "--",
             sys.executable, str(server), str(self.record)],
            env=env_for(db_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, raw: bytes) -> None:
        self.proc.stdin.write(raw + b"\n")
        self.proc.stdin.flush()

    def answer(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def close(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        return code


def test_a_duplicated_key_or_a_batched_call_is_refused_not_forwarded(db_path, tmp_path, svc):
    svc.add_rule(ADMIN, {"name": "all", "tools": ["mcp__raw__*"], "action": "allow"})
    raw = RawProxy(db_path, tmp_path)
    raw.send(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert raw.answer() == {"jsonrpc": "2.0", "id": 1, "result": {}}  # relayed
    raw.send(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sh",'
             b'"arguments":{"cmd":"ls","cmd":"rm -rf /"}}}')
    answer = raw.answer()
    assert answer["id"] == 2 and answer["result"]["isError"]
    assert "duplicate key 'cmd'" in answer["result"]["content"][0]["text"]
    raw.send(b'[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sh"}}]')
    assert raw.answer()[0]["error"]["code"] == -32600
    raw.send(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"sh",'
             b'"arguments":{"cmd":"ls"}}}')
    assert raw.answer() == {"jsonrpc": "2.0", "id": 4, "result": {}}
    assert raw.close() == 0
    calls = [json.loads(line) for line in raw.record.read_text().splitlines()]
    assert [c["params"]["arguments"] for c in calls] == [{"cmd": "ls"}]


def test_a_call_in_another_spelling_is_refused_and_extra_fields_never_reach_the_server(
        db_path, tmp_path, svc):
    """A lenient server might run "TOOLS/CALL" or "tools/call " as a call the gate never saw;
    and an approved call reaches the server as the operator saw it: name, arguments and the
    protocol's `_meta`, no other member of the message or its params."""
    svc.add_rule(ADMIN, {"name": "all", "tools": ["mcp__raw__*"], "action": "allow"})
    raw = RawProxy(db_path, tmp_path)
    for n, method in enumerate((b"TOOLS/CALL", b"tools/call ", b" Tools/Call",
                                b"tools/call\\u0000", "tool\u017f/call".encode())):
        raw.send(b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":{"name":"sh",'
                 b'"arguments":{"cmd":"rm"}}}' % (n, method))
        answer = raw.answer()
        assert answer["id"] == n and answer["error"]["code"] == -32600, answer
    raw.send(b'[{"jsonrpc":"2.0","id":7,"method":"Tools/Call","params":{"name":"sh"}}]')
    assert raw.answer()[0]["error"]["code"] == -32600
    # read one way here, another way by a lenient server: refused, never forwarded
    raw.send(b'{"jsonrpc":"2.0","id":8,"method":"ping","Method":"tools/call",'
             b'"params":{"name":"sh","arguments":{"cmd":"rm"}}}')
    assert raw.answer()["error"]["code"] == -32600
    raw.send(b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sh",'
             b'"arguments":{"cmd":"rm"}},"method":"ping"}')
    assert raw.answer()["error"]["code"] == -32600
    raw.send(b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"sh",'
             b'"arguments":{"cmd":"rm \xff"}}}')
    assert raw.answer()["error"]["code"] == -32700
    raw.send(b'{"jsonrpc":"2.0","id":9,"method":"tools/call","extra":{"cmd":"rm"},'
             b'"params":{"name":"sh","arguments":{"cmd":"ls"},"task":{"ttl":1},'
             b'"shadow":{"cmd":"rm"},"_meta":{"progressToken":"p"}}}')
    assert raw.answer() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    assert raw.close() == 0
    calls = [json.loads(line) for line in raw.record.read_text().splitlines()]
    assert calls == [{"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "sh", "arguments": {"cmd": "ls"},
                                 "_meta": {"progressToken": "p"}}}]


def test_notifications_cancelled_withdraws_a_waiting_call(db_path, tmp_path, svc):
    raw = RawProxy(db_path, tmp_path)
    raw.send(b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"sh",'
             b'"arguments":{"cmd":"ls"}}}')
    req = pending(svc, "mcp__raw__sh")
    raw.send(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":'
             b'{"requestId":"a"}}')
    deadline = time.monotonic() + 30
    while svc.get(ADMIN, req.id).status == "pending":
        assert time.monotonic() < deadline, "not withdrawn"
        time.sleep(0.05)
    assert svc.get(ADMIN, req.id).status == "cancelled"
    assert raw.close() == 0
    assert not raw.record.exists() or raw.record.read_text() == ""


def test_an_oversized_message_is_refused_and_the_session_goes_on(db_path, tmp_path):
    from approvalctl.mcp_gate.proxy import MAX_LINE

    raw = RawProxy(db_path, tmp_path)
    huge = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sh",' \
           b'"arguments":{"cmd":"' + b"x" * MAX_LINE + b'"}}}'
    raw.send(huge)
    answer = raw.answer()
    assert answer["error"]["code"] == -32600 and "longer than" in answer["error"]["message"]
    raw.send(b'{"jsonrpc":"2.0","id":2,"method":"ping"}')
    assert raw.answer() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert raw.close() == 0
    assert not raw.record.exists() or raw.record.read_text() == ""

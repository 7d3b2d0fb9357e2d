"""`approvalctl mcp proxy [--name N] -- CMD [ARG…]`: a gate in front of a stdio MCP server.

It starts CMD, relays the newline-delimited JSON-RPC stream (MCP stdio transport) both ways
byte for byte — initialize, lists, resources, prompts, notifications, pings, responses to
the server's own requests — except a `tools/call` from the client. That one goes through
approvalctl as the tool `mcp__N__TOOL` with its exact `arguments`:

- the policy allows it → forwarded (the approval is consumed first; locally the request is
  filed, allowed and consumed in one transaction);
- the policy denies it, or the operator rejects it, or it expires, or the wait runs out →
  a tool result `{"content": [{"type": "text", "text": REASON}], "isError": true}`, so the
  model can adapt; the wrapped server never sees it;
- ask → the request waits for the operator; while it waits the client is kept alive with
  `notifications/progress` if its call carried `params._meta.progressToken`; approved →
  the approval is consumed with the digest of exactly the arguments forwarded, and the call
  is forwarded re-serialised from the parsed message (so the server cannot read a different
  call out of the same bytes, e.g. through a duplicated key — such input is refused).

It fails closed: approvalctl unreachable, a bad key, a malformed call → an error result,
never a forward. The client going away (EOF, or `notifications/cancelled` for a waiting
call) withdraws the requests still waiting. The wrapped server: its stderr passes through;
a crash answers every call it still owed with an error; a line that is not JSON-RPC is
dropped with a note on stderr; a call it does not answer within `--server-timeout` is
answered with an error. Lines longer than MAX_LINE are refused. When the client closes its
end the server's stdin is closed, and it is given SHUTDOWN_GRACE seconds to exit before it
is terminated, then killed. Only JSON-RPC ever goes to stdout; the proxy's own messages go
to stderr.

Standard library only (plus approvalctl's backend): the SDK is not needed to relay bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from contextlib import suppress
from typing import Any, Literal

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the N of mcp__N__TOOL
MAX_LINE = 16 * 1024 * 1024  # bytes per JSON-RPC message, either way
STARTUP_GRACE = 120.0  # seconds the server has to answer `initialize`, at least
SHUTDOWN_GRACE = 5.0  # seconds after closing the server's stdin, and again after SIGTERM
PROGRESS_EVERY = 10.0  # seconds between progress notifications while the operator decides
DEFAULT_WAIT = 3600.0  # seconds a call may wait for the operator
DEFAULT_SERVER_TIMEOUT = 600.0  # seconds the wrapped server has to answer a request
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
PARSE_ERROR = -32700
SERVER_GONE = -32000  # implementation-defined server error (JSON-RPC 2.0 §5.1)


def _say(text: str) -> None:
    with suppress(Exception):
        sys.stderr.write(f"approvalctl mcp proxy: {text}\n")
        sys.stderr.flush()


def _one_line(text: object, limit: int = 500) -> str:
    from ..render import plain

    return plain(str(text).replace("\n", " "), limit)


def _tool_error(request_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id,
            "result": {"content": [{"type": "text", "text": text}], "isError": True}}


def _rpc_error(request_id: Any, code: int, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": text}}


class Lines:
    """Newline-delimited messages from a stream, each at most MAX_LINE bytes.

    A longer line is consumed up to its end and reported as None, so one oversized message
    costs an error answer, not the connection."""

    def __init__(self, reader: asyncio.StreamReader, limit: int = MAX_LINE) -> None:
        self.reader = reader
        self.limit = limit
        self.buffer = bytearray()

    async def next(self) -> bytes | None | Literal[False]:
        """The next line without its newline; None for an oversized one; False at EOF."""
        skipping = False
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                if skipping or len(line) > self.limit:
                    return None
                return line
            if len(self.buffer) > self.limit:
                skipping = True
                self.buffer.clear()
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                if skipping:
                    return None
                if self.buffer.strip():
                    line = bytes(self.buffer)
                    self.buffer.clear()
                    return line
                return False
            self.buffer += chunk



def _looks_like_call(method: Any) -> bool:
    """Whether `method` is tools/call in any spelling a lenient server might still run as one:
    other case (Unicode case folding, so "toolſ/call" too), compatibility forms (NFKC),
    white space or control characters around or inside it."""
    if not isinstance(method, str):
        return False
    import unicodedata

    folded = unicodedata.normalize("NFKC", method).casefold()
    return "".join(ch for ch in folded if not ch.isspace()
                   and unicodedata.category(ch)[0] != "C") == "tools/call"


#: JSON-RPC's member names: a message with another spelling of one of them ("Method") is
#: refused, since a case-insensitive parser (Go's encoding/json) would read it as that member.
_MEMBERS = ("jsonrpc", "id", "method", "params")


def _shadowed_member(message: dict[str, Any]) -> str | None:
    """A key of `message` that is not one of JSON-RPC's members but folds to one, or None."""
    for key in message:
        if key not in _MEMBERS and key.casefold() in _MEMBERS:
            return key
    return None

class Proxy:
    """One client (this process's stdin/stdout) in front of one wrapped server."""

    def __init__(self, name: str, command: list[str], *, wait: float = DEFAULT_WAIT,
                 server_timeout: float = DEFAULT_SERVER_TIMEOUT,
                 progress_every: float = PROGRESS_EVERY, settings: Any = None) -> None:
        self.name = name
        self.command = command
        self.wait = wait
        self.server_timeout = server_timeout
        self.progress_every = progress_every
        self.settings = settings
        self.backend: Any = None
        self.backend_error: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.server_alive = False
        self.out = sys.stdout.buffer
        # requests forwarded to the server and not answered yet: key → (id, is tools/call)
        self.owed: dict[str, tuple[Any, bool]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.late: set[str] = set()
        self.gating: dict[str, asyncio.Task] = {}

    # ---- output
    def send_client(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else \
            json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            self.out.write(data + b"\n")
            self.out.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the client is gone; the stdin side notices and shuts down

    def send_server(self, data: bytes, key: str | None = None, request_id: Any = None,
                    is_call: bool = False, initialize: bool = False) -> None:
        if not self.server_alive or self.proc is None or self.proc.stdin is None:
            if key is not None:
                self.answer_gone(request_id, is_call)
            return
        if key is not None:
            self.owed[key] = (request_id, is_call)
            # `initialize` also waits for the server to start (interpreters, imports)
            limit = max(self.server_timeout, STARTUP_GRACE) if initialize \
                else self.server_timeout
            self.timers[key] = asyncio.get_running_loop().call_later(
                limit, self.server_late, key, limit)
        # if it is dying, the reader of its stdout sees it go and answers what is owed
        with suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            self.proc.stdin.write(data + b"\n")

    def answer_gone(self, request_id: Any, is_call: bool,
                    why: str = "the wrapped MCP server is not running") -> None:
        text = f"{why}; the call was not made" if is_call else why
        self.send_client(_tool_error(request_id, text) if is_call
                         else _rpc_error(request_id, SERVER_GONE, why))

    def server_late(self, key: str, limit: float) -> None:
        self.timers.pop(key, None)
        owed = self.owed.pop(key, None)
        if owed is not None:
            self.late.add(key)
            why = f"the wrapped MCP server did not answer within {limit:g} s"
            _say(why)
            request_id, is_call = owed
            self.send_client(_tool_error(request_id, why) if is_call
                             else _rpc_error(request_id, SERVER_GONE, why))

    # ---- the server's side
    async def from_server(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        lines = Lines(self.proc.stdout)
        while True:
            line = await lines.next()
            if line is False:
                break
            if line is None:
                _say(f"dropped a message from the wrapped server longer than {MAX_LINE} "
                     "bytes")
                continue
            try:
                message = json.loads(line)
            except ValueError:
                _say("dropped a line from the wrapped server that is not JSON: "
                     + _one_line(line.decode("utf-8", "replace"), 200))
                continue
            if not isinstance(message, (dict, list)):
                _say("dropped a JSON value from the wrapped server that is not a JSON-RPC "
                     "message")
                continue
            for item in message if isinstance(message, list) else [message]:
                if isinstance(item, dict) and "method" not in item and "id" in item:
                    key = _key(item["id"])
                    if key in self.late:  # answered already, by our timeout error
                        self.late.discard(key)
                        continue
                    self.owed.pop(key, None)
                    timer = self.timers.pop(key, None)
                    if timer:
                        timer.cancel()
            self.send_client(line)
        self.server_alive = False
        code = await self.proc.wait()
        if self.owed:
            _say(f"the wrapped MCP server exited (status {code}) with "
                 f"{len(self.owed)} request(s) unanswered")
        for key, (request_id, is_call) in list(self.owed.items()):
            self.answer_gone(request_id, is_call,
                             f"the wrapped MCP server exited (status {code}) before answering")
            timer = self.timers.pop(key, None)
            if timer:
                timer.cancel()
        self.owed.clear()

    # ---- the client's side
    async def from_client(self, reader: asyncio.StreamReader) -> None:
        lines = Lines(reader)
        while True:
            line = await lines.next()
            if line is False:
                return
            if line is None:
                self.send_client(_rpc_error(None, INVALID_REQUEST,
                                            f"message longer than {MAX_LINE} bytes refused"))
                continue
            self.from_client_line(line)

    def from_client_line(self, line: bytes) -> None:
        # Everything but a tools/call (or a cancel of one being gated) goes to the server
        # untouched, parsed only to remember the ids it owes. Parsed strictly: a line this
        # process would read one way and the wrapped server another (a repeated "method",
        # bytes that are not UTF-8) could carry a call past the gate, so it never goes on.
        from ..strictjson import decode, describe

        try:
            message = decode(line.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            try:
                lenient = json.loads(line)
            except (ValueError, RecursionError):
                lenient = None
            if isinstance(lenient, dict) and lenient.get("method") == "tools/call":
                self.start_gate(line, lenient)  # refused there, as a tool error result
                return
            request_id = lenient.get("id") if isinstance(lenient, dict) else None
            if isinstance(request_id, (dict, list, bool, float)):
                request_id = None
            self.send_client(_rpc_error(request_id, PARSE_ERROR if lenient is None
                                        else INVALID_REQUEST,
                                        f"refused, not forwarded: {_one_line(describe(exc))}"))
            return
        if isinstance(message, dict):
            shadow = _shadowed_member(message)
            if shadow is not None:
                self.send_client(_rpc_error(
                    message.get("id") if shadow != "id" else None, INVALID_REQUEST,
                    f"member {_one_line(shadow, 20)!r} is refused: JSON-RPC spells it "
                    f"{shadow.casefold()!r}"))
                return
            method = message.get("method")
            if method == "tools/call":
                self.start_gate(line, message)
                return
            if _looks_like_call(method):  # "TOOLS/CALL", "tools/call ": a lenient server
                self.send_client(_rpc_error(  # might run it, and the gate never saw it
                    message.get("id"), INVALID_REQUEST, f"method {_one_line(method, 40)!r} "
                    "is refused: spell it tools/call"))
                return
            if method == "notifications/cancelled":
                params = message.get("params")
                target = params.get("requestId") if isinstance(params, dict) else None
                task = self.gating.get(_key(target)) if target is not None else None
                if task is not None:  # the server never saw that call: nothing to forward
                    task.cancel()
                    return
            if "id" in message and isinstance(method, str):
                self.send_server(line, _key(message["id"]), message["id"],
                                 initialize=method == "initialize")
                return
        elif isinstance(message, list) and any(isinstance(m, dict) and _looks_like_call(
                m.get("method")) for m in message):
            # A batch (JSON-RPC 2.0 §6; MCP 2025-06-18 dropped batches): a tools/call in one
            # would slip past the gate, so a batch carrying one is refused whole.
            errors_ = [_rpc_error(m.get("id") if isinstance(m, dict) else None,
                                  INVALID_REQUEST, "a batch may not carry tools/call "
                                  "through approvalctl mcp proxy")
                       for m in message if not isinstance(m, dict) or "id" in m]
            self.send_client(json.dumps(errors_).encode())
            return
        self.send_server(line)

    def start_gate(self, line: bytes, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if request_id is None or isinstance(request_id, (dict, list, bool, float)):
            self.send_client(_rpc_error(None, INVALID_REQUEST,
                                        "tools/call needs an id (a string or an integer)"))
            return
        key = _key(request_id)
        if key in self.gating or key in self.owed:
            self.send_client(_tool_error(request_id, f"request id {request_id!r} is already "
                                                     "in use; the call was not made"))
            return
        task = asyncio.get_running_loop().create_task(self.gate(line, request_id))
        self.gating[key] = task
        task.add_done_callback(lambda _t: self.gating.pop(key, None))

    async def gate(self, line: bytes, request_id: Any) -> None:
        """Decide one tools/call and forward it or answer it with an error result."""
        from .. import errors
        from ..strictjson import loads

        try:
            message = loads(line.decode("utf-8"), "tools/call")
        except (UnicodeDecodeError, errors.ApprovalctlError, ValueError) as exc:
            self.send_client(_tool_error(request_id, f"refused: {_one_line(exc)}"))
            return
        params = message.get("params")
        tool = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments", {}) if isinstance(params, dict) else None
        if arguments is None:
            arguments = {}
        if not isinstance(tool, str) or not tool or not isinstance(arguments, dict):
            self.send_client(_rpc_error(request_id, INVALID_PARAMS, "tools/call needs params "
                                        "{name: string, arguments: object}"))
            return
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        gated = f"mcp__{self.name}__{tool}"
        try:
            verdict = await self.decide(gated, arguments, token)
        except asyncio.CancelledError:
            raise
        except errors.ApprovalctlError as exc:
            verdict = f"approvalctl refused the call: {_one_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unforeseen
            verdict = f"approvalctl could not decide the call: {_one_line(exc)}"
        if verdict is not None:
            self.send_client(_tool_error(request_id, verdict))
            return
        # Exactly what the operator saw, and nothing else: the call's name and arguments,
        # and `_meta` (the protocol's own, e.g. the progress token); any other member of
        # the message or its params is dropped rather than passed on unseen.
        forward: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                   "params": {"name": tool, "arguments": arguments}}
        if isinstance(meta, dict):
            forward["params"]["_meta"] = meta
        data = json.dumps(forward, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_server(data, _key(request_id), request_id, is_call=True)

    async def decide(self, gated: str, arguments: dict[str, Any], token: Any) -> str | None:
        """None if the call may go to the server now (approval consumed), else the reason."""
        from ..digest import digest

        backend = await self.get_backend()
        if backend is None:
            return f"approvalctl is not available, so nothing runs: {self.backend_error}"
        reason = f"MCP tools/call through `approvalctl mcp proxy --name {self.name}`"
        # The digest of exactly the arguments that will be forwarded: an allowed call is
        # filed and its approval used for this call in one step (Backend.file_call).
        call_digest = digest(gated, arguments)
        filing = asyncio.ensure_future(asyncio.to_thread(backend.file_call, gated, arguments,
                                                         reason=reason, digest=call_digest))
        try:
            req, used = await asyncio.shield(filing)
        except asyncio.CancelledError:  # the client went away while it was being filed
            with suppress(Exception):
                await self.withdraw(backend, (await filing)[0].id)
            raise
        if used:
            return None
        try:
            if req.status == "pending":
                req = await self.wait_for(backend, req.id, token)
        except BaseException:  # cancelled (client gone) or failed: nobody approves it now
            await self.withdraw(backend, req.id)
            raise
        if req.status == "pending":
            await self.withdraw(backend, req.id)
            return (f"no decision on {req.id} within {self.wait:g} s; withdrawn, "
                    "the call was not made")
        who = f" by {req.decided_by}" if req.decided_by else ""
        note = f": {req.decision_note}" if req.decision_note else ""
        if req.status != "approved":
            return _one_line(f"{gated} was {req.status}{who} ({req.id}){note}; "
                             "the call was not made", 2000)
        await asyncio.to_thread(backend.consume, req.id, call_digest)
        return None

    async def wait_for(self, backend: Any, request_id: str, token: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        step = 0
        while True:
            left = deadline - loop.time()
            req = await asyncio.to_thread(backend.wait, request_id,
                                          max(0.0, min(self.progress_every, left)))
            if req.status != "pending" or loop.time() >= deadline:
                return req
            if token is not None and not isinstance(token, (dict, list, bool)):
                step += 1
                self.send_client({"jsonrpc": "2.0", "method": "notifications/progress",
                                  "params": {"progressToken": token, "progress": step,
                                             "message": f"waiting for an operator to decide "
                                                        f"{request_id}"}})

    @staticmethod
    async def withdraw(backend: Any, request_id: str) -> None:
        with suppress(Exception):
            await asyncio.shield(asyncio.to_thread(backend.cancel, request_id))

    async def get_backend(self) -> Any:
        if self.backend is None and self.backend_error is None:
            from .. import errors
            from .backend import Backend

            try:
                self.backend = await asyncio.to_thread(Backend, f"mcp:{self.name}",
                                                        self.settings)
            except (errors.ApprovalctlError, OSError) as exc:
                self.backend_error = _one_line(exc)
        return self.backend

    # ---- life
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=None, limit=MAX_LINE)
        except OSError as exc:
            _say(f"cannot start {self.command[0]!r}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        self.server_alive = True
        reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin.buffer)
        server_task = loop.create_task(self.from_server())
        try:
            await self.from_client(reader)
        finally:
            for task in list(self.gating.values()):
                task.cancel()
            if self.gating:
                await asyncio.gather(*self.gating.values(), return_exceptions=True)
            await self.stop_server()
            server_task.cancel()
            with suppress(BaseException):
                await server_task
            if self.backend is not None:
                with suppress(Exception):
                    await asyncio.to_thread(self.backend.close)
        return 0

    async def stop_server(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.stdin is not None:
            with suppress(Exception):
                proc.stdin.close()
        for step in ("wait", "terminate", "kill"):
            if step == "terminate":
                with suppress(ProcessLookupError):
                    proc.terminate()
            elif step == "kill":
                with suppress(ProcessLookupError):
                    proc.kill()
            try:
                return await asyncio.wait_for(proc.wait(), SHUTDOWN_GRACE)
            except asyncio.TimeoutError:
                _say(f"the wrapped server did not exit after {step}")
        return None


def _key(request_id: Any) -> str:
    """A hashable key for a JSON-RPC id (1 and "1" are different ids)."""
    return json.dumps(request_id)


def run(name: str | None, command: list[str], *, wait: float = DEFAULT_WAIT,
        server_timeout: float = DEFAULT_SERVER_TIMEOUT, progress_every: float = PROGRESS_EVERY,
        settings: Any = None) -> int:
    """Run the proxy until the client closes stdin; the exit status."""
    if not command:
        _say("no server command given (usage: approvalctl mcp proxy [--name N] -- CMD ...)")
        return 2
    name = name or os.path.basename(command[0]) or "server"
    if not NAME.fullmatch(name):
        _say(f"--name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
        return 2
    return asyncio.run(Proxy(name, command, wait=wait, server_timeout=server_timeout,
                             progress_every=max(0.05, progress_every),
                             settings=settings).run())

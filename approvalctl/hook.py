"""`approvalctl hook AGENT`: gate a coding agent's tool calls through approvalctl.

The agent runs this before a tool call with its hook event (JSON) on stdin. The hook files
an approval request for exactly that tool input (the policy may decide it at once), waits
for the operator within the hook's time budget and answers in the agent's own format.
See docs/agents.md.

It never fails open. Anything that is not an approval of this very call — a rejection, an
expiry, the time budget running out, the server down, a bad key, a malformed or oversized
event, an event name it does not know, any exception, SIGTERM — is a deny with a one-line
reason, given both ways the agents understand: a deny in the agent's JSON on stdout and
exit status 2 with the reason on stderr (for Claude Code, Codex and Gemini CLI any other
non-zero exit lets the tool run; exit 2 blocks).

This module is the hot path: it runs before every tool call the agent makes. It imports
only the standard library at start, and then only what the chosen mode needs (http.client
for a server, the service and store locally); never Typer, click, rich, pydantic or httpx
(guarded by tests/test_hook_startup.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import suppress
from typing import Any

from .errors import DuplicateKey, Refused
from .strictjson import decode as strict_json

AGENTS = ("claude-code", "codex", "gemini", "cursor")
#: Default time budget per agent: just under the agent's own default hook timeout (Claude
#: Code and Codex 600 s, Gemini CLI 60 s; Cursor documents none, so as for Gemini), so the
#: hook answers deny itself instead of being killed (a killed hook is a non-blocking error).
DEFAULT_TIMEOUT = {"claude-code": 590.0, "codex": 590.0, "gemini": 55.0, "cursor": 55.0}
EVENTS = {
    "claude-code": ("PreToolUse", "PermissionRequest"),
    "codex": ("PreToolUse",),
    "gemini": ("BeforeTool",),
    "cursor": ("beforeShellExecution", "beforeMCPExecution", "preToolUse"),
}
MAX_EVENT_BYTES = 1024 * 1024
MAX_CONTEXT = 300  # characters of session id and cwd shown in the reason
DENIED = 2  # the blocking exit status of every supported agent


# ---------------------------------------------------------------- the event
class Call:
    """What an agent's event asks for: the tool, its exact input, and who asks."""

    __slots__ = ("event", "tool_name", "arguments", "reason", "session", "cwd")

    def __init__(self, event: str, tool_name: str, arguments: dict[str, Any], reason: str,
                 session: str | None, cwd: str | None) -> None:
        self.event = event
        self.tool_name = tool_name
        self.arguments = arguments
        self.reason = reason
        self.session = session
        self.cwd = cwd


def _string(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(f"malformed hook event: {key} must be a non-empty string")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, str):  # Cursor has sent MCP tool input as JSON text
        try:
            value = strict_json(value)
        except DuplicateKey as exc:  # the agent and the operator could read different values
            raise Refused(f"malformed hook event: {what}: {exc}") from None
        except (ValueError, RecursionError):
            raise Refused(f"malformed hook event: {what} is not a JSON object") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(f"malformed hook event: {what} must be a JSON object")
    return value


def parse_event(agent: str, raw: bytes) -> Call:
    """The call an agent's hook event describes; Refused for anything malformed."""
    if len(raw) > MAX_EVENT_BYTES:
        raise Refused(f"hook event larger than {MAX_EVENT_BYTES // 1024} KiB")
    try:
        data = strict_json(raw.decode("utf-8"))
    except DuplicateKey as exc:  # the agent and the operator could read different values
        raise Refused(f"malformed hook event: {exc}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise Refused("malformed hook event: not JSON") from None
    if not isinstance(data, dict):
        raise Refused("malformed hook event: not a JSON object")
    event = _string(data, "hook_event_name", required=True)
    if event not in EVENTS[agent]:
        raise Refused(f"unknown {agent} hook event {str(event)[:60]!r} (approvalctl handles "
                      f"{', '.join(EVENTS[agent])})")
    if agent == "cursor":
        session = _string(data, "conversation_id")
        roots = data.get("workspace_roots")
        cwd = _string(data, "cwd") or (roots[0] if isinstance(roots, list) and roots
                                       and isinstance(roots[0], str) else None)
        if event == "beforeShellExecution":
            command = _string(data, "command", required=True)
            # The shell runs the command in cwd: both are what the operator approves.
            arguments: dict[str, Any] = {"command": command}
            if cwd is not None:
                arguments["cwd"] = cwd
            tool = "Shell"
        else:
            tool = _string(data, "tool_name", required=True)  # type: ignore[assignment]
            arguments = _object(data.get("tool_input"), "tool_input")
    else:
        session = _string(data, "session_id")
        cwd = _string(data, "cwd")
        tool = _string(data, "tool_name", required=True)  # type: ignore[assignment]
        arguments = _object(data.get("tool_input"), "tool_input")
    description = arguments.get("description")
    if isinstance(description, str) and description.strip():
        reason = description.strip()
    else:
        command = arguments.get("command")
        reason = f"{agent} wants to run {tool}" + (
            f": {command[:200]}" if isinstance(command, str) else "")
    context = ", ".join(part for part in (
        f"session {session[:MAX_CONTEXT]}" if session else "",
        f"cwd {cwd[:MAX_CONTEXT]}" if cwd else "") if part)
    if context:
        reason = f"{reason} [{agent} {context}]"
    return Call(event, tool, arguments, reason[:4000], session, cwd)


# ---------------------------------------------------------------- the answer
def answer(agent: str, event: str, allow: bool, reason: str) -> tuple[str, int]:
    """The agent's own decision format: (stdout, exit status)."""
    reason = " ".join(reason.split())[:1000] or "denied"
    if agent in ("claude-code", "codex") and event == "PreToolUse":
        if allow and agent == "codex":
            return "", 0  # Codex rejects a bare "allow" (and then runs the tool): say nothing
        out: dict[str, Any] = {"hookSpecificOutput": {
            "hookEventName": "PreToolUse", "permissionDecision": "allow" if allow else "deny",
            "permissionDecisionReason": reason}}
    elif agent == "claude-code":  # PermissionRequest
        decision: dict[str, Any] = {"behavior": "allow" if allow else "deny"}
        if not allow:
            decision["message"] = reason
        out = {"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                                      "decision": decision}}
    elif agent == "gemini":
        out = {"decision": "allow"} if allow else {"decision": "deny", "reason": reason}
    else:  # cursor
        verdict = "allow" if allow else "deny"
        out = {"permission": verdict, "user_message": reason, "agent_message": reason}
        if event == "preToolUse":
            out["decision"] = verdict
            out["reason"] = reason
    return json.dumps(out), 0 if allow else DENIED


def _deny_event(agent: str, event: str | None) -> str:
    """The event to answer a failure in: the event's own if known, else the main one."""
    return event if event in EVENTS.get(agent, ()) else EVENTS.get(agent, ("PreToolUse",))[0]


# ---------------------------------------------------------------- deciding
class Remote:
    """The three calls the hook makes to an approvalctl server, over the standard library.

    Not `approvalctl.Client`: importing httpx loads click and rich (its command-line
    entry point), several times the cost of this whole hook, before every tool call. The
    HTTP contract is the same (specs/approval_api.yaml); any failure is Refused.
    """

    def __init__(self, base_url: str, api_key: str, deadline: float) -> None:
        from urllib.parse import urlsplit

        url = urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise Refused(f"APPROVALCTL_SERVER must be an http:// or https:// URL, got "
                          f"{base_url[:80]!r}")
        self.base_url = base_url.rstrip("/")
        self.url = url
        self.deadline = deadline
        self.headers = {"X-API-Key": api_key, "User-Agent": "approvalctl-hook",
                        "Content-Type": "application/json", "Accept": "application/json"}

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None
              ) -> Any:
        import http.client

        cls = http.client.HTTPSConnection if self.url.scheme == "https" \
            else http.client.HTTPConnection
        # No call may outlast the budget by more than a moment: the agent kills a hook that
        # overruns its own timeout, and some agents then run the tool.
        limit = max(0.5, min(timeout or 10.0, self.deadline - time.monotonic() + 2.0))
        conn = cls(self.url.hostname or "", self.url.port, timeout=limit)  # checked in __init__
        try:
            conn.request(method, self.url.path + path, headers=self.headers,
                         body=None if body is None else json.dumps(body).encode())
            response = conn.getresponse()
            raw = response.read(4 * MAX_EVENT_BYTES)
        except TimeoutError:
            raise Refused(f"approvalctl server at {self.base_url} did not answer in "
                          "time") from None
        except OSError as exc:
            raise Refused(f"cannot reach approvalctl server at {self.base_url}: "
                          f"{exc.strerror or exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if response.status >= 400 or not isinstance(data, dict):
            detail = data.get("detail") if isinstance(data, dict) else None
            raise Refused(f"approvalctl server refused (HTTP {response.status}): "
                          f"{detail or 'no detail'}")
        return data

    def _request(self, data: dict[str, Any]) -> Any:
        from .models import ApprovalRequest

        return ApprovalRequest.from_dict(data)

    def create(self, tool_name: str, arguments: dict[str, Any], *, reason: str) -> Any:
        return self._request(self._call("POST", "/api/v1/approvals", {
            "tool_name": tool_name, "arguments": arguments, "reason": reason}))

    def wait(self, request_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            slice_ = max(0.0, min(60.0, deadline - time.monotonic()))
            req = self._request(self._call("GET", f"/api/v1/approvals/{request_id}"
                                           f"?wait={slice_:.3f}", timeout=slice_ + 10))
            if req.status != "pending" or time.monotonic() >= deadline:
                return req

    def cancel(self, request_id: str) -> Any:
        return self._request(self._call("DELETE", f"/api/v1/approvals/{request_id}"))

    def consume(self, request_id: str, digest: str) -> Any:
        return self._request(self._call("POST", f"/api/v1/approvals/{request_id}/consume",
                                        {"digest": digest}))

    def close(self) -> None:
        """Nothing held open: one connection per call."""


class Gate:
    """Files a call and waits for its decision, through the server or locally."""

    def __init__(self, agent: str, deadline: float) -> None:
        from .config import Settings

        self.agent = agent
        self.deadline = deadline
        settings = Settings.load()
        if settings.server:
            if not settings.api_key:
                raise Refused("APPROVALCTL_SERVER is set but APPROVALCTL_API_KEY is not")
            self.backend: Any = Remote(settings.server, settings.api_key, deadline)
            self.actor: tuple = ()
            self.user: dict[str, Any] = {}
            self.close = self.backend.close
        else:
            from .config import local_user
            from .models import Principal
            from .service import ApprovalService
            from .store import open_store

            store = open_store(settings.db)
            self.backend = ApprovalService(store, settings)
            self.actor = (Principal(name=local_user(), role="admin", local=True),)
            # Locally the request is the agent's, not the operator's: the operator may
            # then decide it (no self-approval) and tells agents apart in `list`.
            self.user = {"user_id": agent}

            def close() -> None:
                store.flush_counters()
                store.close()

            self.close = close

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def decide(self, call: Call) -> tuple[bool, str]:
        # The approval is bound to exactly the call the agent is about to run and used once:
        # the digest is computed here from the event, not taken from the server's answer.
        from .digest import digest

        call_digest = digest(call.tool_name, call.arguments)
        used = False
        # SIGTERM is held back while the create is in flight: stopped after the server
        # stored the request but before its id arrived, the hook could not withdraw it.
        # Released once the id is known, a pending SIGTERM is handled in the block below.
        held = _hold_sigterm()
        try:
            if self.actor:  # local: a call a rule allows is filed, allowed and used at once
                req = self.backend.create(*self.actor, call.tool_name, call.arguments,
                                          reason=call.reason, consume=call_digest,
                                          **self.user)
                used = req.status == "approved" and req.consumed_at is not None
            else:
                req = self.backend.create(call.tool_name, call.arguments, reason=call.reason)
        except BaseException:
            _release_sigterm(held)
            raise
        try:
            _release_sigterm(held)
            if req.status == "pending":
                req = self.backend.wait(*self.actor, req.id, max(0.0, self.left()))
        except BaseException:  # stopped (SIGTERM), or the wait failed: withdraw it, so
            if req.status == "pending":  # nobody is asked to approve a call that won't run
                with suppress(Exception):
                    self.backend.cancel(*self.actor, req.id)
            raise
        if req.status == "pending":
            with suppress(Exception):  # withdraw it: nobody approves a call that won't run
                self.backend.cancel(*self.actor, req.id)
            return False, f"no decision on {req.id} within the hook's time budget (withdrawn)"
        who = f" by {req.decided_by}" if req.decided_by else ""
        note = f": {req.decision_note}" if req.decision_note else ""
        if req.status != "approved":
            return False, f"{req.tool_name} {req.status}{who} ({req.id}){note}"
        if not used:
            self.backend.consume(*self.actor, req.id, call_digest)
        return True, f"approved{who} ({req.id}){note}"


def _hold_sigterm() -> bool:
    """Block SIGTERM for this thread (POSIX); True if it was not blocked already."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        return False
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return signal.SIGTERM not in before


def _release_sigterm(held: bool) -> None:
    """Undo _hold_sigterm(); a SIGTERM that arrived meanwhile is delivered now."""
    if held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


# ---------------------------------------------------------------- entry
def _timeout(args: list[str], agent: str) -> float:
    timeout = DEFAULT_TIMEOUT[agent]
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--timeout="):
            value = arg.split("=", 1)[1]
        elif arg == "--timeout" and rest:
            value = rest.pop(0)
        else:
            raise Refused(f"unknown option {arg[:40]!r} for approvalctl hook {agent}")
        from .durations import parse_duration

        try:
            timeout = parse_duration(value, what="--timeout")
        except Exception as exc:  # noqa: BLE001 - InvalidInput's one line
            raise Refused(str(getattr(exc, "detail", exc))) from None
    return timeout


def _drain(stream: Any, limit: int = 256 * MAX_EVENT_BYTES) -> None:
    """Read the rest of an oversized event and drop it, so the agent's write of it ends
    normally instead of in a broken pipe (which it might count as a hook failure)."""
    seen = 0
    while seen < limit:
        chunk = stream.read(64 * 1024)
        if not chunk:
            return
        seen += len(chunk)


def run(agent: str, args: list[str], stdin: Any = None) -> int:
    """Gate one tool call for `agent`; writes the answer and returns the exit status."""
    start = time.monotonic()
    event: str | None = None

    def finish(allow: bool, reason: str) -> int:
        out, status = answer(agent, _deny_event(agent, event), allow, reason)
        if out:
            sys.stdout.write(out + "\n")
        sys.stdout.flush()
        if not allow:
            sys.stderr.write(f"approvalctl: denied: {' '.join(reason.split())[:1000]}\n")
            sys.stderr.flush()
        return status

    def on_term(signum: int, frame: Any) -> None:
        raise Refused("the hook was stopped before a decision")

    if agent not in AGENTS:
        sys.stderr.write(f"approvalctl: denied: unknown agent {agent[:40]!r} (expected one "
                         f"of {', '.join(AGENTS)})\n")
        return DENIED
    gate = None
    try:
        signal.signal(signal.SIGTERM, on_term)
        deadline = start + _timeout(args, agent)
        stream = stdin if stdin is not None else sys.stdin.buffer
        raw = stream.read(MAX_EVENT_BYTES + 1)
        if len(raw) > MAX_EVENT_BYTES:
            _drain(stream)
        call = parse_event(agent, raw)
        event = call.event
        gate = Gate(agent, deadline)
        allow, reason = gate.decide(call)
        return finish(allow, reason)
    except Refused as exc:
        return finish(False, str(exc))
    except BaseException as exc:  # noqa: BLE001 - fail closed on anything at all
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        return finish(False, f"approvalctl could not get a decision: {detail}")
    finally:
        if gate is not None:
            with suppress(BaseException):  # the answer is already out
                gate.close()


def main(argv: list[str] | None = None) -> int:
    """`approvalctl hook AGENT [--timeout D]` without the Typer app."""
    argv = sys.argv[1:] if argv is None else argv
    return run(argv[1] if len(argv) > 1 else "", argv[2:])


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())

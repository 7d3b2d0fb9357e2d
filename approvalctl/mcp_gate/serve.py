"""`approvalctl mcp serve`: an MCP server (stdio) through which a model asks for approvals.

Tools (and no tool that decides — only an operator does, elsewhere):

- `request_approval(tool_name, arguments, reason, risk, ttl)` files a request (the policy
  may decide it at once) and returns it: `id`, `status`, `digest`, … (the JSON fields of
  DESIGN.md §3);
- `check_approval(id, wait_seconds)` returns the request, after waiting up to
  `wait_seconds` (at most MAX_WAIT) for it to leave `pending`, sending
  `notifications/progress` every PROGRESS_EVERY seconds meanwhile when the client's call
  carried a progress token;
- `withdraw_approval(id)` cancels a pending request.

Errors (bad input, unknown id, approvalctl unreachable) are tool results with
`isError: true` and a one-line reason. Requires the optional extra `approvalctl[mcp]`.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The SDK resolves tool signatures from this module's globals: import Context here.
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

MAX_WAIT = 600.0  # seconds one check_approval may wait
PROGRESS_EVERY = 5.0  # seconds between progress notifications while waiting


def build(state: dict[str, Any], backend_factory: Any = None) -> Any:
    """The MCPServer with the three tools; `backend_factory()` gives the Backend, made on
    first use and kept in `state["backend"]` (the caller closes it)."""
    from .. import errors
    from ..durations import parse_duration
    from ..render import plain
    from .backend import Backend

    factory = backend_factory or (lambda: Backend("mcp"))

    async def backend() -> Any:
        if "backend" not in state:
            try:
                state["backend"] = await asyncio.to_thread(factory)
            except (errors.ApprovalctlError, OSError) as exc:
                raise ToolError(f"approvalctl is not available: {plain(exc, 500)}") from None
        return state["backend"]

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except errors.ApprovalctlError as exc:
            raise ToolError(plain(str(exc).replace("\n", " "), 500)) from None

    server = MCPServer("approvalctl", instructions=(
        "Ask a human operator before risky actions: request_approval with the exact tool "
        "and arguments, then check_approval until it is approved, rejected or expired. "
        "Act only on 'approved', and only with exactly the arguments you asked for."))

    @server.tool()
    async def request_approval(tool_name: str, arguments: dict[str, Any] | None = None,
                               reason: str | None = None, risk: str | None = None,
                               ttl: str | None = None) -> dict[str, Any]:
        """Ask an operator to approve one tool call with exactly these arguments.

        risk: low, medium or high. ttl: how long the operator has, e.g. "10m".
        Returns the request (id, status, digest, ...); status may already be approved or
        rejected by a policy rule.
        """
        try:
            ttl_seconds = parse_duration(ttl, what="ttl") if ttl is not None else None
        except (errors.ApprovalctlError, ValueError) as exc:
            raise ToolError(plain(str(exc), 500)) from None
        b = await backend()
        req = await call(b.create, tool_name, arguments or {}, reason=reason, risk=risk,
                         ttl_seconds=ttl_seconds)
        return req.to_dict()

    @server.tool()
    async def check_approval(id: str, wait_seconds: float = 0,  # noqa: A002 - the field
                             ctx: Context = None) -> dict[str, Any]:  # type: ignore[assignment]
        """The request's current state; waits up to wait_seconds (at most 600) while it is
        pending. Act only when status is 'approved'."""
        if not isinstance(wait_seconds, (int, float)) or wait_seconds != wait_seconds \
                or wait_seconds < 0:
            raise ToolError("wait_seconds must be a number >= 0")
        wait = min(float(wait_seconds), MAX_WAIT)
        b = await backend()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        req = await call(b.get, id)
        while req.status == "pending" and loop.time() < deadline:
            slice_ = min(PROGRESS_EVERY, deadline - loop.time())
            req = await call(b.wait, req.id, slice_)
            if req.status == "pending" and ctx is not None and loop.time() < deadline:
                await ctx.report_progress(min(wait, wait - (deadline - loop.time())), wait,
                                          f"waiting for an operator to decide {req.id}")
        return req.to_dict()

    @server.tool()
    async def withdraw_approval(id: str) -> dict[str, Any]:  # noqa: A002 - the field
        """Withdraw (cancel) a pending request you no longer need."""
        b = await backend()
        return (await call(b.cancel, id)).to_dict()

    return server


def run(settings: Any = None) -> int:
    """Serve on stdin/stdout until the client closes them; the exit status."""
    from .backend import Backend

    state: dict[str, Any] = {}
    server = build(state, lambda: Backend("mcp", settings))
    try:
        server.run("stdio")
    finally:
        backend = state.get("backend")
        if backend is not None:
            backend.close()
    return 0

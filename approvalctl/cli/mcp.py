"""`approvalctl mcp serve` and `approvalctl mcp proxy`: approvalctl for MCP clients.

The work is in approvalctl/mcp_gate/; the SDK (`approvalctl[mcp]`) is imported only by
`mcp serve`, so it costs the other commands nothing.
"""

from __future__ import annotations

import typer

from ..durations import parse_duration
from .app import app, command, state_of

mcp_app = typer.Typer(help="MCP: an approval server for models, and a gate in front of any "
                           "stdio MCP server.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


@command(mcp_app, "serve")
def serve_cmd(ctx: typer.Context) -> None:
    """MCP server on stdio with request_approval, check_approval and withdraw_approval
    (no tool decides). Put `approvalctl mcp serve` in the client's MCP config."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        from ..errors import InvalidInput

        raise InvalidInput("`approvalctl mcp serve` needs the MCP SDK: "
                           "pip install 'approvalctl[mcp]'") from None
    from ..mcp_gate import serve

    raise typer.Exit(serve.run(state_of(ctx).settings))


@command(mcp_app, "proxy", context_settings={"allow_interspersed_args": False})
def proxy_cmd(
    ctx: typer.Context,
    server_command: list[str] = typer.Argument(..., metavar="-- CMD [ARG...]",
                                               help="The stdio MCP server to wrap."),
    name: str | None = typer.Option(None, "--name", metavar="N",
                                    help="Server name in the gated tool name mcp__N__TOOL "
                                         "(default: the command's basename)."),
    wait: str = typer.Option("1h", "--wait", metavar="DURATION",
                             help="How long a call may wait for the operator."),
    server_timeout: str = typer.Option("10m", "--server-timeout", metavar="DURATION",
                                       help="How long the wrapped server has to answer a "
                                            "request."),
    progress_every: str = typer.Option("10s", "--progress-every", metavar="DURATION",
                                       help="Interval of progress notifications while a "
                                            "call waits for the operator."),
) -> None:
    """Gate a stdio MCP server: relay everything, send each tools/call through the policy
    and the operator; refused calls become isError tool results."""
    from ..mcp_gate import proxy

    raise typer.Exit(proxy.run(name, list(server_command),
                               wait=parse_duration(wait, what="--wait"),
                               server_timeout=parse_duration(server_timeout,
                                                             what="--server-timeout"),
                               progress_every=parse_duration(progress_every,
                                                             what="--progress-every"),
                               settings=state_of(ctx).settings))

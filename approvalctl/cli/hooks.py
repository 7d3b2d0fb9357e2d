"""`approvalctl hook AGENT` and `approvalctl hook install AGENT`.

The console script runs `hook AGENT` without loading this app at all (approvalctl/entry.py):
these commands exist so `--help` and docs/cli.md describe them, and for `python -m`-less
callers that reach the Typer app anyway; both paths run `approvalctl.hook.run`.
"""

from __future__ import annotations

import sys

import typer

from .app import app, command, message

hook_app = typer.Typer(help="Gate a coding agent's tool calls: the hook it runs, and its "
                            "installer.", no_args_is_help=True)
app.add_typer(hook_app, name="hook")

TIMEOUT_OPT = typer.Option(None, "--timeout", metavar="DURATION",
                           help="Time budget for the operator's decision (default: just "
                                "under the agent's own hook timeout).")


def _agent_command(agent: str, events: str) -> None:
    def run(timeout: str | None = TIMEOUT_OPT) -> None:
        from .. import hook

        raise typer.Exit(hook.run(agent, ["--timeout", timeout] if timeout else []))

    run.__doc__ = (f"Hook for {agent} ({events}): reads the event on stdin, prints the "
                   "decision in the agent's format; every failure is a deny (exit 2).")
    hook_app.command(agent)(run)


for _agent, _events in (("claude-code", "PreToolUse, PermissionRequest"),
                        ("codex", "PreToolUse"), ("gemini", "BeforeTool"),
                        ("cursor", "beforeShellExecution, beforeMCPExecution, preToolUse")):
    _agent_command(_agent, _events)


@command(hook_app, "install")
def install_cmd(
    agent: str = typer.Argument(..., metavar="AGENT", help="claude-code, codex, gemini or "
                                                           "cursor."),
    scope: str = typer.Option("user", "--scope", help="user (your home) or project (the "
                                                      "current directory)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the change as a diff; write "
                                                          "nothing."),
) -> None:
    """Merge the hook into the agent's settings file, keeping everything else.

    Idempotent; the old file is backed up next to it.
    """
    from .. import hook_install

    plan = hook_install.plan(agent, scope)
    if dry_run:
        sys.stdout.write(plan.diff())
        message(f"{plan.path}: " + ("would change (dry run, nothing written)" if plan.changed
                                    else "already installed, nothing to do"))
        return
    if not plan.changed:
        message(f"{plan.path}: the approvalctl hook is already installed; nothing changed")
        return
    backup = hook_install.apply(plan)
    message(f"installed the approvalctl hook for {agent} in {plan.path}" +
            (f" (backup: {backup})" if backup else ""))

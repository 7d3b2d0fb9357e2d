"""The approvalctl command line: one module per command family, all on one Typer app.

Modules register their commands on import; the order here is the order of `--help`.
"""

from __future__ import annotations

import sys

from . import requests  # noqa: F401  (the core verbs first)

# isort: split
from . import hooks, keys, mcp, migrate, monitoring, notify, rules, server  # noqa: F401

# isort: split
from . import completion  # noqa: F401  (reads the commands above; last in --help)
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    """The console script: the Typer app, with its usage errors (a missing argument, a value
    of the wrong type, an unknown option) as one stderr line and their exit status (2), like
    every other refused input — not a multi-line usage block. `typer.TyperException` is the
    public base of the errors Typer's parser raises."""
    import typer

    from .app import message, utf8_argv

    try:
        code = app(args=utf8_argv(sys.argv[1:]), prog_name="approvalctl",
                   standalone_mode=False)
    except typer.Abort:
        message("aborted")
        sys.exit(1)
    except typer.TyperException as exc:
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        status = getattr(exc, "exit_code", 2)
        if "\n" in text.strip() and hasattr(exc, "show"):  # help text (no arguments given)
            exc.show()
            sys.exit(status)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "approvalctl"
        message(f"error: {text} (see {where} --help)")
        sys.exit(status)
    sys.exit(code if isinstance(code, int) else 0)

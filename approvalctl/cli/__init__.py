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
    from .app import utf8_argv

    app(args=utf8_argv(sys.argv[1:]), prog_name="approvalctl")

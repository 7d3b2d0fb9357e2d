"""The approvalctl command line: one module per command family, all on one Typer app.

Modules register their commands on import; the order here is the order of `--help`.
"""

from __future__ import annotations

from . import requests  # noqa: F401  (the core verbs first)

# isort: split
from . import fastparams, hooks, keys, migrate, monitoring, notify, rules, server  # noqa: F401
from .app import app

__all__ = ["app", "main"]

# Values are coerced when a command runs, so installing after the imports is in time; it
# keeps pydantic (~90 ms) off every plain invocation.
fastparams.install()


def main() -> None:
    app(prog_name="approvalctl")

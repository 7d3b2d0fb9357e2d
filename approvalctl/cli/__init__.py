"""The approvalctl command line: one module per command family, all on one Typer app."""

from __future__ import annotations

from . import fastparams, migrate, requests  # noqa: F401  (each module registers its commands)
from .app import app

__all__ = ["app", "main"]

# Values are coerced when a command runs, so installing after the imports is in time; it
# keeps pydantic (~90 ms) off every plain invocation.
fastparams.install()


def main() -> None:
    app(prog_name="approvalctl")

"""The approvalctl command line: one module per command family, all on one Typer app."""

from __future__ import annotations

from . import keys, migrate, requests, server  # noqa: F401  (each module registers its commands)
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="approvalctl")

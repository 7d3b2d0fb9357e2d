"""The approvalctl command line: one module per command family, all on one Typer app."""

from __future__ import annotations

from . import requests  # noqa: F401  (registers the core verbs)
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="approvalctl")

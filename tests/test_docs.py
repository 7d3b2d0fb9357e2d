"""Docs that cannot go stale: the CLI reference and the README's contracts."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from approvalctl.cli import app
from approvalctl.cli.reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == render(), "regenerate: python -m approvalctl.cli.reference > docs/cli.md"


def _commands(cmd, path=()):
    if hasattr(cmd, "list_commands"):
        ctx = cmd.context_class(cmd)
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_command_has_help_and_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for name, cmd in _commands(typer.main.get_command(app)):
        assert (cmd.help or "").strip(), f"{name} has no help text"
        assert f"`{name}`" in doc


def test_readme_opens_with_the_two_setup_commands_and_lists_exit_codes() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert "pip install -e '.[dev]'" in blocks[0]
    assert "python -m pytest" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    line = [ln for ln in blocks[1].splitlines() if "pytest" in ln][0]
    test_command = line.split("&&")[-1].strip()
    assert test_command in ci, ".ci/run must run exactly the README's test command"
    for code in ("0", "1", "2", "3", "4", "5", "6", "10", "11", "12", "124"):
        assert re.search(rf"\|\s*`?{code}`?\s*\|", readme), f"exit code {code} undocumented"

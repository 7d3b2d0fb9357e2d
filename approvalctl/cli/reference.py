"""Generate docs/cli.md from the commands themselves, so the reference cannot go stale.

    python -m approvalctl.cli.reference > docs/cli.md

tests/test_docs.py fails when docs/cli.md differs from what this prints.
"""

from __future__ import annotations

from typing import Any

import typer.main

from . import app

HEADER = """# approvalctl command reference

Generated from the commands' own help by `python -m approvalctl.cli.reference > docs/cli.md`;
a test fails when this file and the commands disagree. See README.md for a walk-through and
the exit-code table.
"""


def _params(cmd: Any) -> list[str]:
    rows = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            name = f"`{p.metavar or p.name.upper()}`"
            help_text = getattr(p, "help", None) or ""
        else:
            if p.hidden:
                continue
            name = ", ".join(f"`{o}`" for o in p.opts)
            help_text = p.help or ""
            if p.default not in (None, False, ()) and not p.is_flag:
                help_text += f" (default: `{p.default}`)"
        help_text = help_text.replace("\\[", "[").replace("|", "\\|")
        rows.append(f"| {name} | {help_text} |")
    return rows


def _ctx(cmd: Any, name: str) -> Any:
    # Typer vendors its own click: take the Context class from the command itself.
    return cmd.context_class(cmd, info_name=name)


def _walk(cmd: Any, path: list[str]) -> list[str]:
    out: list[str] = []
    if hasattr(cmd, "list_commands"):
        if path:
            out += [f"## `{' '.join(path)}`", "", (cmd.help or "").strip(), ""]
        group_ctx = _ctx(cmd, "approvalctl")
        for name in cmd.list_commands(group_ctx):
            out += _walk(cmd.get_command(group_ctx, name), [*path, name])
        return out
    ctx = _ctx(cmd, " ".join(["approvalctl", *path]))
    out += [f"{'###' if len(path) > 1 else '##'} `{' '.join(path)}`", "",
            f"```\n{cmd.get_usage(ctx)}\n```", "", (cmd.help or "").strip(), ""]
    params = _params(cmd)
    if params:
        out += ["| argument / option | meaning |", "| --- | --- |", *params, ""]
    return out


def render() -> str:
    root = typer.main.get_command(app)
    ctx = _ctx(root, "approvalctl")
    lines = [HEADER, "## Global options", "", f"```\n{root.get_usage(ctx)}\n```", "",
             (root.help or "").strip(), "", "| option | meaning |", "| --- | --- |",
             *_params(root), ""]
    lines += _walk(root, [])
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")

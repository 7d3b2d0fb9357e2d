"""`approvalctl hook install AGENT`: put the hook into the agent's own settings file.

Each agent keeps hooks in a JSON file (Claude Code and Gemini CLI in settings.json, Codex
and Cursor in hooks.json). The entry is merged in: every other setting and every other hook
stays as it was, a second install changes nothing, and the file that changes is backed up
first. The installed command is `APPROVALCTL hook AGENT || exit 2`, so that even a missing
or broken approvalctl blocks the call (exit 2) instead of letting it through; Cursor, which
has its own switch for that, gets `failClosed: true`.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InvalidInput

#: (user file under $HOME, project file under the current directory)
FILES = {
    "claude-code": (".claude/settings.json", ".claude/settings.json"),
    "codex": (".codex/hooks.json", ".codex/hooks.json"),
    "gemini": (".gemini/settings.json", ".gemini/settings.json"),
    "cursor": (".cursor/hooks.json", ".cursor/hooks.json"),
}
#: The agents' hook timeouts, in their own units (Claude Code and Codex seconds, Gemini CLI
#: milliseconds): the agent's default, so the hook's own budget (just under it) runs out
#: first and answers deny.
EVENTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "claude-code": [("PreToolUse", {"timeout": 600})],
    "codex": [("PreToolUse", {"timeout": 600})],
    "gemini": [("BeforeTool", {"timeout": 60000})],
    "cursor": [("beforeShellExecution", {}), ("beforeMCPExecution", {})],
}


@dataclass
class Plan:
    """What an install would do: the file, its text before (None: absent) and after."""

    path: Path
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(difflib.unified_diff(
            (self.before or "").splitlines(keepends=True), self.after.splitlines(keepends=True),
            fromfile=f"{self.path} (before)" if self.before is not None else "/dev/null",
            tofile=str(self.path)))


def command_for(agent: str, executable: str | None = None) -> str:
    exe = executable or shutil.which("approvalctl") or "approvalctl"
    cmd = f"{shlex.quote(exe)} hook {agent}"
    return cmd if agent == "cursor" else f"{cmd} || exit 2"


def _is_ours(entry: Any, agent: str) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("command"), str) and \
        f"hook {agent}" in entry["command"] and "approvalctl" in entry["command"]


def merge(agent: str, settings: dict[str, Any], command: str) -> dict[str, Any]:
    """`settings` with the hook entry for `agent` added or brought up to date."""
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise InvalidInput("the settings file's 'hooks' is not an object; fix it by hand first")
    if agent == "cursor":
        settings.setdefault("version", 1)
    for event, extra in EVENTS[agent]:
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise InvalidInput(f"the settings file's hooks.{event} is not a list; fix it by "
                               "hand first")
        if agent == "cursor":  # a flat list of {command, ...}
            entry = {"command": command, "failClosed": True, **extra}
            found = [g for g in groups if _is_ours(g, agent)]
            if found:
                found[0].update(entry)
            else:
                groups.append(entry)
            continue
        entry = {"type": "command", "command": command, **extra}
        found = [h for g in groups if isinstance(g, dict)
                 for h in (g.get("hooks") or []) if _is_ours(h, agent)]
        if found:
            found[0].update(entry)
        else:
            groups.append({"matcher": "*" if agent != "gemini" else ".*", "hooks": [entry]})
    return settings


def plan(agent: str, scope: str = "user", *, home: Path | None = None,
         cwd: Path | None = None, executable: str | None = None) -> Plan:
    """Work out the install without writing anything. InvalidInput for an unknown agent or
    scope, or a settings file that is not a JSON object."""
    if agent not in FILES:
        raise InvalidInput(f"unknown agent {agent!r}: expected one of {', '.join(FILES)}")
    if scope not in ("user", "project"):
        raise InvalidInput(f"unknown scope {scope!r}: expected user or project")
    base = (home or Path.home()) if scope == "user" else (cwd or Path.cwd())
    path = base / FILES[agent][0 if scope == "user" else 1]
    before = None
    settings: Any = {}
    if path.exists():
        try:
            before = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {path}: {exc}") from None
        if before.strip():
            try:
                settings = json.loads(before)
            except ValueError as exc:
                raise InvalidInput(f"{path} is not valid JSON ({exc}); fix it first, nothing "
                                   "was changed") from None
        if not isinstance(settings, dict):
            raise InvalidInput(f"{path} does not hold a JSON object; nothing was changed")
    if agent == "cursor" and not settings:
        settings = {"version": 1}
    merged = merge(agent, settings, command_for(agent, executable))
    after = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    if before is not None and json.loads(before or "{}") == merged:
        after = before  # already installed: leave the file byte for byte as it is
    return Plan(path, before, after)


def apply(p: Plan) -> Path | None:
    """Write the plan: back the old file up, then replace it atomically. Returns the
    backup's path (None when nothing changed or there was no file)."""
    if not p.changed:
        return None
    p.path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if p.before is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = p.path.with_name(f"{p.path.name}.approvalctl-{stamp}.bak")
        shutil.copy2(p.path, backup)
    tmp = p.path.with_name(f".{p.path.name}.approvalctl-tmp")
    tmp.write_text(p.after, encoding="utf-8")
    if p.before is not None:
        shutil.copymode(p.path, tmp)
    os.replace(tmp, p.path)
    return backup

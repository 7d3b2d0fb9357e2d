"""`approvalctl hook install AGENT`: merged in, everything else kept, idempotent, backed up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AGENT_FILES = {"claude-code": ".claude/settings.json", "codex": ".codex/hooks.json",
               "gemini": ".gemini/settings.json", "cursor": ".cursor/hooks.json"}


def install(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    return subprocess.run([sys.executable, "-m", "approvalctl", "hook", "install", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def our_commands(agent: str, settings: dict) -> list[str]:
    out = []
    for groups in settings["hooks"].values():
        for group in groups:
            for h in (group.get("hooks") or [group]):
                if "approvalctl" in h.get("command", ""):
                    out.append(h["command"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(AGENT_FILES))
def test_install_keeps_everything_else_is_idempotent_and_backs_up(agent, tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    path = home / AGENT_FILES[agent]
    path.parent.mkdir(parents=True)
    other = {"command": "audit-log", "type": "command"}
    before = {"theme": "dark", "env": {"A": "1"},
              "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [other]}]}}
    if agent == "cursor":
        before = {"version": 1, "hooks": {"afterFileEdit": [{"command": "fmt"}]}}
    path.write_text(json.dumps(before))
    project.mkdir()
    dry = install(home, project, agent, "--dry-run")
    assert dry.returncode == 0 and f"hook {agent}" in dry.stdout and dry.stdout.startswith("---")
    assert json.loads(path.read_text()) == before  # the dry run wrote nothing
    first = install(home, project, agent)
    assert first.returncode == 0, first.stderr
    after = json.loads(path.read_text())
    for key, value in before.items():
        if key != "hooks":
            assert after[key] == value
    for event, groups in before["hooks"].items():
        assert after["hooks"][event] == groups
    commands = our_commands(agent, after)
    assert len(commands) == len([e for e in after["hooks"] if e not in before["hooks"]])
    backups = list(path.parent.glob(path.name + ".approvalctl-*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before
    text = path.read_text()
    second = install(home, project, agent)
    assert second.returncode == 0 and "nothing changed" in second.stderr
    assert path.read_text() == text
    assert len(list(path.parent.glob(path.name + ".approvalctl-*.bak"))) == 1


def test_project_scope_creates_the_file_and_fails_closed(tmp_path):
    from approvalctl import hook_install

    plan = hook_install.plan("claude-code", "project", cwd=tmp_path, executable="/x/actl")
    assert plan.before is None and plan.path == tmp_path / ".claude/settings.json"
    assert hook_install.apply(plan) is None  # no old file, no backup
    entry = json.loads(plan.path.read_text())["hooks"]["PreToolUse"][0]["hooks"][0]
    assert entry == {"type": "command", "command": "/x/actl hook claude-code || exit 2",
                     "timeout": 600}
    cursor = hook_install.plan("cursor", "project", cwd=tmp_path, executable="/x/actl")
    data = json.loads(cursor.after)
    assert data["version"] == 1
    assert data["hooks"]["beforeShellExecution"] == [{"command": "/x/actl hook cursor",
                                                      "failClosed": True}]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hooks": []}'])
def test_a_settings_file_it_cannot_read_is_left_alone(tmp_path, content):
    from approvalctl import hook_install
    from approvalctl.errors import InvalidInput

    path = tmp_path / ".gemini/settings.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(InvalidInput):
        hook_install.plan("gemini", "project", cwd=tmp_path)
    assert path.read_text() == content

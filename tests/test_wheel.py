"""The package as a user installs it (issue #12.1): build the wheel, install it (not
editable) into a fresh virtualenv, and from a folder outside the source tree start the server
and take one request from creation to approval.

Every file the package reads at run time (the OpenAPI document, the message templates) must
therefore be inside the wheel; the source tree is nowhere on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                            cwd=cwd, timeout=300)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel installed; dependencies come from the interpreter's own
    site-packages (--system-site-packages), approvalctl only from the wheel."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    # Only what the build reads, links kept as links: a clean checkout, no stray build/.
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("approvalctl", "specs"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", base / "dist", src)
    wheel = next((base / "dist").glob("approvalctl-*.whl"))
    venv = base / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv",
        "--system-site-packages", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
        "--disable-pip-version-check", wheel)
    return venv


def test_the_wheel_carries_the_spec_and_templates(installed: Path, tmp_path: Path):
    probe = ("import approvalctl, json; from approvalctl.server.spec import spec_path, "
             "load_spec; from approvalctl.notify.messages import load_template; "
             "print(json.dumps([approvalctl.__file__, str(spec_path()), "
             "load_spec()['openapi'], load_template('email.txt')[:0]]))")
    out = run(installed / "bin" / "python", "-c", probe, cwd=tmp_path).stdout
    package, spec, version, _ = json.loads(out)
    site = str(installed.resolve())
    assert package.startswith(site) and spec.startswith(site), (package, spec)
    assert not Path(spec).is_symlink()
    assert version.startswith("3.0")
    # The linter's catalogue of exported metrics comes from the installed package too.
    lint = run(installed / "bin" / "approvalctl", "lint-dashboards", ROOT / "dashboards",
               ROOT / "alerts", "--no-promtool", cwd=tmp_path)
    assert "0 errors" in lint.stderr


def test_serve_create_approve_from_the_installed_wheel(installed: Path, tmp_path: Path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPROVALCTL_")}
    env.update(APPROVALCTL_DB=str(work / "approvals.db"), XDG_CONFIG_HOME=str(work / "cfg"),
               XDG_DATA_HOME=str(work / "data"), PYTHONPATH="")
    exe = installed / "bin" / "approvalctl"

    def key(name: str, role: str) -> str:
        out = run(exe, "keys", "create", "--name", name, "--role", role, "--json",
                  env=env, cwd=work).stdout
        return json.loads(out)["key"]

    agent, operator = key("agent-bot", "user"), key("olivia", "operator")
    port = free_port()
    server = subprocess.Popen([str(exe), "serve", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, server.stderr.read()  # type: ignore[union-attr]
                try:
                    health = http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            assert health.status_code == 200, health.text
            assert http.get("/openapi.json").json()["openapi"].startswith("3.0")
            r = http.post("/api/v1/approvals", json={"tool_name": "git_push"},
                          headers={"X-API-Key": agent})
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            approved = run(exe, "--server", url, "approve", rid, "--json",
                           env={**env, "APPROVALCTL_API_KEY": operator}, cwd=work)
            assert '"approved"' in approved.stdout
            r = http.get(f"/api/v1/approvals/{rid}", headers={"X-API-Key": agent})
            assert r.json()["status"] == "approved"
            assert r.json()["decided_by"] == "olivia"
    finally:
        stop_process(server)

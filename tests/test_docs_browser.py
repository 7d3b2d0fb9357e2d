"""/docs in a real browser (issue 14): headless Chromium renders Swagger UI from the assets
shipped in the package, lists the operations, and offers the API-key input."""

from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/setup installs the "
                                             "Debian package `chromium`)")
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_swagger_ui_renders_the_operations_offline(live, tmp_path) -> None:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=15000", "--dump-dom", f"{live.url}/docs"],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert "swagger-ui" in dom, proc.stderr[-2000:]
    # operations drawn from /openapi.json (their ids shown), and the Authorize button of the
    # spec's security schemes, which takes the API key for "try it out"
    for operation_id in ("listApprovals", "createApproval", "approvalStats"):
        assert operation_id in dom, operation_id
    assert "authorize" in dom.lower()


def test_the_spec_names_exactly_the_assets_served() -> None:
    from approvalctl.server.docs import ASSETS
    from approvalctl.server.spec import load_spec

    spec = load_spec()
    [param] = spec["paths"]["/docs/assets/{name}"]["get"]["parameters"]
    assert set(param["schema"]["enum"]) == set(ASSETS)

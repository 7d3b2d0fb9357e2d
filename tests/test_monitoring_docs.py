"""The monitoring docs agree with the code: metric reference, runbook, example configs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from approvalctl import metrics

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def alert_names() -> list[str]:
    doc = yaml.safe_load((REPO / "alerts" / "approval_alerts.yml").read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_metric_reference_is_the_registry() -> None:
    text = (DOCS / "monitoring.md").read_text()
    block = text.split("<!-- metrics:start -->\n")[1].split("<!-- metrics:end -->")[0]
    assert block == metrics.reference_markdown(), (
        "docs/monitoring.md is stale; replace the table with:\n" + metrics.reference_markdown())


def test_runbook_has_exactly_one_section_per_alert() -> None:
    sections = re.findall(r"^## (\w+)$", (DOCS / "runbook.md").read_text(), re.M)
    assert sections == alert_names()


def test_every_alert_is_in_the_monitoring_guide() -> None:
    text = (DOCS / "monitoring.md").read_text()
    listed = re.findall(r"^\| `(\w+)` \| .* \| (?:warning|critical|info) \|$", text, re.M)
    assert listed == alert_names()


@pytest.mark.skipif(not shutil.which("amtool"), reason="needs amtool (prometheus-alertmanager)")
def test_alertmanager_example_passes_amtool() -> None:
    res = subprocess.run(["amtool", "check-config", str(DOCS / "alertmanager.example.yml")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool")
def test_prometheus_example_passes_promtool() -> None:
    res = subprocess.run(["promtool", "check", "config",
                          str(DOCS / "prometheus.example.yml")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_file_mounts_files_that_exist() -> None:
    compose = yaml.safe_load((DOCS / "monitoring-compose.yml").read_text())
    mounted = []
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                mounted.append(source)
                if not source.endswith("secrets"):  # the user creates docs/secrets/
                    assert (DOCS / source).exists(), source
            else:  # a named volume: declared at the top level
                assert source in (compose.get("volumes") or {}), source
    assert "../alerts/approval_alerts.yml" in mounted
    assert "../dashboards" in mounted
    exporter = compose["services"]["approvalctl-exporter"]
    assert exporter["command"][0] == "serve-metrics"
    assert compose["services"]["approvalctl-api"]["command"][0] == "serve"


def test_every_prometheus_target_is_a_service_the_compose_file_starts() -> None:
    compose = yaml.safe_load((DOCS / "monitoring-compose.yml").read_text())
    services = compose["services"]
    prom = yaml.safe_load((DOCS / "prometheus.example.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"]
                for sc in am.get("static_configs", []) for t in sc["targets"]]
    assert "approvalctl-exporter:9108" in targets and "approvalctl-api:8020" in targets
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, f"{target}: no service {host} in the compose file"
        command = services[host].get("command") or []
        # a service whose command names its port must listen on the scraped one
        if "--port" in command:
            assert command[command.index("--port") + 1] == port, target
        images = [s.get("image") for s in services.values() if "build" in s]
        assert "build" in services[host] or services[host].get("image", "").startswith(
            ("prom/", "grafana/")) or services[host].get("image") in images, target
    # the rule files Prometheus loads are mounted where the config says
    mounts = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    for pattern in prom["rule_files"]:
        assert any(Path(m).match(pattern) for m in mounts), pattern


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((REPO / "dashboards" / "provisioning" / "dashboards.yml"
                               ).read_text())["providers"][0]
    compose = yaml.safe_load((DOCS / "monitoring-compose.yml").read_text())
    grafana_mounts = {v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert provider["options"]["path"] in grafana_mounts


def test_every_lint_rule_is_documented() -> None:
    rules: set[str] = set()
    for path in (REPO / "approvalctl" / "lint").glob("*.py"):
        rules |= set(re.findall(r'"([a-z]+(?:-[a-z]+)*)",\s*(?:ERROR|WARNING)\b',
                                path.read_text()))
    assert len(rules) >= 25  # the pattern still finds the rules
    doc = (DOCS / "monitoring.md").read_text()
    table = doc.split("## `approvalctl lint-dashboards`")[1]
    assert sorted(r for r in rules if f"`{r}`" not in table) == []

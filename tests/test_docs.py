"""The README's contract tables and the compose file agree with the code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devices.contract import METRICS
from ingest.schemas import REASON_DESCRIPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_metric_is_documented_with_its_unit_and_range() -> None:
    for kind, metrics in METRICS.items():
        for metric in metrics:
            kind_of = "integer" if metric.integer else "number"
            row = f"| {kind.value} | `{metric.name}` | {metric.unit or '-'} | {kind_of} |"
            assert f"{row} {metric.range_text()} |" in README, metric.name


def test_every_rejection_reason_is_documented() -> None:
    for reason, meaning in REASON_DESCRIPTIONS.items():
        assert f"| `{reason.value}` | {meaning} |" in README, reason


def test_compose_services_have_health_checks_and_wait_for_healthy_dependencies() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"timescaledb", "mosquitto", "ingest", "api", "simulator"} <= services.keys()
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    for name in ("timescaledb", "mosquitto", "ingest", "api"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, (name, dependency)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr

"""The image holds every package the project installs and every module compose runs: setuptools
skips a listed package that is not in the build context without a word."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def copied_folders() -> set[str]:
    """Top-level folders the Dockerfile copies from the build context into /app."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"^COPY (\w+) \1/?$", dockerfile, re.MULTILINE))


def test_every_package_pyproject_installs_is_copied_into_the_image() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.removesuffix("*") for pattern in patterns}
    assert packages - copied_folders() == set()


def test_every_module_compose_runs_is_in_the_image() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    modules = {
        command[command.index("-m") + 1].split(".")[0]
        for service in services.values()
        if isinstance(command := service.get("command"), list) and "-m" in command
    }
    assert "rollups" in modules
    assert modules - copied_folders() == set()

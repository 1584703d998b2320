"""Builds the broker plugin that reports ACL refusals (stack/mosquitto_refusals.c) for the
private Mosquitto: one C file, compiled with the machine's C compiler (scripts/provision.sh
installs it) into the broker's data folder, again only when the source changed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Final

SOURCE: Final = Path(__file__).with_name("mosquitto_refusals.c")


class PluginBuildError(RuntimeError):
    pass


def build(target_dir: Path) -> Path:
    """The compiled plugin in ``target_dir``, built if missing or older than its source."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target = target_dir / f"mosquitto_refusals-{digest}.so"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PluginBuildError("no C compiler to build the broker's refusals plugin")
    target_dir.mkdir(parents=True, exist_ok=True)
    for old in target_dir.glob("mosquitto_refusals-*.so"):
        old.unlink()
    result = subprocess.run(
        [compiler, "-O2", "-fPIC", "-shared", "-o", str(target), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PluginBuildError(f"building {SOURCE.name} failed: {result.stderr.strip()}")
    return target

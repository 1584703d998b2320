"""The clock-ahead suite's shim (``make test-clock-ahead``): under libfaketime a timed wait in
Python lasts its timeout, and the wall clock is still the moved one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import real_clock_environment

SOURCE = Path(__file__).with_name("faketime_clockwait.c")
# A timed wait and a sleep, each 0.2 s, then the wall clock's distance from the real one.
PROBE = (
    "import threading, time\n"
    "began = time.monotonic()\n"
    "threading.Event().wait(0.2)\n"
    "time.sleep(0.2)\n"
    "print(time.monotonic() - began, time.time())\n"
)

needs_faketime = pytest.mark.skipif(
    shutil.which("faketime") is None or shutil.which("cc") is None,
    reason="faketime and a C compiler come with scripts/provision.sh",
)


@needs_faketime
def test_timed_waits_last_their_timeout_with_the_clock_a_month_ahead(tmp_path: Path) -> None:
    shim = tmp_path / "libfaketime_clockwait.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", shim, SOURCE, "-ldl"], check=True)
    environment = real_clock_environment(os.environ) | {"LD_PRELOAD": str(shim)}
    # The suite itself may run with its clock moved: the real clock, from outside libfaketime.
    real = subprocess.run(["date", "+%s"], env=environment, capture_output=True, check=True)
    # Without the shim the Event's wait lasts until something else wakes it: never, here.
    done = subprocess.run(
        ["faketime", "-f", "+30d", sys.executable, "-c", PROBE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    elapsed_s, wall = (float(field) for field in done.stdout.split())
    assert 0.4 <= elapsed_s < 30
    assert wall - float(real.stdout) == pytest.approx(30 * 86400, abs=3600)

"""The supervisor of ``make run`` with real child processes: restarts, growing delays with a
stepped clock, and a stop that ends the children last-started first."""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from stack.supervisor import Backoff, Child, Supervisor

# Notes "<what> <name> <monotonic ns>" lines in a shared file: ready once its SIGTERM handler is
# in place, term when the signal arrives, exit as it leaves. Its shutdown takes a moment, as a
# real service's does, so a child signalled before the next one has exited is caught doing so.
STOPPABLE = """
import signal, sys, time
path, name = sys.argv[1], sys.argv[2]
def note(what):
    with open(path, "a") as f:
        f.write(f"{what} {name} {time.monotonic_ns()}\\n")
def on_term(signum, frame):
    note("term")
    time.sleep(0.3)
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("ready")
while True:
    signal.pause()
"""
# Notes that it started, then exits with code 3 at once: a service that cannot start.
CRASHING = """
import sys
with open(sys.argv[1], "a") as f:
    f.write("start\\n")
sys.exit(3)
"""
RUNS_UNTIL_KILLED = "import signal\nwhile True:\n    signal.pause()\n"
IGNORES_SIGTERM = (
    "import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').close()\nwhile True:\n    signal.pause()\n"
)


class SteppedClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def python(code: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def restarts_logged(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if "restart_in_s" in entry]


def exit_and_poll(supervisor: Supervisor, child: Child) -> float:
    """Wait for ``child`` to exit, let the supervisor notice; the delay it chose."""
    assert child.process is not None
    child.process.wait(timeout=20)
    supervisor.poll()
    assert child.process is None
    assert child.restart_at is not None
    return child.restart_at - supervisor.clock()


def test_a_child_that_dies_is_started_again(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    supervisor = Supervisor(backoff=Backoff(initial_s=0.05, max_s=0.2))
    with capture_logs() as logs:
        child = supervisor.start("ingest", python(CRASHING, starts))
        deadline = time.monotonic() + 20
        supervisor.run_until(lambda: len(lines(starts)) >= 4 or time.monotonic() > deadline)
        supervisor.stop()
    assert len(lines(starts)) >= 4
    assert child.restarts >= 3
    restarts = restarts_logged(logs)[:3]
    assert [(r["child"], r["exit_code"], r["restart_in_s"]) for r in restarts] == [
        ("ingest", 3, 0.05),
        ("ingest", 3, 0.1),
        ("ingest", 3, 0.2),
    ]


def test_the_delay_doubles_to_its_cap_and_a_crash_loop_never_spins(tmp_path: Path) -> None:
    clock = SteppedClock()
    supervisor = Supervisor(backoff=Backoff(initial_s=1, max_s=30), clock=clock)
    starts = tmp_path / "starts"
    delays = []
    with capture_logs() as logs:
        child = supervisor.start("rollups", python(CRASHING, starts))
        for attempt in range(1, 8):
            delays.append(exit_and_poll(supervisor, child))
            # Until the delay is over, polling as often as we like starts nothing.
            for _ in range(100):
                assert supervisor.poll() == delays[-1]
            clock.now += delays[-1] - 0.01
            supervisor.poll()
            assert child.process is None
            assert child.restart_at is not None
            clock.now = child.restart_at
            supervisor.poll()
            assert child.process is not None
            assert child.restarts == attempt
        assert child.process is not None
        child.process.wait(timeout=20)
        supervisor.stop()
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert len(lines(starts)) == 8
    restarts = restarts_logged(logs)
    assert [r["restart_in_s"] for r in restarts] == delays
    assert all(r["child"] == "rollups" and r["exit_code"] == 3 for r in restarts)
    assert "keeps crashing" not in restarts[0]["event"]
    assert all("keeps crashing" in r["event"] for r in restarts[1:])


def test_a_child_that_stayed_up_a_while_starts_again_from_the_first_delay() -> None:
    clock = SteppedClock()
    backoff = Backoff(initial_s=1, max_s=30, stable_after_s=60)
    supervisor = Supervisor(backoff=backoff, clock=clock)
    child = supervisor.start("api", python(RUNS_UNTIL_KILLED))
    try:
        delays = []
        for _ in range(3):
            assert child.process is not None
            child.process.kill()
            delays.append(exit_and_poll(supervisor, child))
            clock.now += delays[-1]
            supervisor.poll()
        assert delays == [1, 2, 4]
        clock.now += backoff.stable_after_s
        assert child.process is not None
        child.process.kill()
        assert exit_and_poll(supervisor, child) == 1
        assert child.last_exit_code == -signal.SIGKILL
    finally:
        supervisor.stop()


def test_stop_ends_children_in_reverse_order_each_after_the_next_has_exited(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes"
    names = ["ingest", "rollups", "api", "simulator"]
    supervisor = Supervisor()
    for name in names:
        supervisor.start(name, python(STOPPABLE, notes, name))
    assert until(lambda: sum(line.startswith("ready") for line in lines(notes)) == len(names))
    supervisor.stop()

    events = [line.split() for line in lines(notes) if not line.startswith("ready")]
    assert [(what, name) for what, name, _ in events] == [
        (what, name) for name in reversed(names) for what in ("term", "exit")
    ]
    at = {(what, name): int(ns) for what, name, ns in events}
    for earlier, later in itertools.pairwise(names):
        assert at["term", earlier] > at["exit", later]
    for name in names:
        process = supervisor.child(name).process
        assert process is not None
        assert process.returncode == 0


def test_a_child_that_ignores_sigterm_is_killed_and_nothing_restarts_after_a_stop(
    tmp_path: Path,
) -> None:
    clock = SteppedClock()
    ready = tmp_path / "ready"
    supervisor = Supervisor(stop_timeout_s=0.5, clock=clock)
    stubborn = supervisor.start("simulator", python(IGNORES_SIGTERM, ready))
    assert until(ready.exists)
    supervisor.stop()
    assert stubborn.process is not None
    assert stubborn.process.returncode == -signal.SIGKILL
    clock.now += 3600
    assert supervisor.poll() is None
    assert stubborn.restarts == 0
    assert stubborn.process.poll() == -signal.SIGKILL


def test_a_name_is_supervised_once() -> None:
    supervisor = Supervisor()
    supervisor.start("api", python("pass"))
    try:
        with pytest.raises(ValueError, match="already supervised"):
            supervisor.start("api", python("pass"))
    finally:
        supervisor.stop()
    assert len(supervisor.children) == 1

"""Keeps named child processes running: a child that exits is started again after a delay that
doubles while it keeps failing soon after its start; a stop ends them in reverse order."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

log = structlog.get_logger(__name__)


class StopSignals:
    """SIGINT and SIGTERM ask the stack to stop; it stops at its next check, in its own time,
    so that every child it started is stopped too."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays before a restart: ``initial_s`` doubling to ``max_s``; a child that stayed up
    ``stable_after_s`` starts again from ``initial_s``."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th early exit in a row (1 for the first)."""
        return min(self.initial_s * 2.0 ** (failures - 1), self.max_s)


@dataclass
class Child:
    """One supervised command and what became of it."""

    name: str
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    # Exits in a row that came before the child had stayed up ``stable_after_s``.
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0
    last_exit_code: int | None = None


def _describe(exit_code: int) -> str:
    """``code 3``, or the signal's name for a child killed by one (``SIGKILL``)."""
    if exit_code >= 0:
        return f"code {exit_code}"
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


class Supervisor:
    """Starts children in order, restarts those that exit, and stops them in reverse order.

    ``poll`` does one round of bookkeeping and ``run_until`` repeats it; the clock is
    injectable so tests can step through the delays with real processes. ``env`` (None: ours)
    is read at each start."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        backoff: Backoff | None = None,
        stop_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Read at each start, not copied: a restart sees what the caller has set since.
        self.env = env
        self.cwd = cwd
        self.backoff = backoff or Backoff()
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock
        self.children: list[Child] = []
        self.stopped = False

    def start(self, name: str, argv: Sequence[str]) -> Child:
        """Start ``argv`` now as the child ``name`` and keep it running from then on."""
        if any(child.name == name for child in self.children):
            raise ValueError(f"a child named {name!r} is already supervised")
        child = Child(name, tuple(argv))
        self.children.append(child)
        self._spawn(child)
        return child

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def poll(self) -> float | None:
        """Notice children that exited, start those whose delay is over; returns the seconds
        until the next restart is due (None if none is waiting)."""
        if self.stopped:
            return None
        now = self.clock()
        next_due: float | None = None
        for child in self.children:
            if child.process is not None and (exit_code := child.process.poll()) is not None:
                self._exited(child, exit_code, now)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
            if child.restart_at is not None:
                wait = child.restart_at - now
                next_due = wait if next_due is None else min(next_due, wait)
        return next_due

    def run_until(self, stopping: Callable[[], bool], interval_s: float = 0.2) -> None:
        """Supervise until ``stopping()`` holds; the children keep running afterwards."""
        while not stopping():
            next_due = self.poll()
            time.sleep(interval_s if next_due is None else max(0.0, min(interval_s, next_due)))

    def stop(self) -> None:
        """SIGTERM each child, last started first, waiting for it to exit before the one
        before it (killing it after ``stop_timeout_s``); nothing is restarted after this."""
        self.stopped = True
        for child in reversed(self.children):
            child.restart_at = None
            process = child.process
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "child did not stop in time, killing it",
                    child=child.name,
                    timeout_s=self.stop_timeout_s,
                )
                process.kill()
                process.wait()
            log.info("child stopped", child=child.name, exit=_describe(process.returncode))

    def _spawn(self, child: Child) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the children
        # in order (the simulator's last statuses must still find ingest running).
        child.process = subprocess.Popen(
            child.argv, env=self.env, cwd=self.cwd, start_new_session=True
        )
        child.started_at = self.clock()
        child.restart_at = None
        log.info("child started", child=child.name, pid=child.process.pid, restarts=child.restarts)

    def _exited(self, child: Child, exit_code: int, now: float) -> None:
        uptime = now - child.started_at
        stable = uptime >= self.backoff.stable_after_s
        child.failures = 1 if stable else child.failures + 1
        delay = self.backoff.delay(child.failures)
        child.process = None
        child.last_exit_code = exit_code
        child.restart_at = now + delay
        crash_looping = child.failures > 1
        log.warning(
            "child keeps crashing soon after its start, restarting it with backoff"
            if crash_looping
            else "child exited, restarting it",
            child=child.name,
            exit_code=exit_code,
            exit=_describe(exit_code),
            uptime_s=round(uptime, 1),
            restart_in_s=delay,
            exits_in_a_row=child.failures,
            stable_after_s=self.backoff.stable_after_s,
        )

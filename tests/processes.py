"""Real processes the fault tests start and kill: ``python -m ingest`` as one replica."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from core.config import Settings
from stack.broker_auth import login_environment
from stack.services import free_port

ROOT = Path(__file__).resolve().parents[1]


class IngestProcess:
    """``python -m ingest`` as a real process, so it can be killed like one; one replica holds
    an ordinary subscription, replicas given a ``share_group`` share the stream."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        share_group: str | None = None,
        **environment: str,
    ) -> None:
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "MQTT_URL": settings.mqtt_url,
            **login_environment(settings),
            **environment,
            "ALATAU_INGEST__CLIENT_ID": client_id,
            "ALATAU_INGEST__SHARE_GROUP": share_group or "",
            "ALATAU_INGEST__FLUSH_INTERVAL_S": "0.05",
            "ALATAU_INGEST__RETRY_MAX_S": "1",
            "ALATAU_LOG_LEVEL": "WARNING",
            "ALATAU_INGEST__METRICS_PORT": str(self.metrics_port),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "ingest"], env=self.env, cwd=ROOT)

    async def counter(self, name: str) -> float:
        """The sum over labels of one of the replica's Prometheus counters; 0 before its
        exporter is up."""
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{")
        )

    async def exit_code(self) -> int | None:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, 30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""How simulated devices come up as firmware does: CONNECTs paced, refusals retried with backoff.

A city powering on at once would otherwise send every CONNECT in the same second, and on the
city edge every one of them is an HTTP question to the auth backend; a broker that refuses a
login (``CONNACK 0x4`` can be the auth backend's timeout there) is asked again later, not never.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Final

from core.config import SimulatorSettings
from core.mqtt import RECONNECT_DELAY_S

# gmqtt itself retries a refusal it deems transient after RECONNECT_DELAY_S; waiting at least
# that long first lets that attempt find the client stopped, so only one attempt is under way.
MIN_RETRY_DELAY_S: Final = RECONNECT_DELAY_S + 0.1


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """The pause before retry ``attempt`` (0 for the first): full jitter over an exponentially
    growing window, so devices refused together do not come back together."""
    window = min(max_s, base_s * 2.0 ** min(attempt, 30))
    return MIN_RETRY_DELAY_S + rng.uniform(0.0, window)


@dataclass
class ConnectPacer:
    """At most ``concurrency`` CONNECTs awaiting their CONNACK, started at most ``rate_hz`` a
    second."""

    concurrency: int
    rate_hz: float
    _slots: asyncio.Semaphore = field(init=False)
    _next_start: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    @classmethod
    def from_settings(cls, settings: SimulatorSettings) -> ConnectPacer:
        return cls(settings.connect_concurrency, settings.connect_rate_hz)

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._next_start)
        self._next_start = start + 1.0 / self.rate_hz
        delay = start - loop.time()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self._slots.release()
                raise

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release()

"""Tells each device why its readings were refused, on a topic only it may read.

Every rejection of a known device becomes one small JSON message on
``alatau/{kind}/{id}/errors`` (reason, detail, the reading's ts as the device sent it, the
topic it came on), sent once its batch has committed. A token bucket per device bounds them: a
device that sends garbage at full speed gets ``echo_burst`` echoes at once and
``echo_rate_per_s`` after that, and what is beyond is dropped and counted, never queued. Echoes
are best effort (QoS 0): the rejection itself is stored whatever becomes of its echo.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from devices.contract import Kind, errors_topic
from ingest import metrics
from ingest.schemas import Rejection

# Publishes (topic, payload) at the broker; each edge's consumer gives its own.
Publish = Callable[[Sequence[tuple[str, bytes]]], Awaitable[None]]
# The kind a device is registered as, None when unknown.
KindOf = Callable[[str], Kind | None]

_MAX_DETAIL: Final = 500
_MAX_TRACKED: Final = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class EchoLimiter:
    """A token bucket per device: ``burst`` at once, then ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, device_id: str, now: float | None = None) -> bool:
        if self._rate <= 0:
            return False
        moment = time.monotonic() if now is None else now
        bucket = self._buckets.get(device_id)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED:
                # Forgetting everyone at once only ever allows more, never fewer, echoes.
                self._buckets.clear()
            bucket = self._buckets[device_id] = _Bucket(float(self._burst), moment)
        bucket.tokens = min(self._burst, bucket.tokens + (moment - bucket.at) * self._rate)
        bucket.at = moment
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


def echo_payload(rejection: Rejection) -> bytes:
    return orjson.dumps(
        {
            "reason": rejection.reason.value,
            "detail": rejection.detail[:_MAX_DETAIL],
            "ts": rejection.ts,
            "topic": rejection.topic,
            "received_at": rejection.received_at,
        }
    )


class Echoes:
    """Turns a committed batch's rejections into the devices' echoes, within each one's bound."""

    def __init__(self, limiter: EchoLimiter, kind_of: KindOf) -> None:
        self._limiter = limiter
        self._kind_of = kind_of
        self._publish: Publish | None = None

    def set_publish(self, publish: Publish) -> None:
        self._publish = publish

    async def send(self, rejections: Sequence[Rejection]) -> None:
        if self._publish is None:
            return
        messages: list[tuple[str, bytes]] = []
        dropped = 0
        for rejection in rejections:
            device_id = rejection.device_id
            if device_id is None:
                continue
            kind = self._kind_of(device_id) or (Kind(rejection.kind) if rejection.kind else None)
            if kind is None:
                continue
            if not self._limiter.allow(device_id):
                dropped += 1
                continue
            messages.append((errors_topic(kind, device_id), echo_payload(rejection)))
        if dropped:
            metrics.ECHOES_DROPPED.inc(dropped)
        if messages:
            await self._publish(messages)
            metrics.ECHOES_SENT.inc(len(messages))

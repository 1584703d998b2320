"""Helpers for tests that drive the real broker and database."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from core.config import Settings
from core.mqtt import connect, make_client, wait_published
from devices.contract import District, Kind

T = TypeVar("T")


async def publish(
    settings: Settings, messages: Iterable[tuple[str, bytes | str]], *, retain: bool = False
) -> None:
    """Publish at QoS 1 and return once the broker has acknowledged every message."""
    client = make_client(settings.mqtt_as(settings.simulator), f"test-pub-{uuid.uuid4().hex[:8]}")
    await connect(client, settings.mqtt_as(settings.simulator))
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.wait_for(wait_published(client), timeout=30)
    finally:
        await client.disconnect()


async def register(
    pool: asyncpg.Pool,
    device_id: str,
    kind: Kind,
    district: District = District.GATE,
    *,
    enabled: bool = True,
) -> None:
    await pool.execute(
        "INSERT INTO devices (device_id, kind, district, enabled) VALUES ($1, $2, $3, $4)",
        device_id,
        kind.value,
        district.value,
        enabled,
    )


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout_s: float = 20.0,
) -> T:
    """Poll ``probe`` until ``done`` holds of its result; the last result is returned either way
    so the test's own assertion says what was wrong."""
    deadline = time.monotonic() + timeout_s
    result = await probe()
    while not done(result) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        result = await probe()
    return result


def bearer(token: str) -> dict[str, str]:
    """The header that carries an API key."""
    return {"Authorization": f"Bearer {token}"}


SHARED_DATA_VARIABLE = "ALATAU_SHARED_DATA"


def shared_data_dir() -> Path:
    """The real sensor recordings (read in place, never copied into the project): the folder
    ``ALATAU_SHARED_DATA`` names, else ``../shared/data`` beside the checkout."""
    configured = os.environ.get(SHARED_DATA_VARIABLE)
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[1]
    return checkout.parent / "shared" / "data"


def needs_recording(path: Path) -> pytest.MarkDecorator:
    """Skip a test whose recording is absent, saying where the recordings are looked for."""
    return pytest.mark.skipif(
        not path.is_file(),
        reason=f"{path} is missing: set {SHARED_DATA_VARIABLE} to the folder of recordings,"
        " or place it at ../shared/data beside the checkout",
    )


def real_clock_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without libfaketime, for a test tool (not a part under test) started
    while the suite runs with its clock moved (``make test-clock-ahead``). libfaketime 0.9.10
    does not intercept ``sem_clockwait``, which CPython 3.11 uses for every timed lock wait:
    with the monotonic clock moved ahead, ``queue.get(timeout=0.01)`` waits that much longer,
    and a tool whose threads poll each other that way (Schemathesis) never finishes."""
    kept = {name: value for name, value in environment.items() if not name.startswith("FAKETIME")}
    preload = [
        library
        for library in re.split(r"[:\s]+", kept.pop("LD_PRELOAD", ""))
        if library and "libfaketime" not in library
    ]
    if preload:
        kept["LD_PRELOAD"] = ":".join(preload)
    return kept

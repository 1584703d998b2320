"""The whole pipeline: simulated devices publish over the real broker, ingest stores, and the
API returns exactly what was published, value for value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import Kind, readings_table
from ingest.app import RunningIngest
from simulators.fleet import build_fleet
from simulators.service import Simulation
from tests.support import eventually

pytestmark = pytest.mark.e2e

READINGS_PER_DEVICE = 12


async def stored_total(pool: asyncpg.Pool, device_ids: list[str]) -> int:
    total = 0
    for kind in Kind:
        total += await pool.fetchval(
            f"SELECT count(*) FROM {readings_table(kind)} WHERE device_id = ANY($1::text[])",
            device_ids,
        )
    return total


@pytest.mark.parametrize("batch_size", [1, 4])
async def test_the_api_returns_exactly_what_the_simulator_published(
    ingest: RunningIngest,
    ingest_settings: Settings,
    api_url: str,
    db_pool: asyncpg.Pool,
    unique: str,
    batch_size: int,
    admin_headers: dict[str, str],
    api_keys: dict[Role, str],
) -> None:
    fleet = build_fleet(2, seed=7, prefix=f"e2e{unique}")
    assert {device.kind for device in fleet} == set(Kind)
    device_ids = [device.device_id for device in fleet]
    settings = ingest_settings.model_copy(
        update={
            "simulator": ingest_settings.simulator.model_copy(
                update={"api_url": api_url, "client_id_prefix": f"e2e-{unique}"}
            )
        }
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    simulation = Simulation(
        settings,
        fleet,
        rate_hz=50.0,
        count=READINGS_PER_DEVICE,
        seed=7,
        batch_size=batch_size,
        start=start,
        time_step_s=60.0,
        record=True,
        api_key=api_keys[Role.ADMIN],
    )
    # Registered through the API, each device logs in to the broker with its own login.
    await simulation.run(register=True)

    expected = len(fleet) * READINGS_PER_DEVICE
    assert len(simulation.published) == expected
    assert (
        await eventually(lambda: stored_total(db_pool, device_ids), lambda n: n >= expected)
        == expected
    )

    published: dict[str, list[dict[str, object]]] = {}
    for _, device_id, reading in simulation.published:
        published.setdefault(device_id, []).append(reading)

    async with httpx.AsyncClient(base_url=api_url, headers=admin_headers) as client:
        for device in fleet:
            response = await client.get(
                f"/api/v1/devices/{device.device_id}/readings",
                params={
                    "from": start.isoformat(),
                    "to": (start + timedelta(days=1)).isoformat(),
                    "limit": 1000,
                },
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["next_cursor"] is None
            got = [
                {
                    "ts": datetime.fromisoformat(item["ts"]),
                    **{k: v for k, v in item["values"].items() if v is not None},
                }
                for item in body["items"]
            ]
            want = [
                {**reading, "ts": datetime.fromisoformat(str(reading["ts"]))}
                for reading in sorted(published[device.device_id], key=lambda r: str(r["ts"]))
            ]
            assert got == want

            registered = (await client.get(f"/api/v1/devices/{device.device_id}")).json()
            assert registered["kind"] == device.kind.value
            assert registered["district"] == device.district.value
            assert registered["last_seen"] is not None

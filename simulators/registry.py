"""Registers simulated devices through the API, as an operator would, before they publish.

Registration issues each device's broker login, so simulated devices log in as themselves, like
real ones. Devices go in commissioning lists (``POST /devices/bulk``); one registered earlier gets
a fresh login (the API shows a password only once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import httpx
import structlog

from devices.bulk import MAX_BULK_DEVICES
from devices.schemas import MqttLogin
from simulators.schemas import SimDevice

log = structlog.get_logger(__name__)

BULK_PATH: Final = "/api/v1/devices/bulk"
CREDENTIALS_PATH: Final = "/api/v1/devices/{device_id}/credentials"
DEFAULT_CONCURRENCY: Final = 20


class RegistrationError(Exception):
    """The API refused a device for another reason than that it already exists."""


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    created: int
    existing: int
    logins: dict[str, MqttLogin]


class _Registrar:
    """Registers devices a commissioning list at a time; a device already registered gets a
    new login, ``concurrency`` such requests at once."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_url: str,
        concurrency: int,
        metadata: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self._client = client
        self._metadata = metadata
        self._api_url = api_url
        self._limit = asyncio.Semaphore(concurrency)
        self.created = 0
        self.existing = 0
        self.logins: dict[str, MqttLogin] = {}

    async def _post(self, what: str, path: str, body: Any, **params: str) -> httpx.Response:
        try:
            return await self._client.post(path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise RegistrationError(
                f"could not register {what} at {self._api_url}: {exc!r}"
            ) from exc

    @staticmethod
    def _failed(what: str, response: httpx.Response) -> RegistrationError:
        return RegistrationError(
            f"registering {what} failed: HTTP {response.status_code} {response.text[:300]}"
        )

    async def register(self, devices: Sequence[SimDevice]) -> list[str]:
        """Commission ``devices`` in one request; returns the ids that were already there."""
        what = f"{devices[0].device_id}..{devices[-1].device_id}"
        body = [device.registration(self._metadata.get(device.device_id)) for device in devices]
        response = await self._post(what, BULK_PATH, body, skip_existing="true")
        if response.status_code != HTTPStatus.CREATED:
            raise self._failed(what, response)
        answer = response.json()
        for created in answer["created"]:
            self.logins[created["device_id"]] = MqttLogin.model_validate(created["mqtt"])
        self.created += len(answer["created"])
        skipped: list[str] = answer["skipped"]
        return skipped

    async def rotate(self, device_id: str) -> None:
        async with self._limit:
            path = CREDENTIALS_PATH.format(device_id=device_id)
            response = await self._post(device_id, path, None)
            if response.status_code != HTTPStatus.OK:
                raise self._failed(device_id, response)
        self.existing += 1
        self.logins[device_id] = MqttLogin.model_validate(response.json())


async def register_devices(
    api_url: str,
    devices: Sequence[SimDevice],
    *,
    api_key: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch: int = MAX_BULK_DEVICES,
    timeout_s: float = 120.0,
    transport: httpx.AsyncBaseTransport | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> RegistrationResult:
    """``POST /api/v1/devices/bulk?skip_existing=true`` for ``batch`` devices at a time (10,000
    devices one request each took minutes), with ``metadata[device_id]`` in each one's metadata;
    a device already registered then gets a new login from ``POST .../credentials`` (its metadata
    stays as registered), ``concurrency`` at a time. Any other answer raises
    ``RegistrationError``."""
    if concurrency < 1 or batch < 1:
        raise ValueError("concurrency and batch must be >= 1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        base_url=api_url.rstrip("/"),
        headers=headers,
        timeout=timeout_s,
        transport=transport,
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:
        registrar = _Registrar(client, api_url, concurrency, metadata or {})
        existing: list[str] = []
        for first in range(0, len(devices), batch):
            existing += await registrar.register(devices[first : first + batch])
        try:
            async with asyncio.TaskGroup() as group:
                for device_id in existing:
                    group.create_task(registrar.rotate(device_id))
        except* RegistrationError as failures:
            first_failure = failures.exceptions[0]
            raise RegistrationError(
                f"device registration stopped after {len(failures.exceptions)} failure(s); "
                f"first: {first_failure}"
            ) from first_failure
    log.info("devices registered", created=registrar.created, existing=registrar.existing)
    return RegistrationResult(
        created=registrar.created, existing=registrar.existing, logins=registrar.logins
    )

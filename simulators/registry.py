"""Registers simulated devices through the API, as an operator would, before they publish.

Registration issues each device's broker login, so simulated devices log in as themselves, like
real ones. A device registered earlier gets a fresh login (the API shows a password only once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import httpx
import structlog

from devices.schemas import MqttLogin
from simulators.schemas import SimDevice

log = structlog.get_logger(__name__)

DEVICES_PATH: Final = "/api/v1/devices"
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
    """Registers devices one request at a time each, ``concurrency`` at once."""

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

    async def _post(self, device: SimDevice, path: str, body: Any) -> httpx.Response:
        try:
            return await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise RegistrationError(
                f"could not register {device.device_id} at {self._api_url}: {exc!r}"
            ) from exc

    @staticmethod
    def _failed(device: SimDevice, response: httpx.Response) -> RegistrationError:
        return RegistrationError(
            f"registering {device.device_id} failed: HTTP {response.status_code} "
            f"{response.text[:300]}"
        )

    async def register(self, device: SimDevice) -> None:
        async with self._limit:
            body = device.registration(self._metadata.get(device.device_id))
            response = await self._post(device, DEVICES_PATH, body)
            if response.status_code == HTTPStatus.CONFLICT:
                self.existing += 1
                path = CREDENTIALS_PATH.format(device_id=device.device_id)
                response = await self._post(device, path, None)
                if response.status_code != HTTPStatus.OK:
                    raise self._failed(device, response)
                login = response.json()
            elif response.status_code == HTTPStatus.CREATED:
                self.created += 1
                login = response.json()["mqtt"]
            else:
                raise self._failed(device, response)
        self.logins[device.device_id] = MqttLogin.model_validate(login)


async def register_devices(
    api_url: str,
    devices: Sequence[SimDevice],
    *,
    api_key: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> RegistrationResult:
    """``POST /api/v1/devices`` for every device, ``concurrency`` at a time, with
    ``metadata[device_id]`` in its metadata: 201 created and 409 already registered are both
    fine (the latter then gets a new login from ``POST .../credentials``; its metadata stays
    as registered); any other answer raises ``RegistrationError``."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        base_url=api_url.rstrip("/"),
        headers=headers,
        timeout=timeout_s,
        transport=transport,
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:
        registrar = _Registrar(client, api_url, concurrency, metadata or {})
        try:
            async with asyncio.TaskGroup() as group:
                for device in devices:
                    group.create_task(registrar.register(device))
        except* RegistrationError as failures:
            first = failures.exceptions[0]
            raise RegistrationError(
                f"device registration stopped after {len(failures.exceptions)} failure(s); "
                f"first: {first}"
            ) from first
    log.info("devices registered", created=registrar.created, existing=registrar.existing)
    return RegistrationResult(
        created=registrar.created, existing=registrar.existing, logins=registrar.logins
    )

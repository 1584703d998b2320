"""A client of the cluster's management HTTP API, as ``service.api``: any node will answer."""

from __future__ import annotations

import itertools
from typing import Any, Final
from urllib.parse import quote

import httpx
import structlog

from core.config import Settings
from core.errors import Unavailable

log = structlog.get_logger(__name__)

TIMEOUT_S: Final = 5.0


class BrokerUnreachable(Unavailable):
    default_code = "broker_unavailable"


class Management:
    """Calls go to one node and move to the next when it does not answer."""

    def __init__(self, settings: Settings) -> None:
        identity = settings.mqtt_as(settings.api)
        auth = (identity.username or "", identity.password or "")
        self._vhost = quote(settings.edge.vhost, safe="")
        self._clients = [
            httpx.AsyncClient(base_url=url.rstrip("/"), auth=auth, timeout=TIMEOUT_S)
            for url in settings.edge.management_urls
        ]
        self._order = itertools.cycle(range(len(self._clients)))
        self._current = next(self._order)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for _ in self._clients:
            client = self._clients[self._current]
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                log.warning(
                    "management node unreachable", node=str(client.base_url), error=repr(exc)
                )
                self._current = next(self._order)
                continue
            if response.status_code >= 500:
                self._current = next(self._order)
                continue
            return response
        raise BrokerUnreachable("no node of the edge's management API answered")

    async def drop_connections(self, username: str) -> int:
        """Close every connection the user holds on any node (a device disabled or rotated);
        how many there were. 3.10 closes MQTT connections by username only, never by name."""
        path = f"/connections/username/{quote(username, safe='')}"
        held = (await self._request("GET", path)).json()
        if held:
            await self._request(
                "DELETE", path, headers={"X-Reason": "device login disabled or rotated"}
            )
            log.info("device connections dropped", device_id=username, connections=len(held))
        return len(held)

    async def queue_state(self, queue: str) -> dict[str, Any]:
        """Backlog of a queue and each consumer's unacknowledged deliveries."""
        response = await self._request("GET", f"/queues/{self._vhost}/{quote(queue, safe='')}")
        if response.status_code == 404:
            raise BrokerUnreachable(f"the edge has no queue {queue!r}")
        body = response.json()
        channels = await self._request(
            "GET", "/channels", params={"columns": "name,messages_unacknowledged"}
        )
        unacked = {c["name"]: c.get("messages_unacknowledged", 0) for c in channels.json()}
        consumers = [
            {
                "consumer": detail.get("consumer_tag"),
                "unacknowledged": unacked.get(detail.get("channel_details", {}).get("name"), 0),
                "prefetch": detail.get("prefetch_count"),
            }
            for detail in body.get("consumer_details", [])
        ]
        return {
            "queue": queue,
            "ready": body.get("messages_ready", 0),
            "unacknowledged": body.get("messages_unacknowledged", 0),
            "leader": body.get("leader"),
            "members_online": len(body.get("online") or []),
            "consumers": consumers,
        }

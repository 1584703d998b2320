"""Listing and closing one device's connections through 3.10.8's management HTTP API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from stack.rabbitmq import RabbitCluster
from tests.edge.device import DeviceFactory, poll


@pytest.fixture
def api_client(edge: RabbitCluster) -> Iterator[httpx.Client]:
    """The management API as service.api (its tags are what the api will have)."""
    with httpx.Client(
        base_url=f"{edge.management_url(2)}/api",
        auth=("service.api", edge.passwords()["api"]),
        timeout=10,
    ) as client:
        yield client


def test_connections_by_username_are_listed_and_closed(
    edge: RabbitCluster, api_client: httpx.Client, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    for node in (1, 3):  # one device, two connections on two nodes
        other = device_factory(device.username, client_id=f"{device.client_id}-{node}")
        assert not other.connect(edge.mqtt_port(node)).is_failure
    listed = poll(
        lambda: api_client.get(f"/connections/username/{device.username}").json(),
        lambda conns: len(conns) == 2,
    )
    assert len(listed) == 2
    assert {c["node"] for c in listed} == {edge.node_name(1), edge.node_name(3)}
    assert {c["user"] for c in listed} == {device.username}
    # /api/connections comes from statistics (up to a second late) and filters by name only
    # when paginated: without ``page`` it ignores ``name`` and returns a bare list of all.
    name = listed[0]["name"]
    assert isinstance(api_client.get("/connections", params={"name": name}).json(), list)
    found = poll(
        lambda: api_client.get("/connections", params={"name": name, "page": 1}).json(),
        lambda page: page.get("filtered_count", 0) == 1,
    )
    assert found["items"][0]["user"] == device.username
    assert found["items"][0]["protocol"] == "MQTT 3.1.1"

    response = api_client.delete(
        f"/connections/username/{device.username}", headers={"X-Reason": "device disabled"}
    )
    assert response.status_code == 204
    left = poll(
        lambda: api_client.get(f"/connections/username/{device.username}").json(),
        lambda conns: conns == [],
    )
    assert left == []


def test_an_mqtt_connection_cannot_be_closed_by_name_only_by_username(
    edge: RabbitCluster, api_client: httpx.Client, device_factory: DeviceFactory
) -> None:
    """3.10.8 lists MQTT connections by name but DELETE /connections/{name} does not know
    them (404, URL-encoded or not): the api drops a device's connections by username."""
    device = device_factory()
    assert not device.connect(edge.mqtt_port(2)).is_failure
    [connection] = poll(
        lambda: api_client.get(f"/connections/username/{device.username}").json(),
        lambda conns: len(conns) == 1,
    )
    name = quote(connection["name"], safe="")
    assert api_client.delete(f"/connections/{name}").status_code == 404
    drops = len(device.disconnects)
    assert api_client.delete(f"/connections/username/{device.username}").status_code == 204
    assert device.wait_for(lambda: len(device.disconnects) > drops)


def test_monitoring_may_list_but_only_administrators_close(
    edge: RabbitCluster, admin: httpx.Client, device_factory: DeviceFactory
) -> None:
    watcher, secret = f"test.monitor-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert (
        admin.put(f"/users/{watcher}", json={"password": secret, "tags": "monitoring"}).status_code
        < 300
    )
    try:
        device = device_factory()
        assert not device.connect(edge.mqtt_port(1)).is_failure
        with httpx.Client(
            base_url=f"{edge.management_url(1)}/api", auth=(watcher, secret)
        ) as monitor:
            listed = poll(
                lambda: monitor.get(f"/connections/username/{device.username}").json(),
                lambda conns: len(conns) == 1,
            )
            assert len(listed) == 1
            # 3.10.8 refuses the monitoring tag (a 500 for the username form, not a 401).
            by_user = monitor.delete(f"/connections/username/{device.username}")
            assert by_user.status_code >= 400
            still = monitor.get(f"/connections/username/{device.username}").json()
            assert len(still) == 1
    finally:
        admin.delete(f"/users/{watcher}")

"""What RabbitMQ 3.10.8's HTTP auth backend asks, with which fields, and what its cache keeps.

The api will answer these endpoints from the registry: the field sets asserted here are the
request formats it must accept (form-encoded POST bodies, or the same keys in a GET query).
"""

from __future__ import annotations

import time

import aio_pika
import pytest

from stack.rabbitmq import RabbitCluster
from tests.edge.authserver import AuthRequest, AuthServer
from tests.edge.conftest import AUTH_CACHE_TTL_MS
from tests.edge.device import Device, DeviceFactory

USER_FIELDS = {"username", "password", "vhost", "client_id"}
VHOST_FIELDS = {"username", "vhost", "ip", "tags", "client_id"}
RESOURCE_FIELDS = {"username", "vhost", "resource", "name", "permission", "tags", "client_id"}
TOPIC_FIELDS = {
    "username",
    "vhost",
    "resource",
    "name",
    "permission",
    "tags",
    "routing_key",
    "variable_map.client_id",
    "variable_map.username",
    "variable_map.vhost",
}


def _since(requests: list[AuthRequest], mark: float) -> list[AuthRequest]:
    return [r for r in requests if r.at >= mark]


def test_connect_and_publish_ask_user_vhost_topic_and_resource(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    assert not device.connect(edge.mqtt_port(1)).is_failure
    connect = auth_server.requests_for(device.username)
    # Authentication, then authorisation, each through the cache: user_path twice.
    assert [r.endpoint for r in connect] == ["user", "user", "vhost"]
    for request in connect:
        assert request.method == "POST"
        assert request.content_type == "application/x-www-form-urlencoded"
    assert connect[0].params == {
        "username": device.username,
        "password": device.password,
        "vhost": "/",
        "client_id": device.client_id,
    }
    assert connect[1].params == connect[0].params
    assert connect[2].params == {
        "username": device.username,
        "vhost": "/",
        "ip": "127.0.0.1",
        "tags": "",
        "client_id": device.client_id,
    }

    topic = f"alatau/air/{device.username}/telemetry"
    mid = device.publish(topic, b"{}")
    assert device.wait_acked([mid])
    publish = auth_server.requests_for(device.username)[len(connect) :]
    assert [r.endpoint for r in publish] == ["topic", "resource"]
    assert publish[0].params == {
        "username": device.username,
        "vhost": "/",
        "resource": "topic",
        "name": "amq.topic",
        "permission": "write",
        "tags": "",
        "routing_key": f"alatau.air.{device.username}.telemetry",
        "variable_map.client_id": device.client_id,
        "variable_map.username": device.username,
        "variable_map.vhost": "/",
    }
    assert publish[1].params == {
        "username": device.username,
        "vhost": "/",
        "resource": "exchange",
        "name": "amq.topic",
        "permission": "write",
        "tags": "",
        "client_id": device.client_id,
    }
    # Later publishes on the same topic are answered by the connection's own cache.
    mids = [device.publish(topic, b"{}") for _ in range(200)]
    assert device.wait_acked(mids)
    assert len(auth_server.requests_for(device.username)) == len(connect) + len(publish)


def test_subscribing_asks_for_the_session_queue_and_a_topic_read(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory
) -> None:
    device = device_factory(clean_session=False)
    assert not device.connect(edge.mqtt_port(2)).is_failure
    mark = time.monotonic()
    _, subscribed = device.client.subscribe(f"alatau/air/{device.username}/config", qos=1)
    assert subscribed is not None
    mid: int = subscribed
    granted = device.wait_for(lambda: device.subscribed.get(mid) is not None)
    assert granted
    assert device.subscribed[mid] == [1]
    asked = [
        (r.endpoint, r.params.get("resource"), r.params.get("permission"))
        for r in _since(auth_server.requests_for(device.username), mark)
    ]
    queue = f"mqtt-subscription-{device.client_id}qos1"
    assert asked == [
        ("resource", "queue", "configure"),
        ("resource", "queue", "read"),
        ("resource", "queue", "write"),
        ("resource", "exchange", "read"),
        ("topic", "topic", "read"),
    ]
    requests = _since(auth_server.requests_for(device.username), mark)
    assert {r.params["name"] for r in requests[:3]} == {queue}
    assert set(requests[0].params) == RESOURCE_FIELDS
    assert set(requests[-1].params) == TOPIC_FIELDS
    assert requests[-1].params["routing_key"] == f"alatau.air.{device.username}.config"


def test_get_sends_the_same_fields_in_the_query_string(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory
) -> None:
    _set_http_method(edge, "get")
    try:
        device = device_factory()
        assert not device.connect(edge.mqtt_port(3)).is_failure
        mid = device.publish(f"alatau/energy/{device.username}/telemetry", b"{}")
        assert device.wait_acked([mid])
    finally:
        _set_http_method(edge, "post")
    requests = auth_server.requests_for(device.username)
    assert {r.method for r in requests} == {"GET"}
    assert [(r.endpoint, set(r.params)) for r in requests] == [
        ("user", USER_FIELDS),
        ("user", USER_FIELDS),
        ("vhost", VHOST_FIELDS),
        ("topic", TOPIC_FIELDS),
        ("resource", RESOURCE_FIELDS),
    ]


def _set_http_method(edge: RabbitCluster, method: str) -> None:
    # The backend reads its method on every request: switch it on the running nodes.
    for i in edge.nodes:
        edge.ctl(
            i, "eval", f"application:set_env(rabbitmq_auth_backend_http, http_method, {method})."
        )


def test_allows_are_cached_for_the_ttl_and_refusals_not_at_all(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    ttl_s = AUTH_CACHE_TTL_MS / 1000
    first = time.monotonic()
    assert _logins_asked(device, edge.mqtt_port(1), auth_server) == 2
    # The same login (username, password, client id, vhost) within the TTL is not asked.
    again = _logins_asked(device, edge.mqtt_port(1), auth_server)
    if time.monotonic() - first < ttl_s:
        assert again == 0, "an allow within the TTL was asked again"
    # Once the TTL has passed the next login is asked again.
    while _logins_asked(device, edge.mqtt_port(1), auth_server) == 0:
        assert time.monotonic() - first < 3 * ttl_s, "the cached allow never expired"
    assert time.monotonic() - first >= ttl_s

    refused = device_factory(password="not-the-secret")
    for attempt in (1, 2):
        assert (
            refused.connect(edge.mqtt_port(1)).getName() == "Bad user name or password"
        )  # 3.1.1 code 4
        refused.stop()
        assert len(auth_server.requests_for(refused.username, "user")) == attempt


def _logins_asked(device: Device, port: int, auth_server: AuthServer) -> int:
    """Connect ``device`` once more and disconnect; how many user requests that cost."""
    before = len(auth_server.requests_for(device.username, "user"))
    assert not device.connect(port).is_failure
    device.close()
    return len(auth_server.requests_for(device.username, "user")) - before


async def test_service_logins_never_reach_the_http_backend(
    edge: RabbitCluster, auth_server: AuthServer
) -> None:
    connection = await aio_pika.connect(edge.amqp_url("ingest", 3))
    await connection.close()
    with edge.admin_client(2) as client:
        assert client.get("/overview").status_code == 200
    asked = {r.params.get("username") for r in auth_server.requests}
    assert not {name for name in asked if name and name.startswith("service.")}


def test_a_failing_http_backend_refuses_devices_not_services(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    auth_server.fail_with = 500
    try:
        assert device.connect(edge.mqtt_port(2)).getName() == "Bad user name or password"
        device.stop()
        with edge.admin_client(2) as client:
            assert client.get("/whoami").json()["name"] == "service.admin"
    finally:
        auth_server.fail_with = None


@pytest.mark.parametrize("endpoint", ["vhost"])
def test_a_refused_vhost_is_not_authorised(
    edge: RabbitCluster, auth_server: AuthServer, device_factory: DeviceFactory, endpoint: str
) -> None:
    device = device_factory()
    auth_server.overrides[endpoint] = lambda params: params.get("username") != device.username
    try:
        assert device.connect(edge.mqtt_port(3)).getName() == "Not authorized"  # 3.1.1 code 5
        device.stop()
    finally:
        del auth_server.overrides[endpoint]

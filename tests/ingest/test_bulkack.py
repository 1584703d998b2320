"""The bulk-ack handler at the packet level: what reaches the sink, which PUBACKs go out."""

from __future__ import annotations

import struct

import gmqtt
import pytest
from gmqtt.mqtt.package import Package

from ingest.bulkack import BulkAckHandler


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def send_package(self, package: bytes) -> None:
        self.sent.append(package)

    def is_closing(self) -> bool:
        return self.closing


def publish(
    topic: str,
    payload: bytes,
    mid: int,
    *,
    qos: int = 1,
    dup: bool = False,
    properties: bytes = b"",
) -> Package:
    """A PUBLISH as gmqtt's reader hands it over: the fixed header byte and the rest."""
    encoded = topic.encode()
    body = struct.pack("!H", len(encoded)) + encoded
    if qos:
        body += struct.pack("!H", mid)
    body += bytes([len(properties)]) + properties + payload
    return Package(0x30 | (0x08 if dup else 0) | (qos << 1), body)


def pubacks(*mids: int) -> bytes:
    return b"".join(bytes([0x40, 0x02]) + struct.pack("!H", mid) for mid in mids)


Received = list[tuple[str, bytes, int | None]]


def make_handler() -> tuple[BulkAckHandler, FakeConnection, Received]:
    received: Received = []
    client = gmqtt.Client("bulkack-test", optimistic_acknowledgement=False)
    handler = BulkAckHandler.install(client, lambda t, p, a: received.append((t, p, a)))
    connection = FakeConnection()
    handler.set_connection(connection)
    return handler, connection, received


def test_qos1_messages_reach_the_sink_at_once_and_nothing_is_acknowledged_by_itself() -> None:
    handler, connection, received = make_handler()
    handler(publish("alatau/air/a1/telemetry", b'{"ts": 1}', 7))
    handler(publish("alatau/air/a2/telemetry", b"[]", 65535, dup=True))
    assert [(t, p) for t, p, _ in received] == [
        ("alatau/air/a1/telemetry", b'{"ts": 1}'),
        ("alatau/air/a2/telemetry", b"[]"),
    ]
    assert connection.sent == []
    assert handler.acknowledge([a for _, _, a in received if a is not None]) == 2
    assert connection.sent == [pubacks(7, 65535)]


def test_messages_with_properties_take_gmqtt_parser_to_the_same_sink() -> None:
    handler, connection, received = make_handler()
    expiry = bytes([0x02]) + struct.pack("!I", 60)
    alias = bytes([0x23]) + struct.pack("!H", 3)
    handler(publish("alatau/energy/e1/telemetry", b"x", 11, properties=expiry + alias))
    # A later message of the same alias may leave the topic empty.
    handler(publish("", b"y", 12, properties=alias))
    assert [(t, p) for t, p, _ in received] == [
        ("alatau/energy/e1/telemetry", b"x"),
        ("alatau/energy/e1/telemetry", b"y"),
    ]
    handler.acknowledge([a for _, _, a in received if a is not None])
    assert connection.sent == [pubacks(11, 12)]


def test_qos0_messages_reach_the_sink_with_nothing_to_acknowledge() -> None:
    handler, connection, received = make_handler()
    handler(publish("alatau/air/a1/status", b"online", 0, qos=0))
    assert received == [("alatau/air/a1/status", b"online", None)]
    assert connection.sent == []


def test_acks_of_an_earlier_connection_are_dropped() -> None:
    handler, first, received = make_handler()
    handler(publish("alatau/air/a1/telemetry", b"1", 5))
    second = FakeConnection()
    handler.set_connection(second)
    # The broker resends the unacknowledged message with its packet id on the new connection.
    handler(publish("alatau/air/a1/telemetry", b"1", 5, dup=True))
    old, new = (a for _, _, a in received if a is not None)
    assert handler.acknowledge([old]) == 0
    assert first.sent == second.sent == []
    assert handler.acknowledge([new]) == 1
    assert second.sent == [pubacks(5)]


def test_nothing_is_written_to_a_closing_connection() -> None:
    handler, connection, received = make_handler()
    handler(publish("alatau/air/a1/telemetry", b"1", 5))
    connection.closing = True
    assert handler.acknowledge([a for _, _, a in received if a is not None]) == 0
    assert connection.sent == []


def test_a_failing_sink_leaves_the_message_unacknowledged() -> None:
    client = gmqtt.Client("bulkack-test", optimistic_acknowledgement=False)

    def sink(topic: str, payload: bytes, ack: int | None) -> None:
        raise ValueError("boom")

    handler = BulkAckHandler.install(client, sink)
    connection = FakeConnection()
    handler.set_connection(connection)
    handler(publish("alatau/air/a1/telemetry", b"1", 5))
    assert connection.sent == []


def test_install_refuses_a_connected_or_foreign_handler() -> None:
    handler, _, _ = make_handler()
    client = gmqtt.Client("bulkack-test", optimistic_acknowledgement=False)
    client._package_handler = handler
    with pytest.raises(TypeError):
        BulkAckHandler.install(client, lambda t, p, a: None)

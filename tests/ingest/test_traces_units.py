"""The pure parts of the traces: which parser a topic goes to, how a broker refusal notice
becomes a rejection, and the per-device bound on echoes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from devices.contract import REFUSALS_TOPIC, Kind
from ingest.echo import EchoLimiter
from ingest.parser import parse_delivery
from ingest.schemas import ParsedMessage, Reason

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def deliver(topic: str, payload: bytes) -> ParsedMessage:
    return parse_delivery(
        topic, payload, NOW, max_payload_bytes=4096, late_window=timedelta(days=7)
    )


def test_a_topic_beyond_telemetry_and_status_is_refused_with_the_device_it_names() -> None:
    for topic in ("alatau/traffic/t-1/telemetry/extra", "alatau/traffic/t-1/config"):
        message = deliver(topic, b"{}")
        assert (message.kind, message.device_id, message.rows) == (Kind.TRAFFIC, "t-1", [])
        assert [(r.reason, r.device_id, r.topic) for r in message.rejections] == [
            (Reason.INVALID_TOPIC, "t-1", topic)
        ]
        assert message.device_checked
    stranger = deliver("alatau/weather/t-1/telemetry", b"{}")
    assert [(r.reason, r.device_id) for r in stranger.rejections] == [(Reason.INVALID_TOPIC, None)]


def test_a_refusal_notice_becomes_the_devices_topic_denied_with_its_payload() -> None:
    notice = {
        "access": "publish",
        "client_id": "c-1",
        "username": "air-7",
        "topic": "alatau/air/air-8/telemetry",
        "qos": 1,
        "retain": False,
        "payload_bytes": 3,
        "payload_hex": "7b7d0a",
    }
    message = deliver(REFUSALS_TOPIC, orjson.dumps(notice))
    [rejection] = message.rejections
    assert (rejection.reason, rejection.device_id, rejection.topic, rejection.payload) == (
        Reason.TOPIC_DENIED,
        "air-7",
        "alatau/air/air-8/telemetry",
        b"{}\n",
    )
    assert "publish on" in rejection.detail
    service = deliver(REFUSALS_TOPIC, orjson.dumps(notice | {"username": "service.api"}))
    assert service.rejections[0].device_id is None
    broken = deliver(REFUSALS_TOPIC, b"not json")
    assert [(r.reason, r.topic) for r in broken.rejections] == [
        (Reason.TOPIC_DENIED, REFUSALS_TOPIC)
    ]


def test_the_echo_bound_allows_a_burst_then_the_rate() -> None:
    limiter = EchoLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.allow("d", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other", now=0.0)  # each device has its own bucket
    assert limiter.allow("d", now=0.5)  # one token back after 1 / rate
    assert not limiter.allow("d", now=0.5)
    assert [limiter.allow("d", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert not EchoLimiter(rate_per_s=0, burst=3).allow("d", now=0.0)

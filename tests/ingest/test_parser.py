"""The parser alone: every message ends as rows or as rejections with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devices.contract import Kind
from ingest.parser import parse_message, parse_status, parse_topic
from ingest.schemas import ParsedMessage, Reason

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TOPIC = "alatau/traffic/gate-t-1/telemetry"


def parse(
    payload: bytes | str | object, topic: str = TOPIC, max_bytes: int = 4096
) -> ParsedMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parse_message(
        topic, raw, NOW, max_payload_bytes=max_bytes, late_window=timedelta(days=7)
    )


def good(**extra: object) -> dict[str, object]:
    return {"ts": "2026-11-21T16:59:00+05:00", "vehicle_count": 12, "avg_speed_kmh": 41.5, **extra}


def test_a_good_reading_becomes_one_row_in_contract_column_order() -> None:
    message = parse(good(interval_s=60))
    assert message.rejections == []
    assert message.rows == [
        ("gate-t-1", datetime(2026, 11, 21, 11, 59, tzinfo=UTC), NOW, 12, 60.0, 41.5, None, None)
    ]


def test_epoch_milliseconds_are_accepted() -> None:
    epoch_ms = int(NOW.timestamp() * 1000) - 60_123
    message = parse({"ts": epoch_ms, "occupancy_pct": 3.5})
    assert message.rows[0][1] == NOW - timedelta(seconds=60, milliseconds=123)


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (good(colour="red"), Reason.UNKNOWN_FIELD),
        (good(vehicle_count="12"), Reason.WRONG_TYPE),
        (good(vehicle_count=1.5), Reason.WRONG_TYPE),
        (good(vehicle_count=True), Reason.WRONG_TYPE),
        (good(avg_speed_kmh=251), Reason.OUT_OF_RANGE),
        (good(occupancy_pct=-0.1), Reason.OUT_OF_RANGE),
        ({"vehicle_count": 1}, Reason.MISSING_FIELD),
        ({"ts": "2026-11-21T12:00:00", "vehicle_count": 1}, Reason.INVALID_TIMESTAMP),
        ({"ts": "yesterday", "vehicle_count": 1}, Reason.INVALID_TIMESTAMP),
        ({"ts": "2026-11-21T12:00:00Z"}, Reason.NO_METRICS),
        ({"ts": "2026-11-21T12:06:00Z", "vehicle_count": 1}, Reason.FUTURE_TIMESTAMP),
        ({"ts": "2026-11-14T11:59:00Z", "vehicle_count": 1}, Reason.TOO_OLD),
        ({"ts": "2026-11-21T12:00:00Z", "pm2_5": 10.0}, Reason.UNKNOWN_FIELD),
    ],
)
def test_each_broken_rule_has_its_reason(reading: dict[str, object], reason: Reason) -> None:
    message = parse(reading)
    assert message.rows == []
    assert [r.reason for r in message.rejections] == [reason]
    assert message.rejections[0].detail
    assert orjson.loads(message.rejections[0].payload) == reading


def test_five_minutes_ahead_is_still_accepted() -> None:
    assert parse({"ts": "2026-11-21T12:05:00Z", "vehicle_count": 1}).rows


def test_a_bad_reading_in_an_array_rejects_only_itself() -> None:
    batch = [good(), good(ts="2026-11-21T11:58:00Z", bogus=1), 7, good(ts="2026-11-21T11:57:00Z")]
    message = parse(batch)
    assert len(message.rows) == 2
    assert [r.reason for r in message.rejections] == [Reason.UNKNOWN_FIELD, Reason.NOT_AN_OBJECT]
    assert orjson.loads(message.rejections[0].payload) == batch[1]
    assert message.rejections[1].payload == b"7"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", Reason.NOT_UTF8),
        (b"{not json", Reason.INVALID_JSON),
        (b"", Reason.INVALID_JSON),
        (b"42", Reason.NOT_AN_OBJECT),
        (b"[]", Reason.EMPTY_BATCH),
        (orjson.dumps([good()] * 1001), Reason.BATCH_TOO_LARGE),
        (b"x" * 5000, Reason.PAYLOAD_TOO_LARGE),
    ],
)
def test_unusable_payloads_are_kept_whole(payload: bytes, reason: Reason) -> None:
    message = parse(payload, max_bytes=100_000 if reason is Reason.BATCH_TOO_LARGE else 4096)
    assert message.rows == []
    assert [r.reason for r in message.rejections] == [reason]
    assert message.rejections[0].payload == payload


@pytest.mark.parametrize(
    "topic",
    [
        "alatau/water/x/telemetry",
        "alatau/traffic/bad id/telemetry",
        "alatau/traffic/x/status",
        "other/traffic/x/telemetry",
        "alatau/traffic/x/y/telemetry",
        "alatau/traffic/" + "a" * 65 + "/telemetry",
    ],
)
def test_topics_outside_the_contract_are_refused(topic: str) -> None:
    message = parse(good(), topic=topic)
    assert [r.reason for r in message.rejections] == [Reason.INVALID_TOPIC]


def test_topic_parsing() -> None:
    assert parse_topic("alatau/air/Golden_air-07/telemetry") == (Kind.AIR, "Golden_air-07")
    assert parse_topic("alatau/air//telemetry") is None


@pytest.mark.parametrize(("payload", "status"), [(b"online", "online"), (b" OFFLINE\n", "offline")])
def test_status_messages_carry_the_state(payload: bytes, status: str) -> None:
    message = parse_status("alatau/air/a-1/status", payload, NOW)
    assert (message.kind, message.device_id, message.status) == (Kind.AIR, "a-1", status)
    assert message.rows == []
    assert message.rejections == []


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("alatau/air/a-1/status", b"sleepy", Reason.INVALID_STATUS),
        ("alatau/water/a-1/status", b"online", Reason.INVALID_TOPIC),
    ],
)
def test_bad_status_messages_are_refused(topic: str, payload: bytes, reason: Reason) -> None:
    message = parse_status(topic, payload, NOW)
    assert message.status is None
    assert [r.reason for r in message.rejections] == [reason]

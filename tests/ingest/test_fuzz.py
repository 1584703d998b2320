"""Arbitrary bytes and near-valid JSON: no crash, and every reading ends stored or rejected."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.config import Settings
from devices.contract import METRICS, Kind, telemetry_topic
from devices.schemas import READING_MODELS
from ingest.app import RunningIngest
from ingest.parser import _fast_validate, parse_message
from ingest.schemas import ParsedMessage, Reason
from tests.support import eventually, publish, register

# The parser is pure: the property tests hand it this moment as its clock.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
KIND_TOPICS = {kind: telemetry_topic(kind, "fuzz-1") for kind in Kind}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.just((NOW - timedelta(minutes=1)).isoformat()),
    json_scalars,
)


@st.composite
def near_valid_reading(draw: st.DrawFn, kind: Kind) -> dict[str, object]:
    names = [metric.name for metric in METRICS[kind]]
    reading: dict[str, object] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        reading["ts"] = draw(timestamps)
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))):
        reading[name] = draw(st.one_of(st.floats(-1e4, 1e4), st.integers(-10, 10**6), json_scalars))
    if draw(st.integers(0, 9)) == 0:
        reading[draw(st.text(min_size=1, max_size=8))] = draw(json_scalars)
    return reading


@st.composite
def valid_reading(draw: st.DrawFn, kind: Kind) -> dict[str, object]:
    """A reading within the contract: the fast path must take it and agree with the model."""
    reading: dict[str, object] = {
        "ts": draw(
            st.one_of(
                st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                st.integers(min_value=0, max_value=253_402_300_799_999),
            )
        )
    }
    metrics = METRICS[kind]
    chosen = draw(st.lists(st.sampled_from(metrics), unique=True, min_size=1))
    for metric in chosen:
        low = -1e12 if metric.minimum is None else metric.minimum
        high = 1e12 if metric.maximum is None else metric.maximum
        if metric.integer:
            reading[metric.name] = draw(st.integers(int(low), int(high)))
        else:
            reading[metric.name] = draw(
                st.one_of(st.floats(low, high), st.integers(int(low), int(high)))
            )
    if draw(st.booleans()):
        reading[draw(st.sampled_from(metrics)).name] = None
    return reading


def parse(kind: Kind, payload: bytes) -> ParsedMessage:
    return parse_message(
        KIND_TOPICS[kind], payload, NOW, max_payload_bytes=64 * 1024, late_window=timedelta(days=7)
    )


def accounted(message_rows: int, rejections: int, readings: int) -> bool:
    """Each reading of an array is either a row or a rejection; a whole-message refusal is one."""
    return message_rows + rejections == readings or (message_rows == 0 and rejections == 1)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(Kind)), payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_are_accounted(kind: Kind, payload: bytes) -> None:
    message = parse(kind, payload)
    assert message.rows or message.rejections
    assert all(isinstance(r.reason, Reason) and r.detail for r in message.rejections)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(list(Kind)), as_array=st.booleans())
def test_near_valid_json_is_split_into_rows_and_reasoned_rejections(
    data: st.DataObject, kind: Kind, as_array: bool
) -> None:
    readings = data.draw(st.lists(near_valid_reading(kind), min_size=1, max_size=5))
    document: object = readings if as_array else readings[0]
    # The standard library writes what orjson cannot (integers past 64 bits, Infinity), so the
    # parser sees those too.
    message = parse(kind, json.dumps(document).encode())
    count = len(readings) if as_array else 1
    assert accounted(len(message.rows), len(message.rejections), count)
    for rejection in message.rejections:
        assert rejection.reason in Reason
        assert rejection.detail
    for row in message.rows:
        assert row[0] == "fuzz-1"
        assert row[1].tzinfo is not None


def mutations(seed: int, count: int, now: datetime) -> list[bytes]:
    """A deterministic corpus: valid readings of the last hour before ``now`` with bytes
    flipped, cut, or values swapped."""
    rng = random.Random(seed)
    hour_ago = now.replace(second=0, microsecond=0) - timedelta(hours=1)
    base = hour_ago.isoformat()
    corpus = []
    for n in range(count):
        ts = (hour_ago + timedelta(minutes=n % 60)).isoformat()
        reading = {"ts": ts, "pm2_5": 12.5, "no2": 40.0}
        raw = bytearray(orjson.dumps(reading))
        match n % 5:
            case 0:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            case 1:
                raw = raw[: rng.randrange(len(raw))]
            case 2:
                reading[rng.choice(["pm2_5", "no2", "ts"])] = rng.choice([None, "x", -1, 1e9, []])
                raw = bytearray(orjson.dumps(reading))
            case 3:
                raw = bytearray(orjson.dumps([reading, {"ts": base, "bogus": True}]))
            case _:
                raw = bytearray(rng.randbytes(rng.randrange(1, 40)))
        corpus.append(bytes(raw))
    return corpus


async def test_fuzzed_messages_through_the_pipeline_end_stored_or_rejected(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"fuzz-{unique}"
    await register(db_pool, device, Kind.AIR)
    # Ingest judges each reading against its own clock (7 days late, 5 minutes early at most):
    # the corpus is built around that clock, so the valid part of it is stored on any date.
    now = datetime.now(UTC)
    corpus = mutations(seed=11, count=150, now=now)
    expected = 0
    for payload in corpus:
        message = parse_message(
            telemetry_topic(Kind.AIR, device),
            payload,
            now,
            max_payload_bytes=ingest_settings.ingest.max_payload_bytes,
            late_window=timedelta(seconds=ingest_settings.ingest.late_window_s),
        )
        expected += len(message.rows) + len(message.rejections)
    received_before = ingest.service.totals.received
    await publish(ingest_settings, [(telemetry_topic(Kind.AIR, device), p) for p in corpus])

    async def outcome() -> tuple[int, int]:
        stored = await db_pool.fetchval(
            "SELECT count(*) FROM air_readings WHERE device_id = $1", device
        )
        rejected = await db_pool.fetchval(
            "SELECT count(*) FROM ingest_rejections WHERE device_id = $1", device
        )
        return stored, rejected

    stored, rejected = await eventually(
        outcome, lambda r: ingest.service.totals.received - received_before >= expected
    )
    duplicates = ingest.service.totals.received - received_before - stored - rejected
    assert stored + rejected + duplicates == expected
    assert stored > 0
    assert rejected > 0
    reasons = await db_pool.fetch(
        "SELECT DISTINCT reason FROM ingest_rejections WHERE device_id = $1", device
    )
    assert {r["reason"] for r in reasons} <= {reason.value for reason in Reason}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(list(Kind)))
def test_the_fast_path_accepts_exactly_what_the_model_accepts_with_the_same_values(
    data: st.DataObject, kind: Kind
) -> None:
    drawn = data.draw(st.one_of(valid_reading(kind), near_valid_reading(kind)))
    reading = json.loads(json.dumps(drawn))
    fast = _fast_validate(kind, reading)
    try:
        model = READING_MODELS[kind].model_validate(reading)
    except ValidationError:
        assert fast is None
        return
    assert fast is not None
    ts, values = fast
    assert ts == model.ts
    expected = [getattr(model, name) for name in model.metric_fields()]
    assert values == expected
    assert [type(v) for v in values] == [type(v) for v in expected]

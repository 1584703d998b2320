"""Faulty firmware without a broker: what each mode sends, judged by ingest's own parser."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from devices.contract import Kind, telemetry_topic
from ingest.parser import parse_message
from ingest.schemas import Reason
from simulators.faults import (
    BACKLOG_CHUNK,
    EXPECTED_REJECTION,
    MESSAGE_FAULTS,
    READING_FAULTS,
    DeviceFaults,
    Drop,
    FaultMode,
    FaultPlan,
    Send,
    Step,
    expected_rejections,
)
from simulators.fleet import build_fleet
from simulators.models import DeviceStream
from simulators.schemas import FaultCounts, SimDevice

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
RECEIVED = START + timedelta(days=1)
FLEET = build_fleet(2, seed=4, prefix="f")
MESSAGES = 60
EVERY_FAULT = FaultPlan(
    rates={**dict.fromkeys(READING_FAULTS, 0.05), **dict.fromkeys(MESSAGE_FAULTS, 0.04)},
    gap_messages=3,
    burst_messages=3,
    late_messages=4,
)


def run_device(
    device: SimDevice, plan: FaultPlan, batch_size: int, counts: FaultCounts, seed: int = 4
) -> list[Step]:
    stream = DeviceStream(device, seed=4, start=START, step_s=60)
    faults = DeviceFaults(
        plan,
        seed=seed,
        device_id=device.device_id,
        kind=device.kind,
        batched=batch_size > 1,
        counts=counts,
    )
    steps: list[Step] = []
    for _ in range(MESSAGES):
        steps.extend(faults.shape(stream.take(batch_size), RECEIVED))
    return [*steps, *faults.finish()]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_every_fault_is_refused_or_deduplicated_exactly_as_counted(batch_size: int) -> None:
    counts = FaultCounts()
    reasons: Counter[str] = Counter()
    rows: list[tuple[str, datetime]] = []
    good: set[tuple[str, datetime]] = set()
    dropped = 0
    accounted = 0
    sent_ts: dict[str, list[str]] = {}
    for device in FLEET:
        for step in run_device(device, EVERY_FAULT, batch_size, counts):
            if isinstance(step, Drop):
                dropped += 1
                continue
            parsed = parse_message(
                telemetry_topic(device.kind, device.device_id),
                step.payload,
                RECEIVED,
                max_payload_bytes=1 << 20,
                late_window=timedelta(days=7),
            )
            reasons.update(rejection.reason.value for rejection in parsed.rejections)
            rows.extend((row[0], row[1]) for row in parsed.rows)
            good.update((device.device_id, datetime.fromisoformat(r["ts"])) for r in step.good)
            sent_ts.setdefault(device.device_id, []).extend(r["ts"] for r in step.good)
            if not step.duplicate:
                accounted += len(step.good) + len(step.bad)

    injected = counts.injected
    for mode in (*READING_FAULTS, *MESSAGE_FAULTS):
        assert injected[mode.value] > 0, mode  # this seed exercises every mode
    assert dict(reasons) == expected_rejections(counts)
    assert set(rows) == good
    assert len(rows) - len(set(rows)) == counts.duplicate_readings > 0
    assert dropped == injected[FaultMode.DROPOUT.value]
    # Every simulated reading went out exactly once (duplicates aside), good or faulty.
    assert accounted == len(FLEET) * MESSAGES * batch_size
    assert any(
        any(a > b for a, b in itertools.pairwise(ts)) for ts in sent_ts.values()
    )  # out-of-order and late readings really arrive out of order


def test_a_backlog_is_one_json_array_even_from_a_single_reading_device() -> None:
    plan = FaultPlan(rates={FaultMode.OFFLINE_GAP: 0.2}, gap_messages=4)
    counts = FaultCounts()
    steps = run_device(FLEET[0], plan, 1, counts)
    sends = [step for step in steps if isinstance(step, Send)]
    arrays = [send for send in sends if send.payload.startswith(b"[")]
    assert counts.injected[FaultMode.OFFLINE_GAP.value] == len(arrays) > 0
    assert all(len(send.good) == 4 for send in arrays[:-1])
    assert counts.backlog_readings == sum(len(send.good) for send in arrays)
    assert sum(len(send.good) for send in sends) == MESSAGES  # nothing lost, nothing added


def test_faults_depend_only_on_the_seed() -> None:
    def payloads(seed: int) -> list[bytes]:
        steps = run_device(FLEET[3], EVERY_FAULT, 2, FaultCounts(), seed=seed)
        return [step.payload if isinstance(step, Send) else b"drop" for step in steps]

    assert payloads(1) == payloads(1)
    assert payloads(1) != payloads(2)


def test_each_rejected_fault_maps_to_a_documented_reason() -> None:
    assert set(EXPECTED_REJECTION.values()) <= {reason.value for reason in Reason}


def test_faults_parse_from_the_command_line() -> None:
    plan = FaultPlan.parse(["malformed_json=0.01", "late=0.2", "gap_messages=20", "skew_s=900"])
    assert plan.rates == {FaultMode.MALFORMED_JSON: 0.01, FaultMode.LATE: 0.2}
    assert (plan.gap_messages, plan.skew_s) == (20, 900.0)
    assert plan.active
    assert not FaultPlan.parse(["meter_reset=0.1"]).active


@pytest.mark.parametrize(
    "specs",
    [
        ["malformed_json"],
        ["smoke=0.1"],
        ["late=abc"],
        ["late=1.5"],
        ["wrong_type=0.6", "out_of_range=0.6"],
        ["skew_s=60"],  # within ingest's 5-minute tolerance: would not be refused
        ["gap_messages=0"],
    ],
)
def test_impossible_faults_are_refused(specs: list[str]) -> None:
    with pytest.raises((ValueError, ValidationError)):
        FaultPlan.parse(specs)


def test_a_long_backlog_is_split_below_ingest_payload_limit() -> None:
    plan = FaultPlan(rates={FaultMode.OFFLINE_GAP: 1.0}, gap_messages=3)
    device = next(d for d in FLEET if d.kind is Kind.AIR)
    stream = DeviceStream(device, seed=4, start=START, step_s=1)
    faults = DeviceFaults(plan, seed=4, device_id=device.device_id, kind=device.kind, batched=True)
    steps = [step for _ in range(3) for step in faults.shape(stream.take(400), RECEIVED)]
    sends = [step for step in steps if isinstance(step, Send)]
    assert [len(send.good) for send in sends] == [BACKLOG_CHUNK, BACKLOG_CHUNK, 200]
    assert all(len(send.payload) < 256 * 1024 for send in sends)

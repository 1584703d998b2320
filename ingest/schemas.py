"""What flows through ingest: parsed messages, rows ready for COPY, rejections and their reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from devices.contract import Kind


class Reason(StrEnum):
    """Stable codes of why a reading was refused; stored, served by the API and documented."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    EMPTY_BATCH = "empty_batch"
    BATCH_TOO_LARGE = "batch_too_large"
    INVALID_TOPIC = "invalid_topic"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NO_METRICS = "no_metrics"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_DISABLED = "device_disabled"
    KIND_MISMATCH = "kind_mismatch"
    INVALID_STATUS = "invalid_status"
    STORAGE_ERROR = "storage_error"
    TOPIC_DENIED = "topic_denied"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


REASON_DESCRIPTIONS: Final[dict[Reason, str]] = {
    Reason.PAYLOAD_TOO_LARGE: "the message is larger than the configured maximum payload size",
    Reason.NOT_UTF8: "the payload is not UTF-8 text",
    Reason.INVALID_JSON: "the payload is not JSON",
    Reason.NOT_AN_OBJECT: "a reading must be a JSON object (or an array of objects)",
    Reason.EMPTY_BATCH: "the payload is an empty array",
    Reason.BATCH_TOO_LARGE: "an array payload holds more than 1,000 readings",
    Reason.INVALID_TOPIC: "the topic is not alatau/{kind}/{device_id}/telemetry (or .../status)"
    " of a known kind, e.g. alatau/traffic/t-1/telemetry/extra",
    Reason.UNKNOWN_FIELD: "the reading has a field its kind does not define",
    Reason.MISSING_FIELD: "the reading has no ts",
    Reason.INVALID_TIMESTAMP: "ts is neither RFC 3339 with an offset nor epoch milliseconds",
    Reason.WRONG_TYPE: "a metric has the wrong JSON type (e.g. a string, or a float for a count)",
    Reason.OUT_OF_RANGE: "a metric is outside its physical range",
    Reason.NO_METRICS: "the reading carries no metric of its kind",
    Reason.FUTURE_TIMESTAMP: "ts is more than 5 minutes in the future",
    Reason.TOO_OLD: "ts is older than the late-reading window",
    Reason.UNKNOWN_DEVICE: "the device is not registered",
    Reason.DEVICE_DISABLED: "the device is registered but disabled",
    Reason.KIND_MISMATCH: "the device is registered under another kind than the topic's",
    Reason.INVALID_STATUS: "a status message says neither online nor offline",
    Reason.STORAGE_ERROR: "the database refused the reading itself (not an outage)",
    Reason.TOPIC_DENIED: "the broker refused a device's publish or subscription on a topic that"
    " is not its own (Mosquitto: reported by the broker's refusals plugin; city edge: recorded"
    " by the api, which answers the broker's topic check)",
    Reason.CONFLICTING_DUPLICATE: "a reading with the device and ts of a stored one but other"
    " values; the stored one is kept, the detail shows both (an exact repeat is not refused)",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    received_at: datetime
    topic: str
    kind: str | None
    device_id: str | None
    reason: Reason
    detail: str
    payload: bytes
    # The reading's ts as the device sent it, when known: echoed back so firmware can match.
    ts: Any = None

    def record(self) -> tuple[Any, ...]:
        return (
            self.received_at,
            self.topic,
            self.kind,
            self.device_id,
            self.reason.value,
            self.detail,
            self.payload,
        )


REJECTION_COLUMNS: Final = (
    "received_at",
    "topic",
    "kind",
    "device_id",
    "reason",
    "detail",
    "payload",
)


@dataclass(slots=True)
class ParsedMessage:
    """One MQTT message after validation: rows ready for COPY, and what was refused in it."""

    topic: str
    payload: bytes
    received_at: datetime
    kind: Kind | None
    device_id: str | None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    device_checked: bool = False
    status: str | None = None

    @property
    def size(self) -> int:
        """Readings in the message, stored or refused; an unusable payload or a status is one."""
        return len(self.rows) + len(self.rejections) + (self.status is not None)

    def reject_all(self, reason: Reason, detail: str) -> None:
        """Refuse every reading of the message at once, keeping the whole payload once."""
        ts = self.rows[0][1].isoformat() if len(self.rows) == 1 else None
        self.rows = []
        self.rejections = []
        self.rejections.append(
            Rejection(
                self.received_at,
                self.topic,
                self.kind.value if self.kind else None,
                self.device_id,
                reason,
                detail,
                self.payload,
                ts,
            )
        )


@dataclass(frozen=True, slots=True)
class FlushResult:
    received: int
    inserted: int
    duplicates: int
    rejected: int

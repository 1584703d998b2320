"""Turns one MQTT message into rows and rejections. Pure: no I/O, so it can be fuzzed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from pydantic import ValidationError

from devices.contract import (
    FUTURE_TOLERANCE,
    MAX_BATCH_READINGS,
    METRICS,
    REFUSALS_TOPIC,
    TOPIC_ROOT,
    Kind,
    is_valid_device_id,
    metric_names,
)
from devices.schemas import READING_MODELS, parse_timestamp
from ingest.schemas import ParsedMessage, Reason, Rejection

_KINDS: Final = {kind.value: kind for kind in Kind}
_METRIC_NAMES: Final = {kind: metric_names(kind) for kind in Kind}
_FIELDS: Final = {kind: frozenset({"ts", *metric_names(kind)}) for kind in Kind}
_CHECKS: Final = {
    kind: tuple(
        (metric.name, metric.integer, metric.minimum, metric.maximum) for metric in METRICS[kind]
    )
    for kind in Kind
}

# When a reading breaks several rules, the reason reported is the first of these that applies.
_REASON_ORDER: Final = (
    Reason.UNKNOWN_FIELD,
    Reason.MISSING_FIELD,
    Reason.INVALID_TIMESTAMP,
    Reason.WRONG_TYPE,
    Reason.OUT_OF_RANGE,
    Reason.NO_METRICS,
)
_RANGE_ERRORS: Final = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)


_STATUSES: Final = frozenset({"online", "offline"})


def parse_topic(topic: str, leaf: str = "telemetry") -> tuple[Kind, str] | None:
    """``alatau/{kind}/{device_id}/{leaf}`` to (kind, device_id), or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or parts[3] != leaf:
        return None
    kind = _KINDS.get(parts[1])
    if kind is None or not is_valid_device_id(parts[2]):
        return None
    return kind, parts[2]


def _classify(error: ValidationError) -> tuple[Reason, str]:
    found: list[Reason] = []
    details = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "reading"
        details.append(f"{location}: {item['msg']}")
        kind = item["type"]
        if kind == "extra_forbidden":
            found.append(Reason.UNKNOWN_FIELD)
        elif kind == "missing":
            found.append(Reason.MISSING_FIELD)
        elif item["loc"] == ("ts",):
            found.append(Reason.INVALID_TIMESTAMP)
        elif kind in _RANGE_ERRORS:
            found.append(Reason.OUT_OF_RANGE)
        elif not item["loc"]:
            found.append(Reason.NO_METRICS)
        else:
            found.append(Reason.WRONG_TYPE)
    reason = min(found, key=_REASON_ORDER.index) if found else Reason.WRONG_TYPE
    return reason, "; ".join(details)


def parse_status(topic: str, payload: bytes, received_at: datetime) -> ParsedMessage:
    """A device's retained ``online``/``offline`` (its Last Will); anything else is refused."""
    target = parse_topic(topic, leaf="status")
    kind, device_id = target if target is not None else (None, None)
    message = ParsedMessage(topic, payload, received_at, kind, device_id)
    if kind is None or device_id is None:
        message.reject_all(Reason.INVALID_TOPIC, f"topic {topic!r} is not a status topic")
        return message
    status = payload.decode("utf-8", errors="replace").strip().lower()
    if status in _STATUSES:
        message.status = status
    else:
        message.reject_all(Reason.INVALID_STATUS, f"status {status[:64]!r}: online or offline")
    return message


def device_of_topic(topic: str) -> tuple[Kind, str] | None:
    """The (kind, device id) a topic under ``alatau/{kind}/{device_id}/`` belongs to, whatever
    follows; the broker lets only that device publish there."""
    parts = topic.split("/", 3)
    if len(parts) < 3 or parts[0] != TOPIC_ROOT:
        return None
    kind = _KINDS.get(parts[1])
    if kind is None or not is_valid_device_id(parts[2]):
        return None
    return kind, parts[2]


def parse_unrouted(topic: str, payload: bytes, received_at: datetime) -> ParsedMessage:
    """A message on a topic that is neither telemetry nor status: refused, with the device the
    topic names when it names one."""
    owner = device_of_topic(topic)
    kind, device_id = owner if owner is not None else (None, None)
    message = ParsedMessage(topic, payload, received_at, kind, device_id)
    message.reject_all(
        Reason.INVALID_TOPIC,
        f"topic {topic!r} is neither {TOPIC_ROOT}/{{kind}}/{{device_id}}/telemetry nor .../status",
    )
    # The reason is the topic, whoever the device is.
    message.device_checked = True
    return message


def parse_refusal(payload: bytes, received_at: datetime) -> ParsedMessage:
    """A notice of Mosquitto's refusals plugin (stack/mosquitto_refusals.c): a publish or a
    subscription the broker refused, kept as a ``topic_denied`` rejection of that device."""
    try:
        notice = orjson.loads(payload)
        topic, username = str(notice["topic"]), notice.get("username")
        action = "publish on" if notice["access"] == "publish" else "subscribe to"
        refused = bytes.fromhex(notice.get("payload_hex") or "")
        client_id = notice.get("client_id")
        size = int(notice.get("payload_bytes") or 0)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        message = ParsedMessage(REFUSALS_TOPIC, payload, received_at, None, None)
        message.reject_all(Reason.TOPIC_DENIED, f"the broker refused something: {exc!r}")
        message.device_checked = True
        return message
    device_id = username if isinstance(username, str) and is_valid_device_id(username) else None
    message = ParsedMessage(topic, refused, received_at, None, device_id)
    kept = "" if size == len(refused) else f" (the first {len(refused)} of {size} bytes kept)"
    message.reject_all(
        Reason.TOPIC_DENIED,
        f"the broker refused {username!r} (client {client_id!r}) to {action} {topic!r}: a device"
        f" may publish only under {TOPIC_ROOT}/{{its kind}}/{{its id}}/ and subscribe only to its"
        f" errors topic{kept}",
    )
    message.device_checked = True
    return message


def parse_delivery(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_payload_bytes: int,
    late_window: timedelta,
) -> ParsedMessage:
    """Whatever reached ingest on ``topic``, from either edge: telemetry, a status, a refusal
    the broker reports, or a message on a topic no part of the contract defines."""
    leaf = topic.rpartition("/")[2]
    if leaf == "telemetry":
        return parse_message(
            topic,
            payload,
            received_at,
            max_payload_bytes=max_payload_bytes,
            late_window=late_window,
        )
    if leaf == "status":
        return parse_status(topic, payload, received_at)
    if topic == REFUSALS_TOPIC:
        return parse_refusal(payload, received_at)
    return parse_unrouted(topic, payload, received_at)


def parse_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_payload_bytes: int,
    late_window: timedelta,
) -> ParsedMessage:
    """Validate a telemetry message; a bad reading inside an array rejects only itself."""
    target = parse_topic(topic)
    kind, device_id = target if target is not None else (None, None)
    message = ParsedMessage(topic, payload, received_at, kind, device_id)
    if kind is None or device_id is None:
        message.reject_all(Reason.INVALID_TOPIC, f"topic {topic!r} is not a telemetry topic")
        return message
    document = _document(message, max_payload_bytes)
    if message.rejections:
        return message
    window = (received_at - late_window, received_at + FUTURE_TOLERANCE)
    if isinstance(document, dict):
        _add_reading(message, kind, device_id, document, raw=payload, window=window, is_batch=False)
        return message
    if not isinstance(document, list):
        message.reject_all(Reason.NOT_AN_OBJECT, f"payload is a JSON {type(document).__name__}")
        return message
    if not document:
        message.reject_all(Reason.EMPTY_BATCH, "the array holds no reading")
        return message
    if len(document) > MAX_BATCH_READINGS:
        message.reject_all(
            Reason.BATCH_TOO_LARGE,
            f"{len(document)} readings; at most {MAX_BATCH_READINGS} per message",
        )
        return message
    for element in document:
        _add_reading(message, kind, device_id, element, raw=None, window=window, is_batch=True)
    return message


def _document(message: ParsedMessage, max_payload_bytes: int) -> Any:
    """The payload's JSON; on a payload too large, not UTF-8 or not JSON, the message is
    refused whole and None returned."""
    payload = message.payload
    if len(payload) > max_payload_bytes:
        message.reject_all(
            Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes; the limit is {max_payload_bytes}"
        )
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            message.reject_all(Reason.NOT_UTF8, str(utf8_error))
        else:
            message.reject_all(Reason.INVALID_JSON, str(exc))
        return None


def _add_reading(
    message: ParsedMessage,
    kind: Kind,
    device_id: str,
    element: Any,
    *,
    raw: bytes | None,
    window: tuple[datetime, datetime],
    is_batch: bool,
) -> None:
    def reject(reason: Reason, detail: str) -> None:
        message.rejections.append(
            Rejection(
                message.received_at,
                message.topic,
                kind.value,
                device_id,
                reason,
                detail,
                raw if raw is not None else orjson.dumps(element),
                element.get("ts") if isinstance(element, dict) else None,
            )
        )

    if not isinstance(element, dict):
        where = "array element" if is_batch else "payload"
        reject(Reason.NOT_AN_OBJECT, f"{where} is a JSON {type(element).__name__}")
        return
    accepted = _fast_validate(kind, element)
    if accepted is None:
        # The pydantic model is the contract's authority: it decides, and says why.
        try:
            reading = READING_MODELS[kind].model_validate(element)
        except ValidationError as exc:
            reject(*_classify(exc))
            return
        accepted = reading.ts, [getattr(reading, name) for name in _METRIC_NAMES[kind]]
    ts, values = accepted
    oldest, newest = window
    if ts > newest:
        reject(Reason.FUTURE_TIMESTAMP, f"ts {ts.isoformat()} is ahead of the server clock")
        return
    if ts < oldest:
        reject(
            Reason.TOO_OLD,
            f"ts {ts.isoformat()} is older than the late window ({message.received_at - oldest})",
        )
        return
    message.rows.append((device_id, ts, message.received_at, *values))


def _fast_validate(kind: Kind, element: dict[str, Any]) -> tuple[datetime, list[Any]] | None:
    """The common case without pydantic: a reading that is plainly valid, with the values the
    model would produce. None means "let the model decide", never "invalid"; a test checks the
    two agree on every reading."""
    if not element.keys() <= _FIELDS[kind]:
        return None
    try:
        ts = parse_timestamp(element.get("ts"))
    except ValueError:
        return None
    values: list[Any] = []
    has_metric = False
    for name, integer, minimum, maximum in _CHECKS[kind]:
        value = element.get(name)
        if value is None:
            values.append(None)
            continue
        value_type = type(value)
        if integer:
            if value_type is not int:
                return None
        elif value_type is int:
            value = float(value)
        elif value_type is not float:
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            return None
        values.append(value)
        has_metric = True
    return (ts, values) if has_metric else None

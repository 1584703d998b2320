"""The one spelling of every timestamp the api writes (REST, SSE, WebSocket, alert feed).

RFC 3339 in UTC with ``Z`` and exactly six fraction digits (``2026-12-02T09:15:00.000000Z``):
microseconds are what the database stores, so a timestamp read from the api and sent back in a
query names exactly the same instant. The city calendar's day, week and month buckets are the
one exception: they are written at Almaty's offset (``2026-12-02T00:00:00.000000+05:00``), so a
day bucket reads as the local midnight it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import orjson
from pydantic import PlainSerializer, WithJsonSchema

CITY_ZONE: Final = ZoneInfo("Asia/Almaty")
_JSON_SCHEMA: Final = {"type": "string", "format": "date-time"}


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"refusing to write a naive timestamp: {value!r}")


def format_utc(value: datetime) -> str:
    """``value`` in UTC: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    _require_aware(value)
    # isoformat pads the year to four digits, which strftime's %Y does not on every platform.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def format_city(value: datetime) -> str:
    """``value`` at Almaty's offset: ``YYYY-MM-DDTHH:MM:SS.ffffff+05:00`` (calendar buckets)."""
    _require_aware(value)
    return value.astimezone(CITY_ZONE).isoformat(timespec="microseconds")


def format_bucket(value: datetime) -> str:
    """A bucket start: at Almaty's offset when it carries the city's zone (the calendar buckets
    the aggregates service labels so), else in UTC."""
    zone = value.tzinfo
    if isinstance(zone, ZoneInfo) and zone.key == CITY_ZONE.key:
        return format_city(value)
    return format_utc(value)


# A datetime field of a response model: always written by ``format_utc``.
UtcTimestamp = Annotated[
    datetime,
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    WithJsonSchema(_JSON_SCHEMA, mode="serialization"),
]
# An aggregate's bucket start: ``format_bucket``.
BucketTimestamp = Annotated[
    datetime,
    PlainSerializer(format_bucket, return_type=str, when_used="json"),
    WithJsonSchema(_JSON_SCHEMA, mode="serialization"),
]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_utc(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(document: Any) -> bytes:
    """JSON bytes of a plain document (the live feeds' events), timestamps by ``format_utc``."""
    return orjson.dumps(document, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)

"""Bucket parsing, bucket counting and cursors, without the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.service import decode_cursor, encode_cursor
from core.errors import Invalid
from rollups.buckets import parse_bucket


@pytest.mark.parametrize(
    ("text", "interval", "city_calendar"),
    [
        ("30s", "30 seconds", False),
        ("1m", "1 minutes", False),
        ("15m", "15 minutes", False),
        ("6h", "6 hours", False),
        ("1d", "1 days", True),
        ("7d", "7 days", True),
        ("2w", "14 days", True),
        ("1mo", "1 months", True),
        ("3mo", "3 months", True),
    ],
)
def test_parse_bucket(text: str, interval: str, city_calendar: bool) -> None:
    bucket = parse_bucket(text)
    assert (bucket.interval, bucket.city_calendar, bucket.text) == (interval, city_calendar, text)


def test_bucket_counts() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_bucket("1m").count_between(start, start + timedelta(hours=1)) == 60
    assert parse_bucket("1m").count_between(start, start + timedelta(seconds=61)) == 2
    assert parse_bucket("1d").count_between(start, start + timedelta(days=30)) == 30
    # 2025-01-01T00:00Z is already January 1st 05:00 in Almaty; to is 2025-12-31 05:00 there.
    assert parse_bucket("1mo").count_between(start, datetime(2025, 12, 31, tzinfo=UTC)) == 12
    assert parse_bucket("3mo").count_between(start, datetime(2025, 12, 31, tzinfo=UTC)) == 4


def test_too_long_buckets_are_refused() -> None:
    for text in ("121mo", "3654d", "600w"):
        with pytest.raises(Invalid):
            parse_bucket(text)


def test_cursor_round_trip_keeps_microseconds() -> None:
    ts = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    cursor = encode_cursor(ts)
    assert "=" not in cursor
    assert decode_cursor(cursor) == ts


@pytest.mark.parametrize("cursor", ["", "!!!", "djE6bm90LWEtZGF0ZQ", "djI6MjAyNS0wNi0wMVQxMjowMA"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(Invalid) as raised:
        decode_cursor(cursor)
    assert raised.value.code == "invalid_cursor"

"""Bucket widths and the city's calendar: the one place that parses ``5m``/``1d``/``1mo``, floors
and steps timestamps to buckets, and knows Almaty's time zone.

Everything here mirrors TimescaleDB's ``time_bucket`` with its default origin (Monday
2000-01-03): fixed widths align to it in UTC; days, weeks and months (the city calendar) to
its midnight in Asia/Almaty, so Python and SQL always agree on where a bucket starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from core.errors import Invalid

CITY_TIMEZONE: Final = "Asia/Almaty"
CITY_ZONE: Final = ZoneInfo(CITY_TIMEZONE)
ORIGIN: Final = datetime(2000, 1, 3)

_BUCKET_RE: Final = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d|w|mo)$")
# unit -> (SQL units per unit, SQL interval unit, seconds per SQL unit, follows the city calendar)
_UNITS: Final[dict[str, tuple[int, str, int, bool]]] = {
    "s": (1, "seconds", 1, False),
    "m": (1, "minutes", 60, False),
    "h": (1, "hours", 3600, False),
    "d": (1, "days", 86_400, True),
    "w": (7, "days", 86_400, True),
    "mo": (1, "months", 0, True),
}
_MAX_MONTHS: Final = 120
_MAX_SECONDS: Final = 3653 * 86_400


class InvalidBucket(Invalid):
    default_code = "invalid_bucket"


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket width: ``interval`` is what Postgres reads; ``city_calendar`` buckets (days and
    longer) start at Almaty midnight, shorter ones are fixed lengths aligned in UTC."""

    text: str
    interval: str
    city_calendar: bool
    seconds: int  # 0 for months, whose length varies
    months: int

    @property
    def timezone(self) -> str | None:
        """The zone ``time_bucket`` is given for this width (None: UTC)."""
        return CITY_TIMEZONE if self.city_calendar else None

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many buckets ``[start, end)`` spans; used to refuse, never to truncate."""
        if self.months:
            first, last = start.astimezone(CITY_ZONE), end.astimezone(CITY_ZONE)
            span = (last.year - first.year) * 12 + (last.month - first.month) + 1
            return math.ceil(span / self.months)
        return math.ceil((end - start).total_seconds() / self.seconds)

    def floor(self, ts: datetime) -> datetime:
        """The start of the bucket holding ``ts``, as ``time_bucket`` labels it (UTC)."""
        if self.months:
            local = ts.astimezone(CITY_ZONE)
            index = (local.year - ORIGIN.year) * 12 + local.month - 1
            index -= index % self.months
            start = datetime(ORIGIN.year + index // 12, index % 12 + 1, 1, tzinfo=CITY_ZONE)
            return start.astimezone(UTC)
        step = timedelta(seconds=self.seconds)
        zone = CITY_ZONE if self.city_calendar else UTC
        naive = ts.astimezone(zone).replace(tzinfo=None)
        return (ORIGIN + (naive - ORIGIN) // step * step).replace(tzinfo=zone).astimezone(UTC)

    def following(self, start: datetime) -> datetime:
        """The start of the bucket after the one starting at ``start``."""
        if self.months:
            local = start.astimezone(CITY_ZONE)
            index = local.year * 12 + local.month - 1 + self.months
            return datetime(index // 12, index % 12 + 1, 1, tzinfo=CITY_ZONE).astimezone(UTC)
        # Almaty keeps no daylight saving: a local day is always 24 hours.
        return start + timedelta(seconds=self.seconds)

    def ceil(self, ts: datetime) -> datetime:
        """The first bucket start at or after ``ts``."""
        floor = self.floor(ts)
        return floor if floor == ts else self.following(floor)

    def starts(self, start: datetime, end: datetime) -> list[datetime]:
        """Every bucket start overlapping ``[start, end)``."""
        found = []
        cursor = self.floor(start)
        while cursor < end:
            found.append(cursor)
            cursor = self.following(cursor)
        return found


def parse_bucket(text: str) -> Bucket:
    """Parse ``<n><unit>`` with unit s, m, h, d, w or mo; anything else is ``invalid_bucket``."""
    match = _BUCKET_RE.fullmatch(text)
    if match is None:
        raise InvalidBucket(
            f"bucket {text!r} is not <number><unit> with unit s, m, h, d, w or mo "
            "(e.g. 1m, 15m, 1h, 1d, 1mo)"
        )
    multiplier, sql_unit, unit_seconds, city_calendar = _UNITS[match.group(2)]
    count = int(match.group(1)) * multiplier
    if sql_unit == "months":
        if count > _MAX_MONTHS:
            raise InvalidBucket(f"bucket {text!r} is longer than 10 years")
        return Bucket(text, f"{count} months", True, 0, count)
    seconds = count * unit_seconds
    if seconds > _MAX_SECONDS:
        raise InvalidBucket(f"bucket {text!r} is longer than 10 years")
    return Bucket(text, f"{count} {sql_unit}", city_calendar, seconds, 0)


MINUTE: Final = parse_bucket("1m")
HOUR: Final = parse_bucket("1h")
DAY: Final = parse_bucket("1d")

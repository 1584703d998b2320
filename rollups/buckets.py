"""Aggregate bucket widths: parsing ``5m``/``1d``/``1mo`` and counting how many a range needs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from api.errors import InvalidQuery

CITY_TIMEZONE: Final = "Asia/Almaty"
CITY_ZONE: Final = ZoneInfo(CITY_TIMEZONE)

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


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket width: ``interval`` is what Postgres reads; ``city_calendar`` buckets (days and
    longer) start at Almaty midnight, shorter ones are fixed lengths aligned in UTC."""

    text: str
    interval: str
    city_calendar: bool
    seconds: int  # 0 for months, whose length varies
    months: int

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many buckets ``[start, end)`` spans; used to refuse, never to truncate."""
        if self.months:
            first, last = start.astimezone(CITY_ZONE), end.astimezone(CITY_ZONE)
            span = (last.year - first.year) * 12 + (last.month - first.month) + 1
            return math.ceil(span / self.months)
        return math.ceil((end - start).total_seconds() / self.seconds)


def parse_bucket(text: str) -> Bucket:
    """Parse ``<n><unit>`` with unit s, m, h, d, w or mo; anything else is a 422."""
    match = _BUCKET_RE.fullmatch(text)
    if match is None:
        raise InvalidQuery(
            f"bucket {text!r} is not <number><unit> with unit s, m, h, d, w or mo "
            "(e.g. 1m, 15m, 1h, 1d, 7d, 1mo)",
            code="invalid_bucket",
        )
    multiplier, sql_unit, unit_seconds, city_calendar = _UNITS[match.group(2)]
    count = int(match.group(1)) * multiplier
    if sql_unit == "months":
        if count > _MAX_MONTHS:
            raise InvalidQuery(f"bucket {text!r} is longer than 10 years", code="invalid_bucket")
        return Bucket(text, f"{count} months", True, 0, count)
    seconds = count * unit_seconds
    if seconds > _MAX_SECONDS:
        raise InvalidQuery(f"bucket {text!r} is longer than 10 years", code="invalid_bucket")
    return Bucket(text, f"{count} {sql_unit}", city_calendar, seconds, 0)

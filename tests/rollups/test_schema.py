"""The rollup tier tables the migrations create have exactly the columns the tier SQL writes and
reads (rollups/schemas.py ``tier_columns``, derived from the metric contract)."""

from __future__ import annotations

import asyncpg

from devices.contract import METRICS_BY_NAME, Kind
from rollups.schemas import (
    AREA_TIERS,
    ROLLED_TIERS,
    area_columns,
    area_table,
    rollup_table,
    tier_columns,
)
from tests.test_migrations import columns_of


def expected_type(kind: Kind, column: str) -> str:
    """Counts are integers; sums of integer metrics are bigints; the rest follow the metric."""
    if column == "readings" or column.endswith("_n"):
        return "integer"
    name, _, part = column.rpartition("_")
    metric = METRICS_BY_NAME[kind][name]
    if not metric.integer:
        return "double precision"
    return "bigint" if part == "sum" else "integer"


async def test_each_tier_table_has_the_columns_the_tier_sql_uses(db_pool: asyncpg.Pool) -> None:
    for kind in Kind:
        for tier in ROLLED_TIERS:
            expected = [("device_id", "text"), ("bucket", "timestamp with time zone")] + [
                (column, expected_type(kind, column)) for column in tier_columns(kind)
            ]
            assert await columns_of(db_pool, rollup_table(kind, tier)) == expected, (kind, tier)


def expected_area_type(kind: Kind, column: str) -> str:
    return "double precision" if column.endswith("_increase") else expected_type(kind, column)


async def test_each_area_tier_table_has_the_columns_the_area_sql_uses(
    db_pool: asyncpg.Pool,
) -> None:
    for kind in Kind:
        for tier in AREA_TIERS:
            expected = [("area", "text"), ("bucket", "timestamp with time zone")] + [
                (column, expected_area_type(kind, column)) for column in area_columns(kind)
            ]
            assert await columns_of(db_pool, area_table(kind, tier)) == expected, (kind, tier)

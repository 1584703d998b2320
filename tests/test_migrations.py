"""The raw hypertables the migrations create mirror the metric contract (devices/contract.py),
column for column, so the contract's names and types are what ingest COPYs and the api reads."""

from __future__ import annotations

import asyncpg

from devices.contract import METRICS, Kind, readings_table

_SQL_TYPES = {"integer": "integer", "double precision": "double precision"}


async def columns_of(pool: asyncpg.Pool, table: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(row["column_name"], row["data_type"]) for row in rows]


async def test_each_raw_table_has_the_contract_metrics_in_order(db_pool: asyncpg.Pool) -> None:
    for kind in Kind:
        expected = [
            ("device_id", "text"),
            ("ts", "timestamp with time zone"),
            ("received_at", "timestamp with time zone"),
        ] + [(metric.name, _SQL_TYPES[metric.sql_type]) for metric in METRICS[kind]]
        assert await columns_of(db_pool, readings_table(kind)) == expected, kind


async def test_each_raw_table_is_a_hypertable_unique_on_device_and_ts(
    db_pool: asyncpg.Pool,
) -> None:
    for kind in Kind:
        table = readings_table(kind)
        dimension = await db_pool.fetchval(
            "SELECT column_name FROM timescaledb_information.dimensions WHERE hypertable_name = $1",
            table,
        )
        assert dimension == "ts", table
        unique = await db_pool.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype = 'u'",
            table,
        )
        assert unique == "UNIQUE (device_id, ts)", table

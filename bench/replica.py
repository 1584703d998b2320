"""How stale a hot standby's answers are while the primary takes ingest-sized writes.

    .venv/bin/python -m bench.replica [--seconds 30] [--rate 10000] [--batch 5000]

A private primary and a standby (pg_basebackup -R, as ``stack.run --standby``). A writer COPYs
air readings into the primary in batches, paced to ``--rate`` rows/s (0: as fast as it can);
after each commit it notes the primary's WAL position. A watcher polls the standby's replay
position every few milliseconds: a batch's visibility lag is the time from its commit until
the standby has replayed past it, which is how much older a replica answer can be than the
primary's. The health check's ``replica_lag_s`` is sampled alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from api import repository
from migrations.runner import migrate
from stack.services import PostgresCluster, StandbyCluster, free_port, remove_tree

POLL_S = 0.002
DEVICES = 1000
COLUMNS = ["device_id", "ts", "pm2_5", "humidity_pct"]


@dataclass
class Run:
    lags_s: list[float] = field(default_factory=list)
    health_lags_s: list[float] = field(default_factory=list)
    rows: int = 0
    pending: list[tuple[float, str]] = field(default_factory=list)
    writing: bool = True


async def _writer(primary: asyncpg.Pool, run: Run, seconds: float, rate: int, batch: int) -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    try:
        await _write_batches(primary, run, start, seconds, rate, batch)
    finally:
        run.writing = False


async def _write_batches(
    primary: asyncpg.Pool, run: Run, start: datetime, seconds: float, rate: int, batch: int
) -> None:
    began = time.perf_counter()
    n = 0
    while time.perf_counter() - began < seconds:
        records = [
            (f"bench-{(n + i) % DEVICES}", start + timedelta(milliseconds=n + i), 12.5, 40.0)
            for i in range(batch)
        ]
        n += batch
        async with primary.acquire() as conn:
            await conn.copy_records_to_table(
                "air_readings",
                records=records,
                columns=["device_id", "ts", "pm2_5", "humidity_pct"],
            )
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        run.pending.append((time.perf_counter(), lsn))
        run.rows += batch
        if rate:
            ahead = began + n / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _watcher(standby: asyncpg.Pool, run: Run) -> None:
    async with standby.acquire() as conn:
        while run.writing or run.pending:
            if run.pending:
                # The writer appends while this waits for the standby: judge only these.
                asked = run.pending[:]
                replayed = await conn.fetch(
                    "SELECT pg_last_wal_replay_lsn() >= lsn::pg_lsn AS done"
                    " FROM unnest($1::text[]) WITH ORDINALITY AS t(lsn, i) ORDER BY i",
                    [lsn for _, lsn in asked],
                )
                now = time.perf_counter()
                keep = []
                for (committed, lsn), row in zip(asked, replayed, strict=True):
                    if row["done"]:
                        run.lags_s.append(now - committed)
                    else:
                        keep.append((committed, lsn))
                run.pending = keep + run.pending[len(asked) :]
            await asyncio.sleep(POLL_S)


async def _health_sampler(standby: asyncpg.Pool, run: Run) -> None:
    async with standby.acquire() as conn:
        while run.writing:
            _, lag = await repository.replication_state(conn, 2.0)
            if lag is not None:
                run.health_lags_s.append(lag)
            await asyncio.sleep(0.1)


async def _measure(primary_url: str, standby_url: str, args: argparse.Namespace) -> Run:
    primary = await asyncpg.create_pool(primary_url, min_size=1, max_size=2)
    standby = await asyncpg.create_pool(standby_url, min_size=2, max_size=2)
    await primary.execute(
        "INSERT INTO devices (device_id, kind, district) SELECT 'bench-' || i, 'air', 'gate'"
        " FROM generate_series(0, $1 - 1) AS i ON CONFLICT DO NOTHING",
        DEVICES,
    )
    run = Run()
    try:
        await asyncio.gather(
            _writer(primary, run, args.seconds, args.rate, args.batch),
            _watcher(standby, run),
            _health_sampler(standby, run),
        )
    finally:
        await primary.close()
        await standby.close()
    return run


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=10_000, help="rows/s; 0: unpaced")
    parser.add_argument("--batch", type=int, default=5000, help="rows per COPY")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="alatau-bench-replica-"))
    folder.chmod(0o755)
    primary = PostgresCluster(folder / "primary", free_port())
    standby = StandbyCluster(folder / "standby", free_port(), primary=primary)
    try:
        primary.start()
        migrate(primary.url)
        standby.start()
        run = asyncio.run(_measure(primary.url, standby.url, args))
    finally:
        standby.stop(mode="immediate")
        primary.stop(mode="immediate")
        remove_tree(folder)
    elapsed_rate = run.rows / args.seconds
    print(
        f"rows {run.rows} ({elapsed_rate:,.0f}/s asked {args.rate or 'unpaced'}), batch"
        f" {args.batch}: commit -> visible on the standby p50 {_ms(run.lags_s, 0.5)} ms,"
        f" p99 {_ms(run.lags_s, 0.99)} ms, max {_ms(run.lags_s, 1.0)} ms over"
        f" {len(run.lags_s)} batches; health replica_lag_s p50 {_ms(run.health_lags_s, 0.5)} ms,"
        f" max {_ms(run.health_lags_s, 1.0)} ms"
        + (f", mean {statistics.fmean(run.lags_s) * 1000:.1f} ms" if run.lags_s else "")
    )


if __name__ == "__main__":
    main()

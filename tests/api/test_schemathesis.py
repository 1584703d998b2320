"""Schemathesis against the API's own OpenAPI document: no 5xx, no response that breaks the
schema, whatever the request, and no error in the api's log (where a background task that dies,
such as the alert evaluator, shows and nowhere else). It runs the real api process on a database
of its own (generated writes change alert rules and keys) and sends an admin key, so every route
is exercised past its auth check. The endless live feeds are left out: they are tested in
tests/live."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key_at
from core.config import Settings
from migrations.runner import migrate
from stack.broker_auth import login_environment
from stack.services import PostgresCluster, free_port
from tests.support import eventually, real_clock_environment

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "alatau_schemathesis"
MAX_EXAMPLES = 40
TIME_BUDGET_S = 45  # a fuzzing budget, not a performance bound
FINISH_S = 60  # past the budget: time to finish the last requests and write the report
# The issue's bar: no 5xx, and every response as documented (status, media type, headers, body).
# Left out: whether schema-valid requests are accepted (business rules such as "from < to" are
# not expressible in OpenAPI) and FastAPI's Allow header on 405s.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@dataclass
class FuzzedApi:
    """The api process under test; everything it logs goes to ``log``."""

    url: str
    token: str
    process: asyncio.subprocess.Process
    log: Path

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    def errors(self) -> list[dict[str, Any]]:
        """What it logged at error level or above (JSON lines), a crashed background task
        included: that shows only in the log, never in a response."""
        records = [
            orjson.loads(line)
            for line in self.log.read_bytes().splitlines()
            if line.startswith(b"{")
        ]
        return [record for record in records if record.get("level") in {"error", "critical"}]


@pytest.fixture(scope="module")
async def fuzzed_api(
    postgres: PostgresCluster, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FuzzedApi]:
    with psycopg.connect(postgres.admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    database_url = postgres.admin_url(DATABASE)
    migrate(database_url)
    body = ApiKeyCreate(name="schemathesis", role=Role.ADMIN)
    token = (await issue_key_at(database_url, body)).token
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MQTT_URL": settings.mqtt_url,
        **login_environment(settings),
        "ALATAU_API__PORT": str(port),
        "ALATAU_LOG_LEVEL": "WARNING",
        "ALATAU_LOG_FORMAT": "json",
    }
    log = tmp_path_factory.mktemp("schemathesis-api") / "api.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api", env=env, cwd=ROOT, stdout=sink, stderr=sink
        )
    api = FuzzedApi(f"http://127.0.0.1:{port}", token, process, log)

    async def health() -> int:
        try:
            async with httpx.AsyncClient(base_url=api.url) as client:
                return (await client.get("/api/v1/health")).status_code
        except httpx.HTTPError:
            return 0

    try:
        assert await eventually(health, lambda status: status == 200, timeout_s=30) == 200
        yield api
    finally:
        await api.stop()


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    fuzzed_api: FuzzedApi, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).parent / "st"), "run", f"{fuzzed_api.url}/openapi.json",
        "--header", f"Authorization: Bearer {fuzzed_api.token}",
        "--checks", ",".join(CHECKS),
        "--exclude-path-regex", "/live$",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "20261122",
        "--request-timeout", "20",
        "--max-time", str(TIME_BUDGET_S),
        "--workers", "2",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    # The fuzzer is a tool, not a part under test: it runs on the real clock even when the
    # suite's is moved (the api process keeps the moved one).
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env=real_clock_environment(os.environ),
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), TIME_BUDGET_S + FINISH_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-20_000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-5000:]
    await fuzzed_api.stop()
    assert fuzzed_api.errors() == []

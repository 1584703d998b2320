"""The API in-process for the rollup tests (the same app as tests/api)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from core.config import Settings
from tests.api.conftest import serve


@pytest.fixture(scope="session")
async def rollup_client(
    settings: Settings, admin_headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings, admin_headers) as (_, client):
        yield client

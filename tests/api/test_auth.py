"""API keys: every route but health needs one, a reader changes nothing, an operator only
acknowledges, and keys are issued and revoked over the API and from the command line."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets
from fastapi import FastAPI

from api.app import create_app
from api.keys.schemas import Role
from core.config import Settings
from core.logging import RedactAccessTokens
from tests.support import bearer

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"/api/v1/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
READ_METHODS = {"GET", "HEAD"}


def concrete(path: str) -> str:
    """A route path with each parameter filled in (the value does not matter for auth)."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document, and the metrics route it leaves out."""
    found = [("GET", "/metrics")]
    for path, operations in app.openapi()["paths"].items():
        if path not in PUBLIC:
            found += [(method.upper(), concrete(path)) for method in sorted(operations)]
    return found


ALL_ROUTES = routes(create_app(Settings()))
WRITES = [(method, path) for method, path in ALL_ROUTES if method not in READ_METHODS]


def test_the_route_table_is_what_the_checks_below_cover() -> None:
    assert len(ALL_ROUTES) > 25
    assert ("POST", "/api/v1/devices") in WRITES
    assert ("POST", "/api/v1/alerts/x1/acknowledge") in WRITES
    assert ("GET", "/api/v1/live") in ALL_ROUTES
    assert ("DELETE", "/api/v1/keys/x1") in WRITES


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
async def test_every_route_without_a_key_is_401(api_url: str, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.request(method, path)
    assert response.status_code == 401, (method, path, response.text)
    assert response.json()["error"] == "missing_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_every_write_with_a_reader_key_is_403(
    api_url: str, api_keys: dict[Role, str], method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers=bearer(api_keys[Role.READER])) as client:
        response = await client.request(method, path, json={})
    assert response.status_code == 403, (method, path, response.text)
    assert response.json()["error"] == "insufficient_role"


async def test_health_needs_no_key(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        assert (await client.get("/api/v1/health")).status_code == 200


async def test_unknown_and_malformed_keys_are_401(api_url: str, api_keys: dict[Role, str]) -> None:
    good = api_keys[Role.READER]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    async with httpx.AsyncClient(base_url=api_url) as client:
        for token in (forged, "alk_000000000000_nothing", "not-a-key"):
            response = await client.get("/api/v1/devices", headers=bearer(token))
            assert response.status_code == 401, token
            assert response.json()["error"] == "invalid_api_key"


async def test_a_websocket_without_a_key_is_refused_at_the_handshake(
    api_url: str, api_keys: dict[Role, str]
) -> None:
    url = api_url.replace("http://", "ws://") + "/api/v1/live/ws"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    assert refused.value.response.status_code == 401
    headers = bearer(api_keys[Role.READER])
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert '"snapshot"' in str(await ws.recv())


async def test_the_live_feed_takes_the_key_as_header_or_query(
    api_url: str, api_keys: dict[Role, str]
) -> None:
    token = api_keys[Role.READER]
    async with httpx.AsyncClient(base_url=api_url) as client:
        for kwargs in ({"headers": bearer(token)}, {"params": {"access_token": token}}):
            async with client.stream("GET", "/api/v1/live", **kwargs) as response:  # type: ignore[arg-type]
                assert response.status_code == 200
        # Other routes do not take keys in the URL: they would end up in access logs.
        response = await client.get("/api/v1/devices", params={"access_token": token})
        assert response.status_code == 401


async def test_an_operator_acknowledges_but_does_not_manage_devices(
    api_url: str, api_keys: dict[Role, str], unique: str
) -> None:
    headers = bearer(api_keys[Role.OPERATOR])
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as client:
        body = {"device_id": f"auth-{unique}", "kind": "air", "district": "gate"}
        assert (await client.post("/api/v1/devices", json=body)).status_code == 403
        # Allowed to acknowledge: an unknown alert is a 404, not a 403.
        response = await client.post("/api/v1/alerts/999999999/acknowledge")
        assert response.status_code == 404
        assert (await client.get("/api/v1/devices")).status_code == 200


async def test_admins_issue_and_revoke_keys_over_the_api(
    api_url: str, admin_headers: dict[str, str], unique: str
) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers=admin_headers) as admin:
        response = await admin.post(
            "/api/v1/keys", json={"name": f"app-{unique}", "role": "reader"}
        )
        assert response.status_code == 201, response.text
        issued = response.json()
        assert issued["created_by"] == "test-admin"
        token = issued["token"]
        listed = (await admin.get("/api/v1/keys")).json()["items"]
        assert issued["key_id"] in {key["key_id"] for key in listed}
        assert all("token" not in key for key in listed)

        me = await admin.get("/api/v1/keys/me", headers=bearer(token))
        assert me.json() == {"key_id": issued["key_id"], "name": f"app-{unique}", "role": "reader"}

        revoked = await admin.delete(f"/api/v1/keys/{issued['key_id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        # This replica forgets the key at once.
        response = await admin.get("/api/v1/devices", headers=bearer(token))
        assert response.status_code == 401
        assert (await admin.delete("/api/v1/keys/ffffffffffff")).status_code == 404


async def test_keys_are_stored_only_as_hashes(
    db_pool: asyncpg.Pool, api_keys: dict[Role, str]
) -> None:
    token = api_keys[Role.ADMIN]
    secret = token.split("_", 2)[2]
    rows = await db_pool.fetch("SELECT * FROM api_keys")
    stored = " ".join(str(dict(row)) for row in rows)
    assert secret not in stored
    assert token not in stored


async def test_the_command_line_issues_lists_and_revokes_keys(
    settings: Settings, api_url: str, unique: str
) -> None:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "ALATAU_LOG_LEVEL": "WARNING"}

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "api.keys", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = cli("create", "--name", f"cli-{unique}", "--role", "operator")
    token = out.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    assert f"{key_id}  operator  cli-{unique}" in cli("list")
    async with httpx.AsyncClient(base_url=api_url, headers=bearer(token)) as client:
        assert (await client.get("/api/v1/keys/me")).json()["role"] == "operator"
    assert "revoked" in cli("revoke", key_id)
    assert f"cli-{unique}" not in cli("list")


async def test_a_bootstrap_key_is_registered_once_and_a_clashing_one_refused(
    settings: Settings, api_url: str, unique: str
) -> None:
    key_id = unique[:10] + "ab"
    token = f"alk_{key_id}_{'s' * 40}"
    env = {**os.environ, "DATABASE_URL": settings.database_url, "ALATAU_LOG_LEVEL": "WARNING"}

    def ensure(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.keys", "ensure", "--name", "compose-admin"],
            env={**env, "ALATAU_BOOTSTRAP_ADMIN_KEY": value},
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    assert ensure(token).returncode == 0
    assert ensure(token).returncode == 0  # again: nothing changes
    clash = ensure(f"alk_{key_id}_{'t' * 40}")
    assert clash.returncode == 1
    assert "taken" in clash.stderr
    async with httpx.AsyncClient(base_url=api_url, headers=bearer(token)) as client:
        assert (await client.get("/api/v1/keys/me")).json()["role"] == "admin"


def test_keys_in_live_feed_urls_are_kept_out_of_access_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/api/v1/live?access_token=alk_0123456789ab_s3cret&kind=air",
         "1.1", 200),
        None,
    )  # fmt: skip
    assert RedactAccessTokens().filter(record)
    line = record.getMessage()
    assert "s3cret" not in line
    assert "/api/v1/live?access_token=[redacted]&kind=air" in line

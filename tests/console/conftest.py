"""The operators' console in headless Debian Chromium (driven by Playwright, which downloads no
browser) against the session's real api, ingest, TimescaleDB and Mosquitto.

One browser for the whole run; each test gets fresh contexts (own localStorage) through
``open_console``. Every context may reach only the api on 127.0.0.1: anything else is aborted
and recorded, so the console is proven to work offline."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright import async_api as playwright_api

from api.keys.schemas import Role
from tests.live import conftest as live_conftest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VENDOR = ROOT / "api/static/vendor"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

HERE = Path(__file__).resolve().parent


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed"
    if not (VENDOR / "uplot/uPlot.iife.min.js").exists():
        return "front-end libraries not installed (cd frontend && npm ci && npm run build)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


# The api replica with quick live and alert settings, shared with tests/live.
live_url = live_conftest.live_url

OpenConsole = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        yield chromium
        await chromium.close()


class Offline:
    """Requests the console tried to send anywhere but this machine (each one aborted)."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    async def route(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            self.blocked.append(route.request.url)
            await route.abort()


@pytest.fixture
async def open_console(
    browser: Any, live_url: str, api_keys: dict[Role, str]
) -> AsyncIterator[OpenConsole]:
    """``await open_console(role, "#/alerts", language="ru")``: a new page signed in with the
    session's key of that role. Page errors and off-machine requests fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []
    offline = Offline()

    async def open_page(
        role: Role = Role.ADMIN,
        path: str = "#/overview",
        *,
        language: str = "en",
        key: str | None = None,
        width: int = 1500,
        height: int = 1000,
    ) -> Any:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        contexts.append(context)
        await context.route("**/*", offline.route)
        token = key if key is not None else api_keys[role]
        await context.add_init_script(
            "if (!sessionStorage.getItem('primed')) {"
            f" localStorage.setItem('apiKey', {token!r});"
            f" localStorage.setItem('consoleLanguage', {language!r});"
            " sessionStorage.setItem('primed', '1'); }"
        )
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{live_url}/{path}")
        return page

    yield open_page
    for context in contexts:
        await context.close()
    assert errors == [], errors
    assert offline.blocked == [], offline.blocked


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


async def screenshot(page: Any, name: str) -> Path:
    """Keep a picture of what the test saw (CI keeps test-artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path

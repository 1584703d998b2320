"""The OpenAPI page at ``/docs``, served with Swagger UI from the project's own files so it works
without the internet (FastAPI's default loads Swagger UI from a CDN)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

OPENAPI_URL: Final = "/openapi.json"
SWAGGER_UI: Final = "/static/vendor/swagger-ui"
OAUTH2_REDIRECT_URL: Final = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """Swagger UI over the API's OpenAPI document, every asset from /static/vendor/."""
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="Alatau City telemetry API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        # Keys are entered with Authorize and kept across reloads of the page.
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()

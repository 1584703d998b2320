"""The endpoints RabbitMQ's HTTP auth backend calls (``auth_http.user_path`` and the others).

They are outside ``/api/v1`` and the OpenAPI document: only the broker calls them, with the
edge's secret token in the path (``ALATAU_EDGE__AUTH_TOKEN``, kept out of the access log). Each
answers ``allow`` or ``deny`` as plain text; the broker posts its questions form-encoded.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from api.broker import service
from api.dependencies import PoolDep, SettingsDep, TopicRefusalsDep
from core.errors import NotFound

router = APIRouter(prefix="/internal/broker/{token}", include_in_schema=False)
_TEXT: Final = "text/plain"


def _checked_token(token: str, settings: SettingsDep) -> None:
    expected = settings.edge.auth_token
    if expected is None or not hmac.compare_digest(token, expected.get_secret_value()):
        # Indistinguishable from any other unknown path.
        raise NotFound("not found")


async def _form(request: Request) -> dict[str, str]:
    """The broker's fields: form-encoded in a POST body, or the query of a GET."""
    raw = (await request.body()).decode() if request.method == "POST" else request.url.query
    return {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}


Form = Annotated[dict[str, str], Depends(_form)]
Checked = [Depends(_checked_token)]


def _answer(decision: str) -> PlainTextResponse:
    return PlainTextResponse(decision, media_type=_TEXT)


@router.api_route("/user", methods=["GET", "POST"], dependencies=Checked)
async def user(pool: PoolDep, form: Form) -> PlainTextResponse:
    return _answer(
        await service.check_user(
            pool, form.get("username", ""), form.get("password", ""), form.get("client_id", "")
        )
    )


@router.api_route("/vhost", methods=["GET", "POST"], dependencies=Checked)
async def vhost(pool: PoolDep, settings: SettingsDep, form: Form) -> PlainTextResponse:
    return _answer(
        await service.check_vhost(
            pool, settings.edge.vhost, form.get("vhost", ""), form.get("username", "")
        )
    )


@router.api_route("/resource", methods=["GET", "POST"], dependencies=Checked)
async def resource(pool: PoolDep, form: Form) -> PlainTextResponse:
    return _answer(
        await service.check_resource(
            pool,
            form.get("username", ""),
            form.get("resource", ""),
            form.get("name", ""),
            form.get("permission", ""),
        )
    )


@router.api_route("/topic", methods=["GET", "POST"], dependencies=Checked)
async def topic(pool: PoolDep, refusals: TopicRefusalsDep, form: Form) -> PlainTextResponse:
    return _answer(
        await service.check_topic(
            pool,
            refusals,
            username=form.get("username", ""),
            name=form.get("name", ""),
            permission=form.get("permission", ""),
            routing_key=form.get("routing_key", ""),
        )
    )

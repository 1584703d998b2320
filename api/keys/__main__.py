"""``python -m api.keys``: issue, list and revoke API keys from a shell on the database's side.

The first admin key has to come from here (``make run`` issues a development one itself);
after that, admins can also manage keys over the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
import typer

from api.keys import service
from api.keys.schemas import ApiKeyCreate, Role
from core.config import get_settings
from core.db import create_pool
from core.errors import NotFound

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
T = TypeVar("T")


def _with_pool(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = await create_pool(get_settings(), "api-keys-cli")
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


@app.command()
def create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    role: Annotated[Role, typer.Option(help="reader, operator or admin")] = Role.READER,
) -> None:
    """Issue a key and print its token (shown only now)."""
    issued = _with_pool(
        lambda pool: service.issue_key(pool, ApiKeyCreate(name=name, role=role), created_by=None)
    )
    typer.echo(f"key {issued.key_id} ({issued.role.value}, {issued.name}):")
    typer.echo(issued.token)


@app.command()
def ensure(
    token: Annotated[
        str, typer.Option(envvar="ALATAU_BOOTSTRAP_ADMIN_KEY", help="the key to register")
    ],
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "bootstrap admin",
    role: Annotated[Role, typer.Option(help="reader, operator or admin")] = Role.ADMIN,
) -> None:
    """Register a key chosen in advance (a deployment's first admin key), once."""
    try:
        key = _with_pool(
            lambda pool: service.ensure_key(pool, token, ApiKeyCreate(name=name, role=role))
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"key {key.key_id} ({key.role.value}, {key.name}) is registered")


@app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="revoked keys too")] = False,
) -> None:
    """The keys, never their tokens."""
    keys = _with_pool(lambda pool: service.list_keys(pool, include_revoked=include_revoked))
    for key in keys:
        revoked = f"  revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
        typer.echo(f"{key.key_id}  {key.role.value:<8}  {key.name}{revoked}")


@app.command()
def revoke(key_id: str) -> None:
    """Revoke a key; every replica refuses it within seconds."""
    try:
        key = _with_pool(lambda pool: service.revoke_key(pool, key_id))
    except NotFound as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {key.key_id} ({key.name})")


if __name__ == "__main__":
    app()

"""Server-Sent Events framing, shared by every event stream of the api (live readings, alerts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi.responses import StreamingResponse

MEDIA_TYPE: Final = "text/event-stream"
# Proxies must neither cache nor buffer a stream.
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# What a stream route declares in the OpenAPI document.
OPENAPI: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {MEDIA_TYPE: {}}, "description": "an event stream"}
}


def event(name: str, data: bytes, event_id: str | None = None) -> bytes:
    """One event; ``data`` is a single line of JSON."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: ".encode() + data + b"\n\n"


def retry(milliseconds: int) -> bytes:
    """The reconnection delay the client's EventSource should use."""
    return f"retry: {milliseconds}\n\n".encode()


def response(stream: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(stream, media_type=MEDIA_TYPE, headers=_HEADERS)

"""A small Server-Sent Events client on a raw socket, so a test can stop reading at will and
keep its receive buffer small (a slow client the server must not wait for)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return orjson.loads(self.data)


class SseClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> SseClient:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        limit = receive_buffer or 2**16
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        client = cls(reader, writer)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        client.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                client.headers[name.strip().lower()] = value.strip()
        return client

    async def _chunk(self) -> bytes:
        size_line = await self._reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        if size == 0:
            raise EOFError("the server ended the stream")
        data = await self._reader.readexactly(size + 2)
        return data[:-2]

    async def next_event(self, timeout_s: float = 10.0) -> Event:
        async def read() -> Event:
            while True:
                while b"\n\n" not in self._buffer:
                    self._buffer += await self._chunk()
                block, _, self._buffer = self._buffer.partition(b"\n\n")
                fields: dict[str, str] = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":") or ":" not in line:
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                if "event" in fields or "data" in fields:
                    return Event(
                        fields.get("event", "message"), fields.get("data", ""), fields.get("id")
                    )

        return await asyncio.wait_for(read(), timeout_s)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

"""A small real HTTP server that answers RabbitMQ's HTTP auth backend and logs every request.

It stands in for the api's broker-auth endpoints: devices it knows log in with their password,
may publish only under ``alatau/{kind}/{their id}/``, and everything else is denied (service
users included, so the broker falls through to its internal database for them).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlencode, urlsplit
from urllib.request import urlopen


@dataclass(frozen=True)
class AuthRequest:
    """One request the broker made: which endpoint, how, and its parameters."""

    path: str
    method: str
    params: dict[str, str]
    content_type: str | None
    at: float

    @property
    def endpoint(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class AuthServer:
    devices: dict[str, str] = field(default_factory=dict)
    requests: list[AuthRequest] = field(default_factory=list)
    # Tests may swap in another decision for one endpoint (e.g. to refuse a vhost).
    overrides: dict[str, Callable[[dict[str, str]], bool]] = field(default_factory=dict)
    # An HTTP status to answer everything with (the api failing), instead of deciding.
    fail_with: int | None = None
    # Where to pass on questions about users this server does not know (the real api's
    # broker-auth endpoints, for the tests of the api's own answers).
    delegate: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/auth"

    def requests_for(self, username: str, endpoint: str | None = None) -> list[AuthRequest]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.params.get("username") == username
                and (endpoint is None or r.endpoint == endpoint)
            ]

    def decide(self, endpoint: str, params: dict[str, str]) -> str:
        override = self.overrides.get(endpoint)
        if override is not None:
            return "allow" if override(params) else "deny"
        username = params.get("username", "")
        if username not in self.devices:
            return "deny"
        if endpoint == "user":
            return "allow" if params.get("password") == self.devices[username] else "deny"
        if endpoint == "vhost":
            return "allow" if params.get("vhost") == "/" else "deny"
        if endpoint == "resource":
            allowed = (
                params.get("resource") == "exchange" and params.get("name") == "amq.topic"
            ) or (
                params.get("resource") == "queue"
                and params.get("name", "").startswith(f"mqtt-subscription-{username}")
            )
            return "allow" if allowed else "deny"
        if endpoint == "topic":
            own = rf"^alatau\.[a-z]+\.{re.escape(username)}\.[A-Za-z0-9_-]+$"
            return "allow" if re.match(own, params.get("routing_key", "")) else "deny"
        return "deny"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, params: dict[str, str]) -> None:
                endpoint = urlsplit(self.path).path.rsplit("/", 1)[-1]
                with outer.lock:
                    outer.requests.append(
                        AuthRequest(
                            path=urlsplit(self.path).path,
                            method=self.command,
                            params=params,
                            content_type=self.headers.get("Content-Type"),
                            at=time.monotonic(),
                        )
                    )
                status = outer.fail_with or 200
                if outer.delegate and params.get("username", "") not in outer.devices:
                    status, body = _forward(f"{outer.delegate}/{endpoint}", params)
                elif outer.fail_with:
                    body = b"error"
                else:
                    body = outer.decide(endpoint, params).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
                self._answer({key: values[-1] for key, values in query.items()})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                query = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                self._answer({key: values[-1] for key, values in query.items()})

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _forward(url: str, params: dict[str, str]) -> tuple[int, bytes]:
    """POST the broker's question on, form-encoded as the broker sent it; its answer."""
    try:
        with urlopen(url, data=urlencode(params).encode(), timeout=5) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read()

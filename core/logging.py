"""Structured logs: one configuration for every process, key-value or JSON lines."""

from __future__ import annotations

import logging
import re
import sys
from typing import Final

import structlog

# Browsers send API keys to the live feeds in the URL (EventSource cannot set headers).
_ACCESS_TOKEN: Final = re.compile(r"(access_token=)[^&\s]*")
# The city edge's broker calls the api with its secret token in the path.
_BROKER_TOKEN: Final = re.compile(r"(/internal/broker/)[^/\s]+")


def redact(text: str) -> str:
    return _BROKER_TOKEN.sub(r"\1[redacted]", _ACCESS_TOKEN.sub(r"\1[redacted]", text))


class QuietBrokerChecks(logging.Filter):
    """The city edge's broker asks the api about every login and topic (a city's devices, again
    after each cache lifetime): answered checks leave no access-log line; failures do."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        path = next((a for a in args if isinstance(a, str) and "/internal/broker/" in a), None)
        status = args[-1] if args else None
        return path is None or status != 200


class RedactAccessTokens(logging.Filter):
    """Keeps keys out of access logs: uvicorn logs each request's path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def configure_logging(level: str = "INFO", fmt: str = "console", process: str = "") -> None:
    """Route structlog and stdlib logging through one renderer, bound to the process name."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gmqtt logs every reconnect attempt at INFO and every packet at DEBUG.
    logging.getLogger("gmqtt").setLevel(max(logging.WARNING, root.level))
    # One line per outgoing request drowns what matters (the simulator registers hundreds).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactAccessTokens) for f in access.filters):
        access.addFilter(QuietBrokerChecks())
        access.addFilter(RedactAccessTokens())
    if process:
        structlog.contextvars.bind_contextvars(process=process)

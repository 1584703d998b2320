"""``python -m api``: serve the REST API with uvicorn on the configured host and port, in
``ALATAU_API__WORKERS`` processes."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from core.config import get_settings
from core.logging import configure_logging


def worker_app() -> FastAPI:
    """The app of one worker process, with its logging configured (each worker starts anew)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="api")
    return create_app(settings)


def main() -> None:
    """Configure logging, build the app and serve it until interrupted."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="api")
    workers = settings.api.workers
    uvicorn.run(
        # Several workers share the listening socket, each building its own app (own pool and
        # broker clients); uvicorn then needs the app by name.
        "api.__main__:worker_app" if workers > 1 else create_app(settings),
        factory=workers > 1,
        workers=workers,
        host=settings.api.host,
        port=settings.api.port,
        # None keeps uvicorn's own loggers on the root handler configure_logging installed.
        log_config=None,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()

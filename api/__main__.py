"""``python -m api``: serve the REST API with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from core.config import get_settings
from core.logging import configure_logging


def main() -> None:
    """Configure logging, build the app and serve it until interrupted."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="api")
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        # None keeps uvicorn's own loggers on the root handler configure_logging installed.
        log_config=None,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()

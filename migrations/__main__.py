"""``python -m migrations``: apply pending migrations to ``DATABASE_URL``."""

from __future__ import annotations

from core.config import get_settings
from core.logging import configure_logging
from migrations.runner import migrate


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="migrations")
    applied = migrate(settings.database_url)
    print(f"migrations: {len(applied)} applied")


if __name__ == "__main__":
    main()

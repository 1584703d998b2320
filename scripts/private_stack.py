"""The whole stack like ``make run``, but on free ports in a temporary folder, so it can run
beside other stacks on the same machine (``make run`` uses fixed ports 55432 and 18830).

    .venv/bin/python scripts/private_stack.py [--api-port 8123] [--devices-per-kind 20] [--standby]

It prints the console URL with an admin key, writes the URLs and key to ``--info`` (JSON) if
asked, and removes everything it started on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.keys.schemas import ApiKeyCreate, Role  # noqa: E402
from api.keys.service import issue_key_at  # noqa: E402
from core.config import get_settings  # noqa: E402
from stack.broker_auth import login_environment, with_identities  # noqa: E402
from stack.run import Stack, say  # noqa: E402
from stack.services import (  # noqa: E402
    MosquittoBroker,
    PostgresCluster,
    StandbyCluster,
    free_port,
    remove_tree,
)
from stack.supervisor import StopSignals  # noqa: E402


class PrivateStack(Stack):
    """``make run``'s stack with services of its own on free ports."""

    def __init__(
        self, folder: Path, devices_per_kind: int, rate_hz: float, api_url: str, standby: bool
    ) -> None:
        super().__init__(devices_per_kind, rate_hz, "mosquitto", api_url, standby=standby)
        self.folder = folder

    def start_services(self) -> None:
        postgres = PostgresCluster(self.folder / "postgres", free_port())
        broker = MosquittoBroker(self.folder / "mosquitto", free_port())
        for service in (postgres, broker):
            service.start()
            self.started_services.append(service)
        if self.standby:
            self.start_standby(
                StandbyCluster(self.folder / "standby", free_port(), primary=postgres)
            )
        self.env["DATABASE_URL"] = postgres.url
        self.env["MQTT_URL"] = broker.url
        settings = get_settings().model_copy(
            update={"database_url": postgres.url, "mqtt_url": broker.url}
        )
        self.env.update(login_environment(with_identities(settings, broker.service_passwords())))
        say(f"TimescaleDB on port {postgres.port}, Mosquitto on port {broker.port}")

    def admin_key(self) -> str:
        body = ApiKeyCreate(name="private-stack admin", role=Role.ADMIN)
        import asyncio

        token = asyncio.run(issue_key_at(self.env["DATABASE_URL"], body)).token
        self.env["ALATAU_SIMULATOR_API_KEY"] = token
        return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--devices-per-kind", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1.0, help="readings per device per second")
    parser.add_argument("--info", type=Path, help="write the URLs and the admin key here (JSON)")
    parser.add_argument(
        "--standby", action="store_true", help="a hot standby too; the api reads from it"
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="alatau-private-"))
    folder.chmod(0o755)  # the servers run as their own system users when we are root
    port = args.api_port or free_port()
    api_url = f"http://127.0.0.1:{port}"
    stack = PrivateStack(folder, args.devices_per_kind, args.rate, api_url, args.standby)
    stack.env["ALATAU_API__PORT"] = str(port)
    stack.env["ALATAU_SIMULATOR__API_URL"] = api_url
    stop = StopSignals()
    try:
        stack.start_services()
        stack.migrate()
        key = stack.admin_key()
        stack.start_processes(api_url)
        if args.info:
            info = {
                "api_url": api_url,
                "admin_key": key,
                "database_url": stack.env["DATABASE_URL"],
                "database_read_url": stack.env.get("DATABASE_READ_URL"),
            }
            args.info.write_text(json.dumps(info))
        say(f"Console: {api_url}/#key={key}")
        stack.supervisor.run_until(lambda: stop.requested)
    finally:
        stack.stop()
        remove_tree(folder)


if __name__ == "__main__":
    main()

"""Private TimescaleDB and Mosquitto instances in a folder of our own, on ports of our own.

``make run`` keeps them under ``.data/``; the test suite makes fresh ones in a temporary folder so
a run never depends on what an earlier session left behind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stack import refusals_plugin
from stack.broker_auth import load_or_create_passwords, write_service_identities

PG_MAJOR = os.environ.get("PG_MAJOR", "15")
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
MOSQUITTO_BIN = Path("/usr/sbin/mosquitto")
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
DB_USER = "alatau"
DB_NAME = "alatau"


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _wait_for_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not open port {port} within {timeout_s:.0f}s")


def _service_user(preferred: str) -> str | None:
    """Servers refuse to run as root; as root we run them as their Debian system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(preferred)
    except KeyError as exc:
        raise ServiceError(f"running as root needs the system user {preferred!r}") from exc
    return preferred


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster with TimescaleDB preloaded, trust auth on 127.0.0.1 only."""

    data_dir: Path
    port: int

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        user = _service_user("postgres")
        return subprocess.run(
            _as_user(user, argv), capture_output=True, text=True, check=False, cwd="/"
        )

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _service_user("postgres")
        if user is not None:
            _chown_tree(self.data_dir, user)
        result = self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {result.stderr.strip()}")

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run([str(PG_BIN / "pg_ctl"), "status", "-D", str(self.pgdata)]).returncode == 0

    def server_options(self) -> list[str]:
        return [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.data_dir}",
            "-c shared_preload_libraries=timescaledb",
            "-c timescaledb.telemetry_level=off",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            "-c synchronous_commit=on",
            "-c max_wal_size=2GB",
            "-c fsync=on",
        ]

    def start(self) -> None:
        self.init()
        if self.running():
            return
        options = " ".join(self.server_options())
        result = self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.data_dir / "postgres.log"),
                "-o",
                options,
            ]
        )
        if result.returncode != 0:
            log_tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"postgres did not start: {result.stderr.strip()}\n{log_tail}")
        _wait_for_port(self.port, 30, "postgres")
        self._after_start()

    def _after_start(self) -> None:
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run([str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.pgdata)])


@dataclass
class StandbyCluster(PostgresCluster):
    """A hot standby of ``primary`` on its own port and data folder: a base backup taken with
    ``pg_basebackup -R``, so it streams the primary's WAL (through a replication slot of its
    own, which keeps the WAL it has not received yet) and answers read-only queries."""

    primary: PostgresCluster

    @property
    def slot(self) -> str:
        return f"alatau_standby_{self.port}"

    def init(self) -> None:
        if self.initialized():
            return
        if not self.primary.running():
            raise ServiceError("the standby's primary is not running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _service_user("postgres")
        if user is not None:
            _chown_tree(self.data_dir, user)
        self._drop_slot()
        result = self._run(
            [
                str(PG_BIN / "pg_basebackup"),
                f"--dbname=host=127.0.0.1 port={self.primary.port} user={DB_USER}"
                f" application_name={self.slot}",
                f"--pgdata={self.pgdata}",
                "--write-recovery-conf",
                "--wal-method=stream",
                "--create-slot",
                f"--slot={self.slot}",
                "--checkpoint=fast",
            ]
        )
        if result.returncode != 0:
            raise ServiceError(f"pg_basebackup failed: {result.stderr.strip()}")

    def _drop_slot(self) -> None:
        """A slot left by an earlier standby on this port would hold WAL for nobody."""
        import psycopg

        with psycopg.connect(self.primary.admin_url(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (self.slot,),
            )

    def server_options(self) -> list[str]:
        # Feedback keeps the primary's vacuum from removing rows a long read here still needs,
        # so such a read is not cancelled by a replay conflict.
        return [*super().server_options(), "-c hot_standby=on", "-c hot_standby_feedback=on"]

    def _after_start(self) -> None:
        pass  # read-only: the database arrived with the base backup


@dataclass
class MosquittoBroker:
    """A Mosquitto instance with its own config, persistence on, listening on 127.0.0.1.

    Anonymous access is off: logins live in the dynamic-security plugin's store, which starts
    with the services' identities (stack/broker_auth.py). With ``tls_dir`` (made by stack/tls.py)
    a second listener on ``tls_port`` speaks MQTT over TLS for devices."""

    data_dir: Path
    port: int
    tls_port: int | None = None
    tls_dir: Path | None = None
    # Seconds between saves of sessions, subscriptions and queued messages: what a kill -9 of
    # the broker can lose is what changed since the last save (README, Ingest guarantees).
    autosave_interval_s: int = 5

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mosquitto.db"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else f"mqtts://localhost:{self.tls_port}"

    @property
    def dynsec_store(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def passwords_path(self) -> Path:
        return self.data_dir / "service-passwords.json"

    def service_passwords(self) -> dict[str, str]:
        """Each service's broker password (made on first use, kept with the broker's data)."""
        return load_or_create_passwords(self.passwords_path)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "mosquitto.pid"

    def write_config(self) -> None:
        user = _service_user("mosquitto")
        lines = [
            "# Written by stack/services.py; edits are overwritten on start.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {DYNSEC_PLUGIN}",
            f"plugin_opt_config_file {self.dynsec_store}",
            # After dynamic security, so it hears exactly what that plugin refuses.
            f"plugin {refusals_plugin.build(self.data_dir)}",
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"autosave_interval {self.autosave_interval_s}",
            f"pid_file {self.pid_path}",
            f"log_dest file {self.data_dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            # Ingest replicas keep persistent sessions; their backlog while away must fit.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "max_packet_size 1048576",
            "set_tcp_nodelay true",
        ]
        if self.tls_port is not None and self.tls_dir is not None:
            # Copies inside our data folder: the broker's user must read the key.
            for name in ("ca.crt", "server.crt", "server.key"):
                shutil.copyfile(self.tls_dir / name, self.data_dir / name)
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.data_dir / 'ca.crt'}",
                f"certfile {self.data_dir / 'server.crt'}",
                f"keyfile {self.data_dir / 'server.key'}",
                "tls_version tlsv1.2",
            ]
        if user is not None:
            lines.append(f"user {user}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        if not MOSQUITTO_BIN.exists():
            raise ServiceError("mosquitto is not installed; run scripts/provision.sh")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        write_service_identities(self.dynsec_store, self.service_passwords())
        user = _service_user("mosquitto")
        if user is not None:
            _chown_tree(self.data_dir, user)
        result = subprocess.run(
            [str(MOSQUITTO_BIN), "-c", str(self.config_path), "-d"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"mosquitto did not start: {result.stderr.strip()}")
        _wait_for_port(self.port, 15, "mosquitto")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.05)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

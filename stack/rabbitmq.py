"""A private RabbitMQ cluster on loopback: the city edge devices reach over MQTT and ingest
consumes over AMQP.

Each node has its own name, HOME, cookie (shared by our nodes only), env file, config, plugins
file, data and log folders and ports; the cluster has its own epmd. Nothing of the machine's
RabbitMQ service (``/etc/rabbitmq``, its cookie, epmd on 4369, ports 5672/15672/25672) is read
or reused. As root the nodes run as the ``rabbitmq`` system user.

``make run``'s fixed ports (``local_edge``), node ``i`` = 1, 2, 3: AMQP 5681+i, MQTT 18840+i,
management 15681+i, distribution 25681+i, epmd 14369; all below the kernel's ephemeral range.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from stack.broker_auth import load_or_create_passwords
from stack.rabbitmq_config import (
    EdgeConfig,
    NodePaths,
    NodePorts,
    node_environment,
    render_enabled_plugins,
    render_rabbitmq_conf,
)
from stack.rabbitmq_topology import ADMIN, SERVICE_GRANTS, declare_topology
from stack.services import ServiceError, _as_user, _chown_tree, _service_user, port_open

log = structlog.get_logger("stack.rabbitmq")

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD_BIN = Path("/usr/bin/epmd")
NODE_BOOT_TIMEOUT_S = 120.0
CLI_TIMEOUT_S = 120.0


def fixed_ports(nodes: int = 3) -> list[NodePorts]:
    """``make run``'s ports (see the module's docstring)."""
    return [
        NodePorts(amqp=5681 + i, mqtt=18840 + i, management=15681 + i, dist=25681 + i)
        for i in range(1, nodes + 1)
    ]


def _all_files_allowed() -> list[str]:
    """A prefix that lifts a node's soft open-file limit to its hard one: every MQTT connection
    holds a descriptor, and ``runuser`` (PAM) starts the broker's user at a soft limit of
    1,024, which caps a node near a thousand devices (beyond, it refuses connections)."""
    return ["sh", "-c", 'ulimit -n "$(ulimit -Hn)" && exec "$@"', "rabbitmq-server"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        # Gone between the kill and the read: /proc says ESRCH once the entry is being reaped.
        return False


def _wait(condition: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} within {timeout_s:.0f}s")
        time.sleep(interval_s)


@dataclass
class RabbitCluster:
    """``len(ports)`` RabbitMQ nodes clustered on loopback, with the edge's topology declared.

    Node ``i`` (1-based) is ``{name_prefix}-{i}@localhost``; node 1 is the one the others join."""

    data_dir: Path
    ports: list[NodePorts]
    epmd_port: int
    config: EdgeConfig
    name_prefix: str = "alatau-edge"
    startup_seconds: dict[str, float] = field(default_factory=dict)
    _processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- names, files and URLs -------------------------------------------------------------

    @property
    def nodes(self) -> list[int]:
        return list(range(1, len(self.ports) + 1))

    def node_name(self, i: int) -> str:
        return f"{self.name_prefix}-{i}@localhost"

    def paths(self, i: int) -> NodePaths:
        return NodePaths(self.data_dir / f"node{i}")

    def node_ports(self, i: int) -> NodePorts:
        return self.ports[i - 1]

    def mqtt_port(self, i: int = 1) -> int:
        return self.node_ports(i).mqtt

    def amqp_port(self, i: int = 1) -> int:
        return self.node_ports(i).amqp

    def mqtt_url(self, i: int = 1) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port(i)}"

    def amqp_url(self, service: str, i: int = 1) -> str:
        """The AMQP URL a service logs in with (its password included), to node ``i``."""
        vhost = self.config.vhost.replace("/", "%2F")
        user = f"service.{service}"
        return f"amqp://{user}:{self.passwords()[service]}@127.0.0.1:{self.amqp_port(i)}/{vhost}"

    def management_url(self, i: int = 1) -> str:
        return f"http://127.0.0.1:{self.node_ports(i).management}"

    @property
    def passwords_path(self) -> Path:
        return self.data_dir / "service-passwords.json"

    def passwords(self) -> dict[str, str]:
        """Each service's password (and the stack's administrator's), made once, kept here."""
        return load_or_create_passwords(self.passwords_path, [ADMIN, *SERVICE_GRANTS])

    def admin_client(self, i: int = 1, timeout_s: float = 10.0) -> httpx.Client:
        """A management API client logged in as the stack's administrator, on node ``i``."""
        return httpx.Client(
            base_url=f"{self.management_url(i)}/api",
            auth=(f"service.{ADMIN}", self.passwords()[ADMIN]),
            timeout=timeout_s,
        )

    @property
    def _formed_marker(self) -> Path:
        return self.data_dir / "cluster-formed"

    @property
    def _epmd_pid_file(self) -> Path:
        return self.data_dir / "epmd.pid"

    # -- files ------------------------------------------------------------------------------

    def _cookie(self) -> str:
        path = self.data_dir / "erlang.cookie"
        if not path.exists():
            path.write_text(secrets.token_hex(20).upper())
            path.chmod(0o400)
        return path.read_text().strip()

    def _write_node_files(self, i: int) -> None:
        paths = self.paths(i)
        for folder in (paths.root, paths.home, paths.mnesia, paths.logs):
            folder.mkdir(parents=True, exist_ok=True)
        paths.env_file.write_text("# Our own: the machine's rabbitmq-env.conf is never read.\n")
        paths.config_file.write_text(
            render_rabbitmq_conf(
                self.config,
                self.node_ports(i),
                admin_username=f"service.{ADMIN}",
                admin_password=self.passwords()[ADMIN],
                log_dir=paths.logs,
                seed_node=None if i == 1 else self.node_name(1),
            )
        )
        paths.plugins_file.write_text(render_enabled_plugins())
        if paths.cookie.exists():
            paths.cookie.chmod(0o600)
        paths.cookie.write_text(self._cookie())
        paths.cookie.chmod(0o400)

    def _env(self, i: int) -> dict[str, str]:
        return node_environment(
            self.node_name(i), self.paths(i), self.node_ports(i), self.epmd_port
        )

    def _command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` with node ``i``'s environment only, as the broker's user when we are root."""
        env = [f"{key}={value}" for key, value in self._env(i).items()]
        return _as_user(_service_user("rabbitmq"), ["env", "-i", *env, *argv])

    # -- epmd -------------------------------------------------------------------------------

    def _epmd_pid(self) -> int | None:
        try:
            pid = int(self._epmd_pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) and port_open(self.epmd_port) else None

    def _start_epmd(self) -> None:
        if self._epmd_pid() is not None:
            return
        if port_open(self.epmd_port):
            raise ServiceError(f"port {self.epmd_port} is taken; epmd needs it")
        argv = [str(EPMD_BIN), "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        self._epmd = subprocess.Popen(
            self._command(1, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # With runuser in between, the pid we can signal is epmd's own: found by its port.
        _wait(lambda: port_open(self.epmd_port), 10, "epmd did not listen")
        self._epmd_pid_file.write_text(str(self._listener_pid(self.epmd_port)))

    @staticmethod
    def _listener_pid(port: int) -> int:
        out = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout
        marker = "pid="
        start = out.find(marker)
        if start < 0:
            raise ServiceError(f"no process found listening on port {port}")
        return int(out[start + len(marker) :].split(",", 1)[0])

    def _stop_epmd(self) -> None:
        pid = self._epmd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not _pid_alive(pid), 10, "epmd did not stop")
        if self._epmd is not None:
            self._epmd.wait(timeout=10)
            self._epmd = None
        self._epmd_pid_file.unlink(missing_ok=True)

    # -- nodes ------------------------------------------------------------------------------

    def node_pid(self, i: int) -> int | None:
        """The Erlang VM's process id of node ``i``, if it runs."""
        try:
            pid = int(self.paths(i).pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _spawn_node(self, i: int) -> None:
        paths = self.paths(i)
        paths.pid_file.unlink(missing_ok=True)
        with paths.console_log.open("ab") as console:
            self._processes[i] = subprocess.Popen(
                self._command(i, [*_all_files_allowed(), str(RABBITMQ_BIN / "rabbitmq-server")]),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=paths.root,
            )

    def _wait_listening(self, i: int, timeout_s: float = NODE_BOOT_TIMEOUT_S) -> None:
        """Until node ``i`` has opened its AMQP, MQTT and management ports (the plugins'
        listeners open last, at the end of the boot)."""
        ports = self.node_ports(i)
        process = self._processes.get(i)

        def listening() -> bool:
            if process is not None and process.poll() is not None:
                tail = self.paths(i).console_log.read_text(errors="replace")[-3000:]
                raise ServiceError(f"node {self.node_name(i)} exited during boot:\n{tail}")
            return all(port_open(p) for p in (ports.amqp, ports.mqtt, ports.management))

        _wait(listening, timeout_s, f"node {self.node_name(i)} did not open its ports")

    def ctl(self, i: int, *args: str, tool: str = "rabbitmqctl", check: bool = True) -> str:
        """Run a CLI tool (rabbitmqctl, rabbitmq-diagnostics, rabbitmq-queues) against node
        ``i`` with that node's cookie and epmd; its standard output."""
        argv = [str(RABBITMQ_BIN / tool), "-n", self.node_name(i), *args]
        result = subprocess.run(
            self._command(i, argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=CLI_TIMEOUT_S,
            cwd="/",
        )
        if check and result.returncode != 0:
            raise ServiceError(
                f"{tool} {' '.join(args)} on {self.node_name(i)} failed: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    def mqtt_accepts(self, i: int) -> bool:
        """Whether node ``i`` accepts an MQTT 3.1.1 login (the administrator's, which exists
        from the first boot): its listener is up and its client-id tracker has a leader."""
        return mqtt_login_accepted(self.mqtt_port(i), f"service.{ADMIN}", self.passwords()[ADMIN])

    def _join(self, i: int) -> None:
        """Join node ``i`` to node 1's cluster by hand (a blank node normally joins by itself
        while booting; this is for one that booted alone)."""
        self.ctl(i, "stop_app")
        self.ctl(i, "join_cluster", self.node_name(1))
        self.ctl(i, "start_app")

    def cluster_members(self, i: int = 1) -> list[str]:
        """The nodes node ``i`` counts as members of its cluster, running or not."""
        with self.admin_client(i, timeout_s=5) as client:
            response = client.get("/nodes", params={"columns": "name"})
        response.raise_for_status()
        return sorted(node["name"] for node in response.json())

    def running_nodes(self) -> list[str]:
        """The nodes the cluster reports as running, asked of any node that answers."""
        for i in self.nodes:
            if self.node_pid(i) is None or not port_open(self.node_ports(i).management):
                continue
            try:
                with self.admin_client(i, timeout_s=5) as client:
                    response = client.get("/nodes", params={"columns": "name,running"})
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return sorted(node["name"] for node in response.json() if node["running"])
        return []

    def _wait_running(self, expected: list[int], timeout_s: float = NODE_BOOT_TIMEOUT_S) -> None:
        names = sorted(self.node_name(i) for i in expected)
        _wait(
            lambda: set(names) <= set(self.running_nodes()),
            timeout_s,
            f"the cluster did not report {names} running",
            interval_s=0.1,
        )

    # -- the cluster ------------------------------------------------------------------------

    def running(self) -> bool:
        return all(self.node_pid(i) is not None for i in self.nodes) and all(
            port_open(self.node_ports(i).amqp) for i in self.nodes
        )

    def start(self) -> None:
        """Start every node (in parallel), cluster them if new, and declare the topology."""
        if self.running():
            return
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.passwords()
        for i in self.nodes:
            self._write_node_files(i)
        user = _service_user("rabbitmq")
        if user is not None:
            _chown_tree(self.data_dir, user)
        self._start_epmd()
        blank = not self._formed_marker.exists()
        if blank:
            # One node at a time: each new node's MQTT plugin joins the client-id tracker (a
            # Raft cluster) through a settled leader. Booted together, a plugin can wait 100 s
            # on a leaderless peer, or its node refuses MQTT logins ("server unavailable").
            for i in self.nodes:
                self._spawn_node(i)
                self._wait_listening(i)
                self.startup_seconds[f"node{i}"] = time.monotonic() - began
            members = self.cluster_members()
            alone = [i for i in self.nodes if self.node_name(i) not in members]
            for i in alone:
                log.warning("rabbitmq node booted outside the cluster; joining", node=i)
                self._join(i)
        else:
            # Known members wait for each other's tables at boot: start them all at once.
            for i in self.nodes:
                if self.node_pid(i) is None:
                    self._spawn_node(i)
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(self._wait_listening, self.nodes))
        self.startup_seconds["boot"] = time.monotonic() - began
        self._wait_running(self.nodes)
        for i in self.nodes:
            _wait(lambda i=i: self.mqtt_accepts(i), 60, f"node {i} did not accept MQTT logins")
        self.startup_seconds["running"] = time.monotonic() - began
        with self.admin_client() as client:
            declare_topology(
                client,
                self.config.vhost,
                self.passwords(),
                len(self.nodes),
                self.config.ingest_max_length,
            )
        self._formed_marker.write_text(", ".join(self.node_name(i) for i in self.nodes) + "\n")
        self.startup_seconds["ready"] = time.monotonic() - began
        log.info("rabbitmq cluster ready", seconds=self.startup_seconds)

    def kill_node(self, i: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal node ``i``'s VM (kill -9 by default) and wait until it is gone."""
        pid = self.node_pid(i)
        if pid is None:
            return
        os.kill(pid, sig)
        _wait(lambda: not _pid_alive(pid), 60, f"node {self.node_name(i)} did not exit")
        process = self._processes.pop(i, None)
        if process is not None:
            process.wait(timeout=30)

    def start_node(self, i: int) -> None:
        """Start node ``i`` again (after a kill or stop); it rejoins the cluster by itself."""
        if self.node_pid(i) is None:
            self._write_node_files(i)
            user = _service_user("rabbitmq")
            if user is not None:
                _chown_tree(self.paths(i).root, user)
            self._spawn_node(i)
        self._wait_listening(i)
        self._wait_running([i])

    def _stop_node(self, i: int) -> None:
        """SIGTERM, and SIGKILL if the node is still closing connections a minute later (with
        thousands of devices on a loaded machine it can take longer; the queue's data is safe
        on disk either way)."""
        try:
            self.kill_node(i, signal.SIGTERM)
        except ServiceError:
            log.warning("rabbitmq node did not stop in time; killing it", node=i)
            self.kill_node(i)

    def stop(self) -> None:
        """Stop every node cleanly (SIGTERM, in parallel), then the cluster's epmd."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._stop_node, self.nodes))
        for process in self._processes.values():
            process.wait(timeout=30)
        self._processes.clear()
        self._stop_epmd()


def _mqtt_string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def mqtt_login_accepted(port: int, username: str, password: str, timeout_s: float = 5) -> bool:
    """One MQTT 3.1.1 CONNECT with a clean session; True on CONNACK 0 (then DISCONNECT)."""
    client_id = f"probe-{secrets.token_hex(4)}"
    # Protocol "MQTT" level 4; flags: username, password, clean session; keepalive 10 s.
    variable = _mqtt_string("MQTT") + bytes([4, 0xC2, 0, 10])
    payload = _mqtt_string(client_id) + _mqtt_string(username) + _mqtt_string(password)
    body = variable + payload
    packet = bytes([0x10, len(body)]) + body  # every field here is short: one length byte
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(packet)
            connack = sock.recv(4)
            accepted = len(connack) == 4 and connack[0] == 0x20 and connack[3] == 0
            if accepted:
                sock.sendall(bytes([0xE0, 0]))
            return accepted
    except OSError:
        return False


def local_edge(data_dir: Path, config: EdgeConfig) -> RabbitCluster:
    """The persistent cluster ``make run`` uses: fixed ports, data under ``data_dir``."""
    return RabbitCluster(data_dir, fixed_ports(), epmd_port=14369, config=config)

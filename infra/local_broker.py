"""The embedded Apache Kafka: one KRaft node, or three for high availability, from the pinned jars.

Each configured node runs broker and controller in one JVM. A one-node cluster keeps its state under
``<data_dir>/kafka``; node n of three under ``<data_dir>/kafka/node-n``: ``log-dirs`` (formatted
once with the cluster's id, kept across restarts), ``server.properties`` (written from settings
at every start), ``logs/`` and ``broker.pid``. Readiness is a real metadata request that must
list the node as registered and unfenced, retried within a bounded time, never a fixed sleep.

Scale-out adds broker-only nodes (``add_node``: node 4, 5, ... on the ports + 100 * (n - 1)); they
are found again on disk at every start and removed with ``remove_node`` once drained. The controller
quorum (the configured nodes) stays fixed: see ``infra.scaling``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kafka.errors import KafkaError

from infra.jars import KAFKA_JARS, InstallError, java_major_version
from infra.kafka_node import (
    KafkaNodeError,
    NodeSpec,
    format_storage,
    java_command,
    local_nodes,
    new_cluster_id,
    server_properties,
)
from infra.ports import PortInUseError, ensure_port_free
from lambda_contracts.plumbing.kafka import admin_client, quiet_kafka_logs
from lambda_contracts.settings import NODE_PORT_STEP, Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0


class BrokerError(RuntimeError):
    """The broker did not do what was asked; the message says what happened and what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    detail: str
    summary: str | None = None
    """For a cluster: how many nodes are up, which replaces the one-node wording."""

    def describe(self) -> str:
        if self.summary:
            return f"{self.summary} at {self.bootstrap}: {self.detail}"
        if self.ready:
            return f"broker up at {self.bootstrap} (pid {self.pid}); {self.detail}"
        if self.running:
            return f"broker process {self.pid} is running but not answering at {self.bootstrap}: {self.detail}"
        return f"broker down ({self.detail})"


class BrokerNode:
    """One KRaft node of the local cluster: broker and controller in one JVM, or broker only (added)."""

    def __init__(self, settings: Settings, node_id: int) -> None:
        self.settings = settings
        self.node_id = node_id
        self.broker_only = node_id > settings.broker_nodes
        self.port: int = settings.broker_port + NODE_PORT_STEP * (node_id - 1)
        self.controller_port: int | None = None
        if not self.broker_only:
            self.port, self.controller_port = settings.local_broker_ports[node_id - 1]
        root = (settings.data_dir / "kafka").resolve()
        self.cluster_root = root
        self.home = root if node_id == 1 and settings.broker_nodes == 1 else root / f"node-{node_id}"
        self.log_dirs = self.home / "log-dirs"
        self.logs = self.home / "logs"
        self.properties = self.home / "server.properties"
        self.pid_file = self.home / "broker.pid"
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.broker_host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def launch(self) -> int | None:
        """Start this node's JVM unless it runs; returns the new pid (None: it was running)."""
        if self.running_pid() is not None:
            return None
        self._check_ports_free()
        java_major_version()
        if not KAFKA_JARS.installed():
            raise InstallError("the Kafka jars are not installed yet: run `lambdactl install`")
        self._write_properties()
        self._format_once()
        self.logs.mkdir(parents=True, exist_ok=True)
        command = java_command(self.settings, self.properties, self.logs)
        with (self.logs / "stdout.log").open("ab") as stdout:
            self._child = subprocess.Popen(
                command, stdout=stdout, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
            )
        self.pid_file.write_text(f"{self._child.pid}\n")
        log.info("broker node %d starting (pid %d) at %s", self.node_id, self._child.pid, self.bootstrap)
        return self._child.pid

    def wait_ready(self, pid: int) -> BrokerStatus:
        """Poll with metadata requests until the broker answers, it dies, or time runs out."""
        deadline = time.monotonic() + self.settings.broker_ready_timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise BrokerError(
                    f"broker node {self.node_id} (pid {pid}) exited during start-up. Last log lines:\n{self.log_tail()}"
                )
            remaining = max(1.0, min(5.0, deadline - time.monotonic()))
            ok, detail = self._probe(remaining)
            if ok:
                return BrokerStatus(True, True, pid, self.bootstrap, detail)
            last_error = detail
        raise BrokerError(
            f"broker node {self.node_id} (pid {pid}) did not answer at {self.bootstrap} within "
            f"{self.settings.broker_ready_timeout_s:.0f}s ({last_error}). "
            f"Its log is {self.logs / 'server.log'}; stop it with `lambdactl broker stop`."
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker gracefully (SIGTERM, then SIGKILL after ``timeout_s``); False if it was not running."""
        pid = self.request_stop()
        if pid is None:
            return False
        self.finish_stop(pid, timeout_s)
        return True

    def request_stop(self) -> int | None:
        """Send SIGTERM; the pid to wait for, or None if the node was not running."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        return pid

    def finish_stop(self, pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Wait for a stop requested with ``request_stop``; SIGKILL after ``timeout_s``."""
        if not self._wait_exit(pid, timeout_s):
            log.warning("broker node %d (pid %d) did not stop within %.0fs; killing it", self.node_id, pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> bool:
        """SIGKILL the broker, as a crash would; False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self, probe_timeout_s: float = 3.0) -> BrokerStatus:
        pid = self.running_pid()
        if pid is None:
            return BrokerStatus(False, False, None, self.bootstrap, "not started")
        ok, detail = self._probe(probe_timeout_s)
        return BrokerStatus(True, ok, pid, self.bootstrap, detail)

    def log_tail(self, lines: int = 20) -> str:
        texts = []
        for name in ("stdout.log", "server.log"):
            path = self.logs / name
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts[-lines:]) or "(no log output)"

    # -- internals -----------------------------------------------------------------------------

    def _probe(self, timeout_s: float) -> tuple[bool, str]:
        try:
            node_only = self.settings.model_copy(update={"kafka_bootstrap_servers": self.bootstrap})
            with quiet_kafka_logs(), admin_client(node_only, timeout_s) as admin:
                cluster = admin.describe_cluster()
        except (KafkaError, OSError) as error:
            return False, f"{type(error).__name__}: {error}"
        brokers = [b for b in cluster["brokers"] if not b.get("is_fenced")]
        if not any(b["broker_id"] == self.node_id for b in brokers):
            return False, f"node {self.node_id} not yet registered"
        return True, f"cluster {cluster['cluster_id']}, controller {cluster['controller_id']}"

    def running_pid(self) -> int | None:
        """The pid of this data dir's broker, if one is alive (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid) and str(self.properties) in _cmdline(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._child is not None and self._child.pid == pid:
                try:
                    self._child.wait(timeout=0.2)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _alive(pid):
                return True
            time.sleep(0.1)  # polling a process we do not own: no handle to wait on
        return False

    def _check_ports_free(self) -> None:
        for setting, port in (
            ("LAMBDA_BROKER_PORT", self.port),
            ("LAMBDA_BROKER_CONTROLLER_PORT", self.controller_port),
        ):
            if port is None:
                continue
            try:
                ensure_port_free(self.settings.broker_host, port, setting)
            except PortInUseError as error:
                raise BrokerError(f"the broker cannot listen: {error}") from None

    @property
    def spec(self) -> NodeSpec:
        if not self.broker_only:
            return local_nodes(self.settings)[self.node_id - 1]
        return replace(local_nodes(self.settings)[0], node_id=self.node_id, port=self.port, controller_port=None)

    def _write_properties(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(server_properties(self.settings, self.log_dirs, self.spec), encoding="utf-8")

    def _format_once(self) -> None:
        """Format the KRaft storage on first start only; later starts keep every record."""
        if (self.log_dirs / "meta.properties").exists():
            return
        try:
            format_storage(self.log_dirs, self.properties, self.logs, self._cluster_id())
        except KafkaNodeError as error:
            raise BrokerError(str(error)) from None

    def _cluster_id(self) -> str:
        """One id for every node of the local cluster, made once."""
        if self.broker_only:  # an added node joins the cluster node 1 formatted
            first = BrokerNode(self.settings, 1).log_dirs / "meta.properties"
            for line in first.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
            raise BrokerError(f"no cluster.id in {first}: start the cluster before adding a broker")
        if self.settings.broker_nodes == 1:
            return new_cluster_id()
        path = self.cluster_root / "cluster-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()


class LocalBroker:
    """Start, stop and inspect the local Kafka the embedded mode runs: one node, or three."""

    def __init__(self, settings: Settings) -> None:
        if not settings.uses_local_broker:
            raise BrokerError(
                f"LAMBDA_KAFKA_BOOTSTRAP_SERVERS points at {settings.kafka_bootstrap_servers}; "
                "the local broker is only managed when it is unset"
            )
        self.settings = settings
        self.nodes = [BrokerNode(settings, n) for n in range(1, settings.broker_nodes + 1)]
        self.nodes += [BrokerNode(settings, n) for n in _added_node_ids(settings)]

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    def node(self, node_id: int) -> BrokerNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise BrokerError(f"no broker node {node_id}: the local cluster has nodes {known}")

    def add_node(self) -> BrokerNode:
        """Start one more broker-only node (the next id) and wait until the cluster lists it unfenced."""
        if self.status().running is False:
            raise BrokerError("the local cluster is not running: `lambdactl broker start` first")
        node = BrokerNode(self.settings, max(n.node_id for n in self.nodes) + 1)
        pid = node.launch()
        assert pid is not None, "a new node cannot be running already"
        node.wait_ready(pid)
        self.nodes.append(node)
        return node

    def remove_node(self, node_id: int) -> None:
        """Stop an added broker-only node and delete its data (drain it first: ``infra.scaling.drain``)."""
        node = self.node(node_id)
        if not node.broker_only:
            raise BrokerError(
                f"node {node_id} is a KRaft controller voter, fixed for the cluster's life: only broker-only "
                "nodes added with `lambdactl broker add` can be removed"
            )
        node.stop()
        shutil.rmtree(node.home)
        self.nodes.remove(node)

    def start(self) -> tuple[BrokerStatus, bool]:
        """Start every node that is not running and return once all answer metadata requests.

        All JVMs start before any is awaited: a three-node quorum elects no controller until a
        majority runs. Returns the status and whether this call started any node.
        """
        launched = [node.launch() for node in self.nodes]
        for node, new_pid in zip(self.nodes, launched, strict=True):
            # A just-started JVM may not show its command line yet (fork before exec): trust the pid.
            pid = new_pid if new_pid is not None else node.running_pid()
            if pid is None:
                raise BrokerError(f"broker node {node.node_id} is not running after its start")
            node.wait_ready(pid)
        return self.status(), any(pid is not None for pid in launched)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop every node gracefully; False if none was running.

        All nodes are asked at once: stopped one by one, the last ones would wait for a controller
        quorum that has already gone.
        """
        stopping = [(node, node.request_stop()) for node in self.nodes]
        for node, pid in stopping:
            if pid is not None:
                node.finish_stop(pid)
        return any(pid is not None for _, pid in stopping)

    def kill(self) -> bool:
        return any([node.kill() for node in self.nodes])

    def status(self, probe_timeout_s: float = 3.0) -> BrokerStatus:
        states = [node.status(probe_timeout_s) for node in self.nodes]
        if len(states) == 1:
            return states[0]
        up = [s for s in states if s.ready]
        pids = [s.pid for s in states if s.pid is not None]
        detail = "; ".join(
            f"node {n.node_id}: {'up' if s.ready else 'down'}" for n, s in zip(self.nodes, states, strict=True)
        )
        if len(up) == len(states):
            summary = f"cluster up ({len(up)} of {len(states)} nodes)"
        elif len(up) > len(states) // 2:
            summary = f"cluster degraded ({len(up)} of {len(states)} nodes; clients fail over, restart the others)"
        else:
            summary = f"cluster down ({len(up)} of {len(states)} nodes: no controller quorum)"
        first = pids[0] if pids else None
        return BrokerStatus(bool(pids), len(up) == len(states), first, self.bootstrap, detail, summary)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"-- node {node.node_id} --\n{node.log_tail(lines)}" for node in self.nodes)


def _added_node_ids(settings: Settings) -> list[int]:
    """Broker-only nodes added earlier: their folders hold formatted storage."""
    root = (settings.data_dir / "kafka").resolve()
    ids = []
    for folder in root.glob("node-*"):
        suffix = folder.name.removeprefix("node-")
        if (
            suffix.isdigit()
            and int(suffix) > settings.broker_nodes
            and (folder / "log-dirs" / "meta.properties").exists()
        ):
            ids.append(int(suffix))
    return sorted(ids)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an exited child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        state = stat.rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

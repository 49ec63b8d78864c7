"""The embedded Apache Kafka broker: KRaft combined mode, run from the pinned Maven jars.

State lives under ``<data_dir>/kafka``: ``log-dirs`` (formatted once, kept across restarts),
``server.properties`` (written from settings at every start), ``logs/`` and ``broker.pid``.
Readiness is a real metadata request, retried within a bounded time, never a fixed sleep.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from infra.jars import KAFKA_JARS, KAFKA_LOG4J_CONFIG, InstallError, java_major_version
from infra.ports import PortInUseError, ensure_port_free
from lambda_contracts.kafka_clients import admin_client, quiet_kafka_logs
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)

NODE_ID = 1
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

    def describe(self) -> str:
        if self.ready:
            return f"broker up at {self.bootstrap} (pid {self.pid}); {self.detail}"
        if self.running:
            return f"broker process {self.pid} is running but not answering at {self.bootstrap}: {self.detail}"
        return f"broker down ({self.detail})"


class LocalBroker:
    """Start, stop and inspect the one-node broker that the embedded mode runs."""

    def __init__(self, settings: Settings) -> None:
        if not settings.uses_local_broker:
            raise BrokerError(
                f"LAMBDA_KAFKA_BOOTSTRAP_SERVERS points at {settings.kafka_bootstrap_servers}; "
                "the local broker is only managed when it is unset"
            )
        self.settings = settings
        self.home = (settings.data_dir / "kafka").resolve()
        self.log_dirs = self.home / "log-dirs"
        self.logs = self.home / "logs"
        self.properties = self.home / "server.properties"
        self.pid_file = self.home / "broker.pid"
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> tuple[BrokerStatus, bool]:
        """Start the broker and return once it answers metadata requests.

        Returns the status and whether this call started it: a broker that is already running
        is reported, not started twice.
        """
        current = self.status(probe_timeout_s=5.0)
        if current.running and current.pid is not None:
            if not current.ready:
                current = self.wait_ready(current.pid)
            return current, False
        self._check_ports_free()
        java_major_version()
        if not KAFKA_JARS.installed():
            raise InstallError("the Kafka jars are not installed yet: run `lambdactl install`")
        self._write_properties()
        self._format_once()
        self.logs.mkdir(parents=True, exist_ok=True)
        command = [
            "java",
            f"-Xms{min(256, self.settings.broker_heap_mb)}m",
            f"-Xmx{self.settings.broker_heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
            "-cp",
            f"{KAFKA_JARS.folder}/*",
            "kafka.Kafka",
            str(self.properties),
        ]
        with (self.logs / "stdout.log").open("ab") as stdout:
            self._child = subprocess.Popen(
                command, stdout=stdout, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
            )
        self.pid_file.write_text(f"{self._child.pid}\n")
        log.info("broker starting (pid %d) at %s", self._child.pid, self.bootstrap)
        return self.wait_ready(self._child.pid), True

    def wait_ready(self, pid: int) -> BrokerStatus:
        """Poll with metadata requests until the broker answers, it dies, or time runs out."""
        deadline = time.monotonic() + self.settings.broker_ready_timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise BrokerError(f"the broker (pid {pid}) exited during start-up. Last log lines:\n{self.log_tail()}")
            remaining = max(1.0, min(5.0, deadline - time.monotonic()))
            ok, detail = self._probe(remaining)
            if ok:
                return BrokerStatus(True, True, pid, self.bootstrap, detail)
            last_error = detail
        raise BrokerError(
            f"the broker (pid {pid}) did not answer at {self.bootstrap} within "
            f"{self.settings.broker_ready_timeout_s:.0f}s ({last_error}). "
            f"Its log is {self.logs / 'server.log'}; stop it with `lambdactl broker stop`."
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker gracefully (SIGTERM, then SIGKILL after ``timeout_s``); False if it was not running."""
        pid = self._running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning("broker (pid %d) did not stop within %.0fs; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker, as a crash would; False if it was not running."""
        pid = self._running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self, probe_timeout_s: float = 3.0) -> BrokerStatus:
        pid = self._running_pid()
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
            with quiet_kafka_logs(), admin_client(self.settings, timeout_s) as admin:
                cluster = admin.describe_cluster()
        except (KafkaError, OSError) as error:
            return False, f"{type(error).__name__}: {error}"
        brokers = [b for b in cluster["brokers"] if not b.get("is_fenced")]
        if not any(b["broker_id"] == NODE_ID for b in brokers):
            return False, f"node {NODE_ID} not yet registered"
        return True, f"cluster {cluster['cluster_id']}, controller {cluster['controller_id']}"

    def _running_pid(self) -> int | None:
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
            ("LAMBDA_BROKER_PORT", self.settings.broker_port),
            ("LAMBDA_BROKER_CONTROLLER_PORT", self.settings.broker_controller_port),
        ):
            try:
                ensure_port_free(self.settings.broker_host, port, setting)
            except PortInUseError as error:
                raise BrokerError(f"the broker cannot listen: {error}") from None

    def _write_properties(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(
            server_properties(self.settings, self.log_dirs),
            encoding="utf-8",
        )

    def _format_once(self) -> None:
        """Format the KRaft storage on first start only; later starts keep every record."""
        if (self.log_dirs / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                "java",
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
                f"-Dkafka.logs.dir={self.logs}",
                "-cp",
                f"{KAFKA_JARS.folder}/*",
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.properties),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting the broker storage failed:\n{result.stdout}{result.stderr}")
        log.info("formatted broker storage in %s (cluster %s)", self.log_dirs, cluster_id)


def server_properties(settings: Settings, log_dirs: Path) -> str:
    """The broker configuration for a one-node KRaft cluster (broker and controller in one JVM)."""
    host = settings.broker_host
    port, controller_port = settings.broker_port, settings.broker_controller_port
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs),
        # Topics come from settings (`lambdactl topics create`): a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        "num.partitions": str(settings.topic_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "60000",
    }
    header = "# Written by lambdactl from settings at every start; edit the LAMBDA_* settings instead.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


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

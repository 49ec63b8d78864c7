"""One Kafka node's configuration and command line, for the local cluster and for containers alike.

The embedded mode runs its nodes on loopback (``infra.local_broker``); the compose deployment runs
one node per container (``lambdactl broker run-node``). Both write ``server.properties`` from
settings with ``server_properties``, format storage once with ``format_storage`` and start the same
Maven-pinned jars with ``java_command``.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.jars import KAFKA_JARS, KAFKA_LOG4J_CONFIG
from lambda_contracts.settings import Settings

log = logging.getLogger(__name__)


class KafkaNodeError(RuntimeError):
    """A node cannot be configured or formatted; the message says what to do."""


@dataclass(frozen=True)
class NodeSpec:
    """Where one KRaft node listens, how others reach it, and the controller quorum it belongs to."""

    node_id: int
    listen_host: str
    advertised_host: str
    port: int
    controller_port: int | None
    """None for a broker-only node (it joins the quorum's brokers, not its voters)."""
    voters: str
    """The controller quorum, ``id@host:port,...`` (fixed for the cluster's life)."""
    replicas: int
    min_isr: int

    @property
    def roles(self) -> str:
        return "broker" if self.controller_port is None else "broker,controller"


def local_nodes(settings: Settings) -> list[NodeSpec]:
    """The embedded cluster's nodes: all on loopback, node n on the ports + 100 * (n - 1)."""
    host = settings.broker_host
    voters = ",".join(f"{n}@{host}:{c}" for n, (_, c) in enumerate(settings.local_broker_ports, start=1))
    replicas = min(3, settings.broker_nodes)
    min_isr = 2 if settings.broker_nodes >= 3 else 1
    return [
        NodeSpec(n, host, host, port, controller_port, voters, replicas, min_isr)
        for n, (port, controller_port) in enumerate(settings.local_broker_ports, start=1)
    ]


def container_node(settings: Settings, node_id: int, host: str, voters: str, controller: bool = True) -> NodeSpec:
    """A node in its own container: listens on every interface, advertised under its host name."""
    return NodeSpec(
        node_id=node_id,
        listen_host="0.0.0.0",
        advertised_host=host,
        port=settings.broker_port,
        controller_port=settings.broker_controller_port if controller else None,
        voters=voters,
        replicas=settings.topic_replication_factor,
        min_isr=settings.topic_min_insync_replicas,
    )


def server_properties(settings: Settings, log_dirs: Path, node: NodeSpec) -> str:
    """A node's configuration; internal topics are replicated like the platform's own."""
    listeners = f"PLAINTEXT://{node.listen_host}:{node.port}"
    if node.controller_port is not None:
        listeners += f",CONTROLLER://{node.listen_host}:{node.controller_port}"
    lines = {
        "process.roles": node.roles,
        "node.id": str(node.node_id),
        "controller.quorum.voters": node.voters,
        "listeners": listeners,
        "advertised.listeners": f"PLAINTEXT://{node.advertised_host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs),
        # Topics come from settings (`lambdactl topics create`): a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        "num.partitions": str(settings.topic_partitions),
        "default.replication.factor": str(node.replicas),
        "min.insync.replicas": str(node.min_isr),
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(node.replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(node.replicas),
        "transaction.state.log.min.isr": str(node.min_isr),
        "share.coordinator.state.topic.replication.factor": str(node.replicas),
        "share.coordinator.state.topic.min.isr": str(node.min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "60000",
    }
    header = "# Written by lambdactl from settings at every start; edit the LAMBDA_* settings instead.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def java_command(settings: Settings, properties: Path, logs: Path) -> list[str]:
    """The broker JVM: bounded heap, low-pause GC, logs to ``logs``."""
    return [
        "java",
        f"-Xms{min(256, settings.broker_heap_mb)}m",
        f"-Xmx{settings.broker_heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
        "-cp",
        f"{KAFKA_JARS.folder}/*",
        "kafka.Kafka",
        str(properties),
    ]


def new_cluster_id() -> str:
    """A random KRaft cluster id as Kafka makes them: URL-safe base64 of 16 bytes that never starts with
    "-" (such an id reads as an option to ``kafka-storage format`` and to anyone's shell)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def format_storage(log_dirs: Path, properties: Path, logs: Path, cluster_id: str) -> bool:
    """Format KRaft storage on first start only (later starts keep every record); True if it formatted."""
    if (log_dirs / "meta.properties").exists():
        return False
    result = subprocess.run(
        [
            "java",
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            f"{KAFKA_JARS.folder}/*",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "--config",
            str(properties),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise KafkaNodeError(f"formatting the broker storage failed:\n{result.stdout}{result.stderr}")
    log.info("formatted broker storage in %s (cluster %s)", log_dirs, cluster_id)
    return True


def run_in_foreground(settings: Settings, node: NodeSpec, cluster_id: str) -> None:
    """Write the configuration, format storage on the first start, and become the broker JVM.

    The process is replaced (``exec``), so the container's init hands SIGTERM straight to Kafka,
    which shuts down cleanly. Data lives under ``<data_dir>/kafka`` (the container's volume).
    """
    if not cluster_id:
        raise KafkaNodeError("no cluster id: set KAFKA_CLUSTER_ID (`lambdactl deploy env` writes one)")
    if not KAFKA_JARS.installed():
        raise KafkaNodeError(f"the Kafka jars are missing in {KAFKA_JARS.folder}: run `lambdactl install`")
    home = settings.data_dir.resolve() / "kafka"
    log_dirs, logs, properties = home / "log-dirs", home / "logs", home / "server.properties"
    logs.mkdir(parents=True, exist_ok=True)
    properties.write_text(server_properties(settings, log_dirs, node), encoding="utf-8")
    format_storage(log_dirs, properties, logs, cluster_id)
    command = java_command(settings, properties, logs)
    log.info("node %d (%s) starting as %s", node.node_id, node.roles, node.advertised_host)
    os.execvp(command[0], command)

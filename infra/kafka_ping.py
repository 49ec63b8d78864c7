"""A Kafka readiness probe with nothing but the standard library: one ApiVersions round trip.

Container healthchecks run every few seconds; a JVM tool or a Python client import would cost
more CPU than the broker itself at rest. A KRaft broker enables request processing only once it
has caught up with the metadata log and been unfenced, so an answer with error code 0 means ready.

    python -m infra.kafka_ping localhost:9092      # exit 0 when the broker answers
"""

from __future__ import annotations

import socket
import struct
import sys

API_VERSIONS = 18
CLIENT_ID = b"kafka-ping"


def ping(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """None when the broker answers ApiVersions without error, else what went wrong."""
    header = struct.pack(">hhih", API_VERSIONS, 0, 1, len(CLIENT_ID)) + CLIENT_ID  # v0: no request body
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(struct.pack(">i", len(header)) + header)
            size = struct.unpack(">i", _read(connection, 4))[0]
            correlation, error = struct.unpack(">ih", _read(connection, size)[:6])
    except (OSError, struct.error) as problem:
        return f"{type(problem).__name__}: {problem}"
    if correlation != 1:
        return f"unexpected correlation id {correlation}"
    return None if error == 0 else f"ApiVersions error code {error}"


def _read(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def main(argv: list[str]) -> int:
    host, _, port = (argv[0] if argv else "localhost:9092").rpartition(":")
    problem = ping(host or "localhost", int(port))
    if problem:
        print(f"broker at {host}:{port} not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Checking that a port is free before a service tries to listen on it."""

from __future__ import annotations

import errno
import socket


class PortInUseError(RuntimeError):
    """Another process listens on the port; the message says how to find it or move."""


def ensure_port_free(host: str, port: int, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortInUseError(
                f"port {port} on {host} is already in use by another process. Find it with "
                f"`ss -ltnp 'sport = :{port}'`, stop it, or choose another port with {setting}=<port>."
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick), for a run that must not meet another's."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])

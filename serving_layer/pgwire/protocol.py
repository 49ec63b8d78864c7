"""Postgres frontend/backend protocol 3.0 messages: reading them and writing them.

https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

PROTOCOL_3 = 196_608
SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80_877_103, 80_877_104, 80_877_102
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ClientGoneError(ConnectionError):
    """The client closed the connection (or sent something that is not the protocol)."""


class Payload:
    """Reads the fields of one message body in order."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def int16(self) -> int:
        (value,) = struct.unpack_from("!h", self.data, self.position)
        self.position += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from("!i", self.data, self.position)
        self.position += 4
        return int(value)

    def cstring(self) -> str:
        end = self.data.index(b"\x00", self.position)
        value = self.data[self.position : end].decode()
        self.position = end + 1
        return value

    def raw(self, size: int) -> bytes:
        value = self.data[self.position : self.position + size]
        self.position += size
        return value

    def rest(self) -> bytes:
        return self.raw(len(self.data) - self.position)


class Wire:
    """One client's socket: messages in, buffered messages out (sent on ``flush``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: list[bytes] = []

    def _exactly(self, size: int) -> bytes:
        chunks, missing = [], size
        while missing:
            chunk = self.sock.recv(min(missing, 1 << 20))
            if not chunk:
                raise ClientGoneError("the client closed the connection")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def _sized(self) -> bytes:
        (length,) = struct.unpack("!i", self._exactly(4))
        if not 4 <= length <= MAX_MESSAGE_BYTES:
            raise ClientGoneError(f"a message of {length} bytes is not the Postgres protocol")
        return self._exactly(length - 4)

    def read_startup(self) -> Payload:
        """The first message of a connection (no type byte): startup, SSL, GSSAPI or cancel request."""
        return Payload(self._sized())

    def read(self) -> tuple[bytes, Payload]:
        kind = self._exactly(1)
        return kind, Payload(self._sized())

    def send(self, kind: bytes, body: bytes = b"") -> None:
        self._out.append(kind + struct.pack("!i", len(body) + 4) + body)

    def send_raw(self, data: bytes) -> None:
        self._out.append(data)

    def flush(self) -> None:
        if self._out:
            self.sock.sendall(b"".join(self._out))
            self._out.clear()


def cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


def authentication(code: int, data: bytes = b"") -> tuple[bytes, bytes]:
    return b"R", struct.pack("!i", code) + data


def parameter_status(name: str, value: str) -> tuple[bytes, bytes]:
    return b"S", cstring(name) + cstring(value)


def backend_key(process_id: int, secret: int) -> tuple[bytes, bytes]:
    return b"K", struct.pack("!ii", process_id, secret)


def ready_for_query(status: bytes) -> tuple[bytes, bytes]:
    return b"Z", status


def command_complete(tag: str) -> tuple[bytes, bytes]:
    return b"C", cstring(tag)


@dataclass(frozen=True)
class Field:
    """One column of a RowDescription."""

    name: str
    type_oid: int
    type_size: int
    type_modifier: int = -1
    binary: bool = False


def row_description(fields: list[Field]) -> tuple[bytes, bytes]:
    body = struct.pack("!h", len(fields))
    for f in fields:
        body += cstring(f.name) + struct.pack("!ihihih", 0, 0, f.type_oid, f.type_size, f.type_modifier, int(f.binary))
    return b"T", body


def data_row(values: list[bytes | None]) -> bytes:
    """A DataRow, framed (rows are many: built directly)."""
    parts = [struct.pack("!h", len(values))]
    for value in values:
        parts.append(b"\xff\xff\xff\xff" if value is None else struct.pack("!i", len(value)) + value)
    body = b"".join(parts)
    return b"D" + struct.pack("!i", len(body) + 4) + body


def parameter_description(oids: list[int]) -> tuple[bytes, bytes]:
    return b"t", struct.pack(f"!h{len(oids)}i", len(oids), *oids)


def error_response(code: str, message: str, hint: str | None = None, severity: str = "ERROR") -> tuple[bytes, bytes]:
    body = b"S" + cstring(severity) + b"V" + cstring(severity) + b"C" + cstring(code) + b"M" + cstring(message)
    if hint:
        body += b"H" + cstring(hint)
    return b"E", body + b"\x00"

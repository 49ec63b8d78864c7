"""SCRAM-SHA-256 (RFC 5802, RFC 7677), the server side, as Postgres speaks it.

The password never crosses the wire: the client proves it knows it, and the server proves it
knows the stored key. No channel binding is offered (no ``-PLUS`` mechanism), so clients send the
``n`` or ``y`` GS2 header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096


class AuthenticationFailedError(ValueError):
    """The client's proof does not match (wrong password) or its messages are malformed."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Verifier:
    """What the server keeps of a password: salt, iterations, stored key and server key."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, iterations: int = ITERATIONS) -> Verifier:
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key"))


def _attributes(message: str) -> dict[str, str]:
    pairs = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise AuthenticationFailedError(f"malformed SCRAM attribute {part!r}")
        pairs[part[0]] = part[2:]
    return pairs


class ScramExchange:
    """One authentication: ``first`` answers the client-first message, ``final`` the client-final one."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._header = ""

    def first(self, client_first: str) -> str:
        header, _, bare = client_first.partition(",")
        authzid, _, bare = bare.partition(",")
        if header not in {"n", "y"} or authzid:
            raise AuthenticationFailedError("channel binding and authorization identities are not supported")
        client_nonce = _attributes(bare).get("r")
        if not client_nonce:
            raise AuthenticationFailedError("the client-first message has no nonce")
        self._header = f"{header},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.verifier.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        without_proof, _, proof_part = client_final.rpartition(",p=")
        attributes = _attributes(without_proof)
        if attributes.get("r") != self._nonce:
            raise AuthenticationFailedError("the nonce changed during the exchange")
        if base64.b64decode(attributes.get("c", "")) != self._header.encode():
            raise AuthenticationFailedError("the channel binding does not match the first message")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        proof = base64.b64decode(proof_part)
        signature = _hmac(self.verifier.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if len(proof) != len(signature) or not hmac.compare_digest(
            hashlib.sha256(client_key).digest(), self.verifier.stored_key
        ):
            raise AuthenticationFailedError("password authentication failed")
        return "v=" + base64.b64encode(_hmac(self.verifier.server_key, auth_message)).decode()

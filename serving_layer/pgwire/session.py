"""One client connection: startup and SCRAM authentication, then simple and extended queries."""

from __future__ import annotations

import logging
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from serving_layer.pgwire import protocol as pg
from serving_layer.pgwire import types
from serving_layer.pgwire.scram import MECHANISM, AuthenticationFailedError, ScramExchange, Verifier
from serving_layer.pgwire.sql_text import split_statements
from serving_layer.pgwire.statements import Column, Outcome, StatementError, StatementRunner, parameter_count

log = logging.getLogger(__name__)
SASL, SASL_CONTINUE, SASL_FINAL, OK = 10, 11, 12, 0
FLUSH_BYTES = 256 * 1024
STATEMENT_MESSAGES = {b"Q", b"E"}  # a simple query, or the execution of a bound portal


@dataclass(frozen=True)
class Admission:
    """What a session needs from its server: credentials, TLS, and its place among the connections."""

    user: str
    verifier: Verifier
    tls: ssl.SSLContext | None
    admitted: bool  # False when max connections are reached: refused after startup, with the reason
    max_connections: int
    register_cancel: Callable[[int, int, Callable[[], None] | None], None]
    cancel: Callable[[int, int], None]
    observe_statement: Callable[[str | None, float], None]  # SQLSTATE (None: ok), seconds
    observe_login: Callable[[bool], None]


@dataclass
class Prepared:
    sql: str
    parameter_oids: list[int]


@dataclass
class Portal:
    prepared: Prepared
    parameters: list[object]
    result_binary: list[bool]
    outcome: Outcome | None = None
    rows: Iterator[tuple[object, ...]] = field(default_factory=lambda: iter(()))
    sent: int = 0


class Session:
    """Speaks the protocol with one client over ``wire`` and runs its statements with ``runner``."""

    def __init__(self, wire: pg.Wire, runner_factory: Callable[[], StatementRunner], admission: Admission) -> None:
        self.wire = wire
        self._runner_factory = runner_factory
        self.admission = admission
        self.runner: StatementRunner | None = None
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self._skip_to_sync = False

    # -- startup ---------------------------------------------------------------------------

    def serve(self) -> None:
        startup = self._startup()
        if startup is None:
            return
        if not self.admission.admitted:
            self._fatal(
                "53300",
                f"sorry, too many clients already (the maximum is {self.admission.max_connections})",
                "retry later, or raise LAMBDA_SERVING_MAX_CONNECTIONS",
            )
            return
        user = startup.get("user", "")
        if not self._authenticate(user):
            return
        self.wire.sock.settimeout(None)  # logged in: an idle session may stay (until max connections)
        self.runner = self._runner_factory()
        process_id, secret = secrets.randbits(31), secrets.randbits(31)
        self.admission.register_cancel(process_id, secret, self.runner.interrupt)
        try:
            self._greet(startup, process_id, secret)
            self._loop()
        finally:
            self.admission.register_cancel(process_id, secret, None)
            self.runner.connection.close()

    def _startup(self) -> dict[str, str] | None:
        while True:
            payload = self.wire.read_startup()
            code = payload.int32()
            if code == pg.SSL_REQUEST:
                self._start_tls()
            elif code == pg.GSSENC_REQUEST:
                self.wire.send_raw(b"N")
                self.wire.flush()
            elif code == pg.CANCEL_REQUEST:
                self.admission.cancel(payload.int32(), payload.int32())
                return None
            elif code == pg.PROTOCOL_3:
                parameters = {}
                while (name := payload.cstring()) != "":
                    parameters[name] = payload.cstring()
                return parameters
            else:
                self._fatal(
                    "0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: this server speaks 3.0"
                )
                return None

    def _start_tls(self) -> None:
        tls = self.admission.tls
        self.wire.send_raw(b"S" if tls else b"N")
        self.wire.flush()
        if tls:
            self.wire.sock = tls.wrap_socket(self.wire.sock, server_side=True)

    def _authenticate(self, user: str) -> bool:
        self.wire.send(*pg.authentication(SASL, pg.cstring(MECHANISM) + b"\x00"))
        self.wire.flush()
        exchange = ScramExchange(self.admission.verifier)
        try:
            kind, payload = self.wire.read()
            if kind != b"p" or payload.cstring() != MECHANISM:
                raise AuthenticationFailedError(f"only {MECHANISM} is accepted")
            size = payload.int32()
            self.wire.send(*pg.authentication(SASL_CONTINUE, exchange.first(payload.raw(size).decode()).encode()))
            self.wire.flush()
            kind, payload = self.wire.read()
            if kind != b"p":
                raise AuthenticationFailedError("expected the SCRAM client-final message")
            server_final = exchange.final(payload.rest().decode())
            if user != self.admission.user:
                raise AuthenticationFailedError("unknown user")
        except (AuthenticationFailedError, ValueError) as error:
            log.info("refused a login as %r: %s", user, error)
            self.admission.observe_login(False)
            self._fatal(
                "28P01",
                f'password authentication failed for user "{user}"',
                "the user and password are LAMBDA_SERVING_PG_USER and LAMBDA_SERVING_PG_PASSWORD",
            )
            return False
        self.wire.send(*pg.authentication(SASL_FINAL, server_final.encode()))
        self.wire.send(*pg.authentication(OK))
        self.admission.observe_login(True)
        return True

    def _greet(self, startup: dict[str, str], process_id: int, secret: int) -> None:
        status = {
            "server_version": "16.0",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "IntervalStyle": "postgres",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "off",
            "default_transaction_read_only": "on",
            "in_hot_standby": "off",
            "session_authorization": self.admission.user,
            "application_name": startup.get("application_name", ""),
        }
        for name, value in status.items():
            self.wire.send(*pg.parameter_status(name, value))
        self.wire.send(*pg.backend_key(process_id, secret))
        self._ready()

    def _fatal(self, code: str, message: str, hint: str | None = None) -> None:
        self.wire.send(*pg.error_response(code, message, hint, severity="FATAL"))
        self.wire.flush()

    # -- the message loop ------------------------------------------------------------------

    def _ready(self) -> None:
        assert self.runner is not None
        status = b"E" if self.runner.failed_transaction else b"T" if self.runner.in_transaction else b"I"
        self.wire.send(*pg.ready_for_query(status))
        self.wire.flush()

    def _loop(self) -> None:
        handlers: dict[bytes, Callable[[pg.Payload], None]] = {
            b"Q": self._simple_query,
            b"P": self._parse,
            b"B": self._bind,
            b"D": self._describe,
            b"E": self._execute,
            b"C": self._close,
            b"H": lambda _: self.wire.flush(),
        }
        while True:
            kind, payload = self.wire.read()
            if kind == b"X":
                return
            if kind == b"S":
                self._skip_to_sync = False
                self._ready()
                continue
            if self._skip_to_sync:
                continue
            handler = handlers.get(kind)
            started = time.perf_counter()
            try:
                if handler is None:
                    raise StatementError("0A000", f"protocol message {kind!r} is not supported by the serving endpoint")
                handler(payload)
                if kind in STATEMENT_MESSAGES:
                    self.admission.observe_statement(None, time.perf_counter() - started)
            except (StatementError, types.UnsupportedFormatError) as error:
                code = error.code if isinstance(error, StatementError) else "0A000"
                self.admission.observe_statement(code, time.perf_counter() - started)
                self._send_error(error)
                if kind != b"Q":
                    self._skip_to_sync = True  # extended protocol: ignore messages until Sync
                else:
                    self._ready()

    def _send_error(self, error: Exception) -> None:
        if isinstance(error, StatementError):
            self.wire.send(*pg.error_response(error.code, error.message, error.hint))
        else:
            self.wire.send(*pg.error_response("0A000", str(error)))

    def _simple_query(self, payload: pg.Payload) -> None:
        assert self.runner is not None
        statements = split_statements(payload.cstring())
        if not statements:
            self.wire.send(b"I")
        for sql in statements:
            outcome = self.runner.run(sql)
            portal = Portal(Prepared(sql, []), [], [], outcome, outcome.rows)
            if outcome.columns is not None:
                self.wire.send(*pg.row_description(_fields(outcome.columns, [])))
            self._send_rows(portal, 0)
        self._ready()

    def _parse(self, payload: pg.Payload) -> None:
        name, sql = payload.cstring(), payload.cstring()
        oids = [payload.int32() for _ in range(payload.int16())]
        count = parameter_count(sql)
        oids = [*oids, *[0] * (count - len(oids))]
        self.prepared[name] = Prepared(sql, oids)
        self.wire.send(b"1")

    def _bind(self, payload: pg.Payload) -> None:
        portal_name, statement_name = payload.cstring(), payload.cstring()
        prepared = self.prepared.get(statement_name)
        if prepared is None:
            raise StatementError("26000", f'prepared statement "{statement_name}" does not exist')
        formats = [payload.int16() for _ in range(payload.int16())]
        values = []
        for index in range(payload.int16()):
            size = payload.int32()
            data = None if size < 0 else payload.raw(size)
            binary = bool(formats[index] if len(formats) > 1 else formats[0] if formats else 0)
            oid = prepared.parameter_oids[index] if index < len(prepared.parameter_oids) else 0
            try:
                values.append(types.decode_parameter(data, oid, binary))
            except (ValueError, ArithmeticError) as error:
                raise StatementError("22P02", f"parameter ${index + 1}: {error}") from None
        result_formats = [bool(payload.int16()) for _ in range(payload.int16())]
        self.portals[portal_name] = Portal(prepared, values, result_formats)
        self.wire.send(b"2")

    def _describe(self, payload: pg.Payload) -> None:
        assert self.runner is not None
        target, name = payload.raw(1), payload.cstring()
        if target == b"S":
            prepared = self.prepared.get(name)
            if prepared is None:
                raise StatementError("26000", f'prepared statement "{name}" does not exist')
            self.wire.send(*pg.parameter_description([oid or types.TEXT for oid in prepared.parameter_oids]))
            columns = self.runner.describe(prepared.sql)
            self.wire.send(*(pg.row_description(_fields(columns, [])) if columns else (b"n", b"")))
            return
        portal = self._portal(name)
        self._start(portal)
        assert portal.outcome is not None
        columns = portal.outcome.columns
        self.wire.send(
            *(pg.row_description(_fields(columns, portal.result_binary)) if columns is not None else (b"n", b""))
        )

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise StatementError("34000", f'portal "{name}" does not exist')
        return portal

    def _start(self, portal: Portal) -> None:
        assert self.runner is not None
        if portal.outcome is None:
            portal.outcome = self.runner.run(portal.prepared.sql, portal.parameters)
            portal.rows = portal.outcome.rows

    def _execute(self, payload: pg.Payload) -> None:
        portal = self._portal(payload.cstring())
        limit = payload.int32()
        if not portal.prepared.sql.strip():
            self.wire.send(b"I")
            return
        self._start(portal)
        self._send_rows(portal, limit)

    def _send_rows(self, portal: Portal, limit: int) -> None:
        outcome = portal.outcome
        assert outcome is not None
        columns = outcome.columns or []
        binary = _binary_flags(columns, portal.result_binary)
        pending = 0
        for row in portal.rows:
            message = pg.data_row(
                [
                    None if value is None else types.encode(value, column.type_oid, is_binary)
                    for value, column, is_binary in zip(row, columns, binary, strict=True)
                ]
            )
            self.wire.send_raw(message)
            portal.sent += 1
            pending += len(message)
            if pending > FLUSH_BYTES:
                self.wire.flush()
                pending = 0
            if limit > 0 and portal.sent % limit == 0:
                self.wire.send(b"s")  # PortalSuspended: the client asks for more with another Execute
                return
        self.wire.send(*pg.command_complete(f"SELECT {portal.sent}" if outcome.tag == "SELECT" else outcome.tag))

    def _close(self, payload: pg.Payload) -> None:
        target, name = payload.raw(1), payload.cstring()
        (self.prepared if target == b"S" else self.portals).pop(name, None)
        self.wire.send(b"3")


def _binary_flags(columns: list[Column], formats: list[bool]) -> list[bool]:
    if len(formats) == 1:
        return [formats[0]] * len(columns)
    return formats if len(formats) == len(columns) else [False] * len(columns)


def _fields(columns: list[Column], formats: list[bool]) -> list[pg.Field]:
    return [
        pg.Field(c.name, c.type_oid, c.type_size, c.type_modifier, binary)
        for c, binary in zip(columns, _binary_flags(columns, formats), strict=True)
    ]

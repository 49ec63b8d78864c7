"""The Postgres wire endpoint: a thread per client over the live views, with the platform's limits.

Every client gets its own DuckDB connection to the served in-memory database (so its queries see
one committed refresh each), the statement timeout, and a place among at most
``serving_max_connections`` connections; a cancel request (psql's Ctrl-C, JDBC's
``Statement.cancel``) interrupts the query of the connection whose key it names.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable

from lambda_contracts.settings import Settings
from serving_layer.live import LiveViews
from serving_layer.metrics import EndpointMetrics
from serving_layer.pgwire.catalog import SERVED_SCHEMA
from serving_layer.pgwire.protocol import ClientGoneError, Wire
from serving_layer.pgwire.results import ResultCache
from serving_layer.pgwire.scram import Verifier
from serving_layer.pgwire.session import Admission, Session
from serving_layer.pgwire.statements import StatementRunner, Watchdog

log = logging.getLogger(__name__)
LOGIN_TIMEOUT_S = 30.0


class EndpointConfigError(ValueError):
    """The endpoint cannot start as configured; the message says which setting to fix."""


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.serving_pg_tls_cert is None:
        return None
    if settings.serving_pg_tls_key is None:
        raise EndpointConfigError("LAMBDA_SERVING_PG_TLS_CERT is set but LAMBDA_SERVING_PG_TLS_KEY is not: give both")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.serving_pg_tls_cert, settings.serving_pg_tls_key)
    return context


class PgEndpoint(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, settings: Settings, live: LiveViews, metrics: EndpointMetrics | None = None) -> None:
        password = settings.serving_pg_password.get_secret_value()
        if not password:
            raise EndpointConfigError(
                "the Postgres endpoint needs a password: set LAMBDA_SERVING_PG_PASSWORD (there is no default)"
            )
        self.settings = settings
        self.live = live
        self.verifier = Verifier.from_password(password)
        self.tls = tls_context(settings)
        self.watchdog = Watchdog(settings.serving_statement_timeout_seconds)
        self.metrics = metrics or EndpointMetrics(live)
        self.results = ResultCache(
            live.database,
            lambda: live.latest.number if live.latest is not None else None,
            settings.serving_result_cache_rows,
            SERVED_SCHEMA,
            observe=lambda outcome: self.metrics.results.labels(outcome).inc(),
        )
        self._lock = threading.Lock()
        self._connections = 0
        self._cancels: dict[tuple[int, int], Callable[[], None]] = {}
        super().__init__((settings.serving_pg_host, settings.serving_pg_port), _Handler)

    @property
    def address(self) -> str:
        return f"{self.settings.serving_pg_host}:{self.server_address[1]}"

    def admit(self) -> bool:
        with self._lock:
            if self._connections >= self.settings.serving_max_connections:
                return False
            self._connections += 1
            self.metrics.connections.set(self._connections)
            return True

    def leave(self) -> None:
        with self._lock:
            self._connections -= 1
            self.metrics.connections.set(self._connections)

    def register_cancel(self, process_id: int, secret: int, interrupt: Callable[[], None] | None) -> None:
        with self._lock:
            if interrupt is None:
                self._cancels.pop((process_id, secret), None)
            else:
                self._cancels[(process_id, secret)] = interrupt

    def cancel(self, process_id: int, secret: int) -> None:
        with self._lock:
            interrupt = self._cancels.get((process_id, secret))
        if interrupt is not None:
            interrupt()


class _Handler(socketserver.BaseRequestHandler):
    server: PgEndpoint

    def handle(self) -> None:
        endpoint = self.server
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(LOGIN_TIMEOUT_S)  # a client that never logs in must not hold a place; lifted after login
        admitted = endpoint.admit()
        if not admitted:
            endpoint.metrics.refused_connections.inc()
        admission = Admission(
            user=endpoint.settings.serving_pg_user,
            verifier=endpoint.verifier,
            tls=endpoint.tls,
            admitted=admitted,
            max_connections=endpoint.settings.serving_max_connections,
            register_cancel=endpoint.register_cancel,
            cancel=endpoint.cancel,
            observe_statement=endpoint.metrics.statement,
            observe_login=lambda ok: endpoint.metrics.logins.labels("ok" if ok else "refused").inc(),
        )
        session = Session(
            Wire(sock), lambda: StatementRunner(endpoint.live.session(), endpoint.watchdog, endpoint.results), admission
        )
        try:
            session.serve()
        except (ClientGoneError, ConnectionError, ssl.SSLError, OSError) as error:
            log.debug("client %s left: %s", self.client_address, error)
        finally:
            if admitted:
                endpoint.leave()

"""The Server: listeners, a nursery of connection tasks, limits and graceful shutdown."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import types
from collections.abc import Mapping
from typing import Any, Final

import attrs
import trio

from . import _services as services
from ._auth_guard import AuthGuard, LocalFailureBudget
from ._config import ServerConfig
from ._connection_task import ConnectionTask
from ._early_talkers import GreetingGuard
from ._hooks import SYNC_HOOK_THREADS
from ._limits import AddressLimiter, PerAddressLimit
from ._link import FAREWELL_TIMEOUT
from ._listeners import Listener, accept, close_all, open_tcp, open_unix, sockaddr, start_line
from ._logger import LoggerLike, announce
from ._metrics import Metrics
from ._names import hostport
from ._relay_policy import RelayPolicy
from ._reload import serve_until_signalled
from ._replies import BUSY
from ._schema import Schema, make_schema
from ._settings import Authenticator, ConnectionSettings
from ._spool import Spool
from ._systemd import inherited_listeners, notify
from ._transport import SocketTransport
from .engine import EngineConfig
from .sinks import PrintSink, RelaySink

_REFUSE_TIMEOUT: Final = 2.0
#: Connections being told 421 (over max_connections) at once; more are just closed.
_MAX_REFUSING: Final = 64
#: Connections accepted in a row before the accept loop yields to the others.
_ACCEPT_BATCH: Final = 64


class Server:
    """An SMTP (or LMTP) server with one hook per command.

    Args:
        schema: ``{"events": {...}, "config": {...}, "data": factory}`` (all optional), or
            a :class:`~trio_smtp.Schema`. Unknown keys, unknown events and hooks that
            are not callable are refused here, naming the culprit.
        dependencies: Services for the hooks, reachable as ``ctx.deps``. The server
            itself uses ``logger`` (smtpjs-style object or :class:`logging.Logger`),
            ``sink`` (where messages go when there is no ``done`` hook; the print sink
            by default) and ``authenticator`` (``(mechanism, login, password) -> bool``,
            run in a thread; ``config["auth_file"]`` makes one).

    Raises:
        ValueError, TypeError: for a bad schema, config or dependency.
        OSError: for an unreadable auth file or TLS certificate.
    """

    def __init__(
        self,
        schema: Schema | Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
    ) -> None:
        self.schema = make_schema(schema)
        self.config: ServerConfig = self.schema.config
        self.hooks = self.schema.events
        self.data_factory = self.schema.data
        self.deps: Mapping[str, Any] = services.dependencies(dependencies)
        self.logger: LoggerLike = services.logger(self.deps, self.config)
        sink = self.deps.get("sink")
        self.sink = sink if sink is not None else PrintSink(logger=self.logger)
        metrics = self.deps.get("metrics")
        if metrics is not None and not isinstance(metrics, Metrics):
            raise TypeError(f"metrics must be a trio_smtp Metrics, not {metrics!r}")
        #: The server's Prometheus counters (``dependencies["metrics"]``; off by default).
        self.metrics: Metrics = metrics if metrics is not None else Metrics(enabled=False)
        self._settings: ConnectionSettings | None = None
        self._authenticator: Authenticator | None = services.authenticator(self.deps, self.config)
        self._ssl_context: ssl.SSLContext | None = services.ssl_context(self.config)
        self.hostname = self.config.hostname or "localhost"
        self.verifier = services.verifier(self.config)
        self.engine_config = self._engine_config(self.hostname)
        #: Counts connections per client address (``max_connections_per_ip``); may be
        #: replaced, before :meth:`serve`, by any :class:`~._limits.AddressLimiter`.
        self.address_limiter: AddressLimiter = PerAddressLimit(self.config.max_connections_per_ip)
        #: Who may relay: on with a RelaySink, or when relay_from/relay_domains are set.
        self.relay_policy: RelayPolicy | None = None
        if isinstance(self.sink, RelaySink) or self.config.relay_from or self.config.relay_domains:
            self.relay_policy = RelayPolicy(
                relay_from=self.config.relay_from, relay_domains=self.config.relay_domains
            )
        #: Failure budget per address, delays and threads for AUTH; its ``budget`` may be
        #: replaced, before :meth:`serve`, by any :class:`~._auth_guard.FailureBudget`.
        self.auth_guard = AuthGuard(
            LocalFailureBudget(self.config.max_auth_failures_per_ip),
            failure_delay=self.config.auth_failure_delay,
        )
        self._greeting = GreetingGuard(self.config.greet_delay)
        #: Where message bodies past ``spool_memory`` go, and the memory budget
        #: (``max_buffered_bytes``) all connections share.
        self.spool = Spool(
            spool_dir=self.config.spool_dir,
            spool_memory=self.config.spool_memory,
            max_buffered_bytes=self.config.max_buffered_bytes,
        )
        #: The ``(host, port)`` of every listener, once :meth:`serve` has bound them.
        self.addresses: list[tuple[str, int]] = []
        self._connections: set[ConnectionTask] = set()
        #: serve_stream's sessions run in their callers' tasks, outside serve()'s nursery:
        #: the end of the grace reaches them through these scopes.
        self._stream_scopes: dict[ConnectionTask, trio.CancelScope] = {}
        #: When the grace period of a shutdown in progress ends (Trio time).
        self._grace_deadline: float | None = None
        self._changed: trio.Event | None = None
        self._shutdown_requested = False
        self._refusing = 0
        self._shutdown_event: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._serving = False

    def __repr__(self) -> str:
        return f"<Server {', '.join(hostport(a) for a in self.addresses) or 'not serving'}>"

    def _engine_config(self, hostname: str) -> EngineConfig:
        auth = self.authenticator is not None or "AUTH" in self.hooks
        return self.config.engine_config(hostname, auth=auth)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context for STARTTLS and SMTPS; a new one applies to new connections."""
        return self._ssl_context

    @ssl_context.setter
    def ssl_context(self, context: ssl.SSLContext | None) -> None:
        self._ssl_context = context
        if self._settings is not None:
            self._settings = attrs.evolve(self._settings, ssl_context=context)

    @property
    def authenticator(self) -> Authenticator | None:
        """Checks AUTH credentials; a new one applies to new connections."""
        return self._authenticator

    @authenticator.setter
    def authenticator(self, authenticator: Authenticator | None) -> None:
        self._authenticator = authenticator
        if self._settings is not None:
            self._settings = attrs.evolve(self._settings, authenticator=authenticator)

    @property
    def early_talkers(self) -> int:
        """Clients refused so far for talking before the greeting (``greet_delay``)."""
        return self._greeting.refused

    @property
    def connections(self) -> int:
        """How many connections are open."""
        return len(self._connections)

    @property
    def connections_per_address(self) -> Mapping[str, int]:
        """Open connections by client address, as ``max_connections_per_ip`` counts them.

        A read-only snapshot; addresses with no connection are absent. Empty when
        :attr:`address_limiter` counts elsewhere (shared by ``--workers``).
        """
        counts: Mapping[str, int] = getattr(self.address_limiter, "counts", {})
        return types.MappingProxyType(dict(counts))

    async def wait_connections(self, n: int) -> None:
        """Wait until exactly ``n`` connections are open (returns at once if they are).

        The count changes when a connection task starts (after ``accept``, before the
        greeting) and when it has ended (after the ``close`` hook and the socket's
        close). Tests use it instead of polling :attr:`connections`::

            await server.wait_connections(0)   # every connection has ended

        Must be called in the Trio run that serves.
        """
        while len(self._connections) != n:
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def _count_changed(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def _connection_settings(self) -> ConnectionSettings:
        """What each connection gets (built once per :meth:`serve`)."""
        if self._settings is not None:
            return self._settings
        return ConnectionSettings(
            config=self.config,
            engine_config=self.engine_config,
            hostname=self.hostname,
            hooks=self.hooks,
            logger=self.logger,
            deps=self.deps,
            sink=self.sink,
            authenticator=self.authenticator,
            ssl_context=self.ssl_context,
            data_factory=self.data_factory,
            hook_threads=trio.CapacityLimiter(SYNC_HOOK_THREADS),
            verifier=self.verifier,
            relay_policy=self.relay_policy,
            auth_guard=self.auth_guard,
            greeting=self._greeting,
            metrics=self.metrics,
            spool=self.spool,
        )

    # ------------------------------------------------------------------ running

    async def serve(
        self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until :meth:`shutdown` or cancellation.

        ``task_status.started()`` reports the bound ``(host, port)`` addresses, so that
        ``await nursery.start(server.serve)`` gives the real port when ``port`` is 0.

        .. warning:: Cancelling the surrounding scope stops at once: each open
           connection gets a best-effort ``421 4.3.2`` and is closed, and transactions
           in progress are dropped (never acknowledged). :meth:`shutdown` is the
           graceful way, letting transactions finish for ``shutdown_grace`` seconds.

        Raises:
            OSError: if a listening address cannot be bound.
        """
        if self._serving:
            raise RuntimeError("this server is already serving")
        self._serving = True
        self._shutdown_event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        if self._shutdown_requested:
            self._shutdown_event.set()
        try:
            if self.config.hostname is None:
                # getfqdn() may block on DNS: never on the event loop.
                self.hostname = await trio.to_thread.run_sync(socket.getfqdn)
                self.engine_config = self._engine_config(self.hostname)
            self._settings = None
            self._settings = self._connection_settings()
            # Spool files a killed server left in the instant before their unlink.
            removed = await trio.to_thread.run_sync(self.spool.clean)
            if removed:
                self.logger.info(f"Removed {removed} leftover spool file(s)")
            listeners = await self._open_listeners()
            try:
                await self._serve_listeners(listeners, task_status)
            finally:
                close_all(listeners)
        finally:
            self._serving = False
            self._grace_deadline = None
            self._shutdown_requested = False  # a stopped server may serve again

    async def _open_listeners(self) -> list[Listener]:
        cfg = self.config
        ports: list[tuple[int, bool]] = []
        if cfg.port is not None:
            ports.append((cfg.port, False))
        if cfg.tls_port is not None:
            ports.append((cfg.tls_port, True))
        out: list[Listener] = []
        if cfg.systemd_sockets:
            # Socket activation (or a --workers supervisor's sockets): bound and
            # listening already; the sockets are ours now. systemd's replace the ports.
            inherited = inherited_listeners()
            if any(listener.kind == "systemd" for listener in inherited):
                ports = []
            out += inherited
        try:
            for path in cfg.unix:
                out += [open_unix(path, mode=cfg.unix_mode)]
            for port, implicit in ports:
                for host in cfg.host:
                    try:
                        out += await open_tcp(
                            host, port, implicit_tls=implicit, reuse_port=cfg.reuse_port
                        )
                    except OSError as exc:
                        raise OSError(
                            exc.errno, f"cannot listen on {hostport((host, port))}: {exc.strerror}"
                        ) from None
        except BaseException:
            close_all(out)  # synchronous: nothing is left open, even when cancelled
            raise
        return out

    async def _serve_listeners(
        self, listeners: list[Listener], task_status: trio.TaskStatus[list[tuple[str, int]]]
    ) -> None:
        assert self._shutdown_event is not None
        self.addresses = [listener.address for listener in listeners]
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(self._accept_loop, listener, connections)
                for listener in listeners:
                    suffix = ""
                    if self.config.worker is not None:
                        suffix = f" pid: {os.getpid()} worker: {self.config.worker}"
                    # Written whatever the log level: scripts learn the port from it.
                    announce(self.logger, start_line(listener) + suffix)
                task_status.started(list(self.addresses))
                notify("READY=1")
                await self._shutdown_event.wait()
                notify("STOPPING=1")
                acceptors.cancel_scope.cancel()
            close_all(listeners)
            grace = self.config.shutdown_grace
            self.logger.log(
                f"Server shutting down: {len(self._connections)} connection(s) open, "
                f"{grace:g} s grace"
            )
            deadline = self._grace_deadline = trio.current_time() + grace
            for conn in list(self._connections):
                conn.begin_shutdown(deadline)
            for scope in self._stream_scopes.values():
                scope.deadline = deadline
            connections.cancel_scope.deadline = deadline
        if self._stream_scopes:
            # serve_stream's sessions run in their callers' tasks, within the same grace
            # (past it cancelled, then bounded like the nursery's own): wait for them too.
            with trio.move_on_at(deadline + 2 * FAREWELL_TIMEOUT):
                await self.wait_connections(0)
        self.logger.log("Server stopped")

    async def _accept_loop(self, listener: Listener, nursery: trio.Nursery) -> None:
        lsock = listener.sock
        bound = listener.address
        try:
            wildcard = ipaddress.ip_address(bound[0].split("%", 1)[0]).is_unspecified
        except ValueError:
            wildcard = False
        accepted = 0
        while True:
            accepted += 1
            if accepted % _ACCEPT_BATCH == 0:
                await trio.lowlevel.checkpoint()  # a flood must not starve the others
            sock, peer_name = await accept(lsock, self._capacity_error)
            try:
                local = sockaddr(sock.getsockname()) if wildcard else bound
            except OSError:
                sock.close()
                continue
            stream = SocketTransport(sock)
            # A Unix socket's client has no address: all of them count as "unix".
            peer = sockaddr(peer_name) if peer_name else ("unix", 0)
            if len(self._connections) >= self.config.max_connections:
                self.metrics.connection_refused("max_connections", uncounted=True)
                if self._refusing >= _MAX_REFUSING:
                    # A flood: refusals get no task (nor a 421) past this many at once.
                    stream.close()
                    continue
                self._refusing += 1
                nursery.start_soon(self._refuse_accepted, stream, listener.implicit_tls, peer)
                continue
            conn = ConnectionTask(
                self._connection_settings(),
                stream,
                peer=peer,
                local=local,
                implicit_tls=listener.implicit_tls,
                limiter=self.address_limiter,
            )
            self._connections.add(conn)
            self._count_changed()
            nursery.start_soon(self._run_connection, conn)

    async def serve_stream(
        self,
        stream: trio.abc.Stream,
        *,
        peer: tuple[str, int],
        local: tuple[str, int] | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """Serve one SMTP session over a stream that is already connected.

        For connections the server did not accept itself: a socket handed over by
        another program, one end of :func:`trio.testing.memory_stream_pair` in a test
        (where Trio's autojump clock then drives every timeout), a stream wrapped to
        record what is sent. The session gets everything a listened one gets (hooks,
        limits, timeouts, TLS, the per-address count, :attr:`connections`), and
        :meth:`shutdown` ends it as it ends those while :meth:`serve` runs (the
        transaction may finish within ``shutdown_grace``; past it the session is
        cancelled); :meth:`serve` need not run (but when it does, call this in the same
        Trio run).
        Over ``max_connections`` the client gets ``421 4.7.0`` and the stream closes.

        Args:
            stream: The connection; this method closes it.
            peer: The client's ``(host, port)``: what hooks, logs, limits and the
                ``Received`` header see (a PROXY header may replace it).
            local: The server's ``(host, port)`` for this connection, if known.
            implicit_tls: Start with the TLS handshake (SMTPS, RFC 8314).

        Returns when the session has ended and the stream is closed; raises nothing
        but :exc:`trio.Cancelled` (the client then gets a best-effort ``421 4.3.2``).
        """
        if self._settings is None:
            if self.config.hostname is None:
                # getfqdn() may block on DNS: never on the event loop.
                self.hostname = await trio.to_thread.run_sync(socket.getfqdn)
                self.engine_config = self._engine_config(self.hostname)
            self._settings = self._connection_settings()
        if len(self._connections) >= self.config.max_connections:
            self.metrics.connection_refused("max_connections", uncounted=True)
            await self._refuse(stream, implicit_tls, peer)
            return
        conn = ConnectionTask(
            self._connection_settings(),
            stream,
            peer=peer,
            local=local,
            implicit_tls=implicit_tls,
            limiter=self.address_limiter,
        )
        self._connections.add(conn)
        self._count_changed()
        with trio.CancelScope() as scope:  # past serve()'s grace: cancelled, as its own are
            self._stream_scopes[conn] = scope
            if self._grace_deadline is not None:  # came during a shutdown's grace period
                conn.begin_shutdown(self._grace_deadline)
                scope.deadline = self._grace_deadline
            try:
                await self._run_connection(conn)
            finally:
                del self._stream_scopes[conn]

    def _capacity_error(self, exc: OSError) -> None:
        self.logger.error(f"accept() failed: {exc}; pausing 100 ms")

    async def _run_connection(self, conn: ConnectionTask) -> None:
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self._count_changed()

    async def _refuse_accepted(
        self, stream: SocketTransport, implicit: bool, peer: tuple[str, int]
    ) -> None:
        try:
            await self._refuse(stream, implicit, peer)
        finally:
            self._refusing -= 1

    async def _refuse(self, stream: trio.abc.Stream, implicit: bool, peer: tuple[str, int]) -> None:
        """Over ``max_connections``: 421 4.7.0 (unless TLS comes first), then close."""
        self.logger.warn(
            f"Connection refused: peer={hostport(peer)} (max_connections "
            f"{self.config.max_connections} reached)"
        )
        try:
            with trio.move_on_after(_REFUSE_TIMEOUT):
                try:
                    if not implicit:
                        await stream.send_all(BUSY.to_bytes())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            await trio.aclose_forcefully(stream)

    def shutdown(self) -> None:
        """Stop gracefully: stop accepting, let transactions finish, then 421.

        Safe to call from the server's own Trio run, from a signal handler task, from
        another thread, and from another Trio run (``ThreadedServer.stop()`` inside
        someone else's ``trio.run``).
        """
        self._shutdown_requested = True
        event = self._shutdown_event
        token = self._token
        if event is None or token is None:
            return
        try:
            current: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
        except RuntimeError:
            current = None
        if current is token:
            event.set()
            return
        try:
            token.run_sync_soon(event.set)
        except trio.RunFinishedError:
            pass

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (blocking).

        A second signal stops at once.
        """
        trio.run(serve_until_signalled, self)

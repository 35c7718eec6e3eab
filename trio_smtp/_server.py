"""The Server: listeners, a nursery of connection tasks, limits and graceful shutdown."""

from __future__ import annotations

import collections
import errno
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final

import trio

from ._auth_file import load_auth_file
from ._config import ServerConfig
from ._connection_task import ConnectionTask, _hostport
from ._logger import Logger, LoggerLike, as_logger
from ._schema import Schema, make_schema
from ._tls import server_ssl_context
from .engine import EngineConfig, Reply
from .sinks import PrintSink

#: accept() errors that mean "out of resources for now", not "the listener is broken".
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_BUSY: Final = Reply(421, "4.7.0 too many connections, try again later")
_REFUSE_TIMEOUT: Final = 2.0
_BACKLOG: Final = 1024
#: Connections being told 421 (over max_connections) at once; more are just closed.
_MAX_REFUSING: Final = 64

Authenticator = Callable[[str, str, str], bool]


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
        if dependencies is not None and not isinstance(dependencies, Mapping):
            raise TypeError(f"dependencies must be a mapping, not {dependencies!r}")
        self.deps: Mapping[str, Any] = dict(dependencies or {})
        logger = self.deps.get("logger")
        self.logger: LoggerLike = (
            Logger(level=self.config.log_level) if logger is None else as_logger(logger)
        )
        sink = self.deps.get("sink")
        if sink is not None and not callable(getattr(sink, "deliver", None)):
            raise TypeError(f"sink {sink!r} has no deliver(mail) method")
        self.sink = sink if sink is not None else PrintSink(logger=self.logger)
        authenticator = self.deps.get("authenticator")
        if authenticator is not None and not callable(authenticator):
            raise TypeError(f"authenticator must be callable, not {authenticator!r}")
        if authenticator is None and self.config.auth_file is not None:
            authenticator = load_auth_file(self.config.auth_file)
        self.authenticator: Authenticator | None = authenticator
        self.ssl_context: ssl.SSLContext | None = None
        if self.config.tls_cert is not None:
            assert self.config.tls_key is not None
            self.ssl_context = server_ssl_context(
                self.config.tls_cert,
                self.config.tls_key,
                sni=self.config.tls_sni,
                client_ca=self.config.tls_client_ca,
            )
        self.hostname = self.config.hostname or "localhost"
        self.engine_config = self._engine_config(self.hostname)
        #: The ``(host, port)`` of every listener, once :meth:`serve` has bound them.
        self.addresses: list[tuple[str, int]] = []
        self._connections: set[ConnectionTask] = set()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._shutdown_requested = False
        self._refusing = 0
        self._shutdown_event: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._serving = False

    def __repr__(self) -> str:
        return f"<Server {', '.join(_hostport(a) for a in self.addresses) or 'not serving'}>"

    def _engine_config(self, hostname: str) -> EngineConfig:
        auth = self.authenticator is not None or "AUTH" in self.hooks
        return self.config.engine_config(hostname, auth=auth)

    @property
    def connections(self) -> int:
        """How many connections are open."""
        return len(self._connections)

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
            listeners = await self._open_listeners()
            await self._serve_listeners(listeners, task_status)
        finally:
            self._serving = False
            self._shutdown_requested = False  # a stopped server may serve again

    async def _open_listeners(self) -> list[tuple[trio.SocketListener, bool]]:
        cfg = self.config
        out: list[tuple[trio.SocketListener, bool]] = []
        try:
            ports: list[tuple[int, bool]] = []
            if cfg.port is not None:
                ports.append((cfg.port, False))
            if cfg.tls_port is not None:
                ports.append((cfg.tls_port, True))
            for port, implicit in ports:
                for host in cfg.host:
                    try:
                        if cfg.reuse_port:
                            listeners = [await _reuse_port_listener(host, port)]
                        else:
                            listeners = await trio.open_tcp_listeners(
                                port, host=host, backlog=_BACKLOG
                            )
                    except OSError as exc:
                        raise OSError(
                            exc.errno, f"cannot listen on {_hostport((host, port))}: {exc.strerror}"
                        ) from None
                    out.extend((lst, implicit) for lst in listeners)
        except BaseException:
            for lst, _ in out:
                await lst.aclose()
            raise
        return out

    async def _serve_listeners(
        self,
        listeners: list[tuple[trio.SocketListener, bool]],
        task_status: trio.TaskStatus[list[tuple[str, int]]],
    ) -> None:
        assert self._shutdown_event is not None
        self.addresses = []
        for listener, _ in listeners:
            name = listener.socket.getsockname()
            self.addresses.append((name[0], name[1]))
        try:
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as acceptors:
                    for listener, implicit in listeners:
                        acceptors.start_soon(self._accept_loop, listener, implicit, connections)
                    for host, port in self.addresses:
                        suffix = ""
                        if self.config.worker is not None:
                            suffix = f" pid: {os.getpid()} worker: {self.config.worker}"
                        self.logger.log(f"Server start on ip: {host} port: {port}{suffix}")
                    task_status.started(list(self.addresses))
                    await self._shutdown_event.wait()
                    acceptors.cancel_scope.cancel()
                for listener, _ in listeners:
                    await listener.aclose()
                grace = self.config.shutdown_grace
                self.logger.log(
                    f"Server shutting down: {len(self._connections)} connection(s) open, "
                    f"{grace:g} s grace"
                )
                for conn in list(self._connections):
                    conn.begin_shutdown()
                connections.cancel_scope.deadline = trio.current_time() + grace
        finally:
            for listener, _ in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
        self.logger.log("Server stopped")

    async def _accept_loop(
        self, listener: trio.SocketListener, implicit: bool, nursery: trio.Nursery
    ) -> None:
        raw = getattr(listener.socket, "_sock", None)  # the stdlib socket under trio's
        bound = _addr(listener.socket.getsockname())
        wildcard = ipaddress.ip_address(bound[0].split("%", 1)[0]).is_unspecified
        accepted = 0
        while True:
            accepted += 1
            if accepted % 64 == 0:
                await trio.lowlevel.checkpoint()  # a flood must not starve the others
            if isinstance(raw, socket.socket):
                # Take every connection already queued in one go: a burst of clients
                # costs one trip through the scheduler, not one per connection.
                try:
                    sock, peer_name = raw.accept()
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(raw)
                    continue
                except OSError as exc:
                    await self._accept_failed(exc)
                    continue
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                peer = _addr(peer_name)
                try:
                    local = _addr(sock.getsockname()) if wildcard else bound
                except OSError:
                    await trio.aclose_forcefully(stream)
                    continue
            else:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    await self._accept_failed(exc)
                    continue
                try:
                    peer = _addr(stream.socket.getpeername())
                    local = _addr(stream.socket.getsockname())
                except OSError:
                    await trio.aclose_forcefully(stream)
                    continue
            if len(self._connections) >= self.config.max_connections:
                if self._refusing >= _MAX_REFUSING:
                    # A flood: refusals get no task (nor a 421) past this many at once.
                    stream.socket.close()
                    continue
                self._refusing += 1
                nursery.start_soon(self._refuse, stream, implicit, peer)
                continue
            conn = ConnectionTask(self, stream, peer=peer, local=local, implicit_tls=implicit)
            self._connections.add(conn)
            nursery.start_soon(self._run_connection, conn)

    async def _accept_failed(self, exc: OSError) -> None:
        """Out of file descriptors or memory: pause and retry; anything else is fatal."""
        if exc.errno not in _CAPACITY_ERRNOS:
            raise exc
        self.logger.error(f"accept() failed: {exc}; pausing 100 ms")
        await trio.sleep(0.1)

    async def _run_connection(self, conn: ConnectionTask) -> None:
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    async def _refuse(
        self, stream: trio.SocketStream, implicit: bool, peer: tuple[str, int]
    ) -> None:
        self.logger.warn(
            f"Connection refused: peer={_hostport(peer)} (max_connections "
            f"{self.config.max_connections} reached)"
        )
        try:
            with trio.move_on_after(_REFUSE_TIMEOUT):
                try:
                    if not implicit:
                        await stream.send_all(_BUSY.to_bytes())
                except (trio.BrokenResourceError, OSError):
                    pass
            await trio.aclose_forcefully(stream)
        finally:
            self._refusing -= 1

    def _admit_ip(self, ip: str) -> bool:
        if self._per_ip[ip] >= self.config.max_connections_per_ip:
            self.logger.warn(
                f"Connection refused: {ip} has {self._per_ip[ip]} connections "
                f"(max_connections_per_ip {self.config.max_connections_per_ip})"
            )
            return False
        self._per_ip[ip] += 1
        return True

    def _release_ip(self, ip: str) -> None:
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def _proxy_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.config.proxy_from)

    def shutdown(self) -> None:
        """Stop gracefully: stop accepting, let transactions finish, then 421.

        Safe to call from the server's own Trio run, from a signal handler task, and
        from another thread.
        """
        self._shutdown_requested = True
        event = self._shutdown_event
        if event is None:
            return
        token = self._token
        try:
            trio.lowlevel.current_trio_token()
            in_run = True
        except RuntimeError:
            in_run = False
        if in_run:
            event.set()
        elif token is not None:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (blocking).

        A second signal stops at once.
        """
        trio.run(self._run_with_signals)

    async def _run_with_signals(self) -> None:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        if not self._shutdown_requested:
                            self.logger.log(f"Received {signal.Signals(signum).name}")
                            self.shutdown()
                        else:
                            self.logger.warn("Second signal: stopping now")
                            nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self.serve()
            nursery.cancel_scope.cancel()


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A listener that shares its port with other processes (``--workers``)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOTSUP, "SO_REUSEPORT is not available on this platform")
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST
    )
    family, type_, proto, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(sockaddr)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _addr(name: Any) -> tuple[str, int]:
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return (str(name), 0)

"""Listening sockets: opening them, and accepting from them.

The server owns plain stdlib sockets (non-blocking), so that an accepted connection
is a stdlib socket too, wrapped in our :class:`~._transport.SocketTransport`.
Opening follows ``trio.open_tcp_listeners`` (``SO_REUSEADDR``, ``IPV6_V6ONLY``, one
socket per address the host resolves to); every socket opened so far is closed,
synchronously and so even when cancelled, if a later one fails.

:func:`accept` retries exactly the errors Trio's ``SocketListener.accept`` retries
(a connection that died before it was accepted) and pauses on the capacity errors
Trio passes on (out of file descriptors or memory); any other error is raised.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

#: Trio's ``_ignorable_accept_errno_names`` (trio/_highlevel_socket.py): errors about
#: the connection being accepted, not about the listener.
_RETRY_NAMES: Final = (
    "EPERM",
    "ECONNABORTED",
    "EPROTO",
    "ENETDOWN",
    "ENOPROTOOPT",
    "EHOSTDOWN",
    "ENONET",
    "EHOSTUNREACH",
    "EOPNOTSUPP",
    "ENETUNREACH",
    "ENOSR",
    "ESOCKTNOSUPPORT",
    "EPROTONOSUPPORT",
    "ETIMEDOUT",
    "ECONNRESET",
)
RETRY_ERRNOS: Final = frozenset(getattr(errno, n) for n in _RETRY_NAMES if hasattr(errno, n))
#: accept() errors that mean "out of resources for now": pause, then retry.
CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long the accept loop pauses after a capacity error.
CAPACITY_PAUSE: Final = 0.1
BACKLOG: Final = 1024


@attrs.frozen(kw_only=True)
class Listener:
    """A listening socket and how its connections start.

    Attributes:
        sock: The bound, listening, non-blocking socket (the server closes it).
        implicit_tls: Whether connections start with the TLS handshake (SMTPS).
    """

    sock: socket.socket
    implicit_tls: bool = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return sockaddr(self.sock.getsockname())


def sockaddr(name: Any) -> tuple[str, int]:
    """A socket address as ``(host, port)`` (``(path, 0)`` for a Unix socket)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return (str(name), 0)


def close_all(listeners: list[Listener]) -> None:
    """Close every listener's socket (synchronous: safe while cancelled)."""
    for listener in listeners:
        listener.sock.close()


async def open_tcp(
    host: str, port: int, *, implicit_tls: bool = False, reuse_port: bool = False
) -> list[Listener]:
    """Listen on every address ``host`` resolves to (as ``trio.open_tcp_listeners``).

    Args:
        host: A host name or address; resolved off the event loop.
        port: The port; 0 picks a free one.
        implicit_tls: Marks the listeners as SMTPS.
        reuse_port: Share the port with other processes (``SO_REUSEPORT``,
            ``--workers``); then only the first address is used.

    Raises:
        OSError: if an address cannot be bound (nothing stays open then).
    """
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if reuse_port else 0)
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    if reuse_port:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise OSError(errno.ENOTSUP, "SO_REUSEPORT is not available on this platform")
        infos = infos[:1]
    out: list[Listener] = []
    unsupported: list[OSError] = []
    try:
        for family, type_, proto, _, address in infos:
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise
                unsupported.append(exc)
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setblocking(False)
                sock.bind(address)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
            out.append(Listener(sock=sock, implicit_tls=implicit_tls))
    except BaseException:
        close_all(out)
        raise
    if not out and unsupported:
        raise unsupported[0]
    return out


async def accept(
    sock: socket.socket, on_capacity_error: Callable[[OSError], None]
) -> tuple[socket.socket, Any]:
    """The next connection from a listening socket (waits until there is one).

    Not a checkpoint when a connection is already queued: a burst of clients costs
    one trip through the scheduler, not one per connection (the caller yields now
    and then).

    Raises:
        OSError: for an error Trio does not retry either.
    """
    while True:
        try:
            return sock.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
        except OSError as exc:
            if exc.errno in RETRY_ERRNOS:
                await trio.lowlevel.checkpoint()
            elif exc.errno in CAPACITY_ERRNOS:
                on_capacity_error(exc)
                await trio.sleep(CAPACITY_PAUSE)
            else:
                raise

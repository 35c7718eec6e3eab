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
import os
import socket
import stat
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
        kind: ``"tcp"``, ``"unix"`` (a socket file we made and remove) or ``"systemd"``
            (inherited through socket activation).
    """

    sock: socket.socket
    implicit_tls: bool = False
    kind: str = "tcp"
    #: ``(st_dev, st_ino)`` of the socket file we made, so that only it is removed.
    file_id: tuple[int, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (``(path, 0)`` for a Unix socket)."""
        return sockaddr(self.sock.getsockname())

    @property
    def unix_path(self) -> str | None:
        """The socket file of a Unix listener, else ``None``."""
        if self.sock.family != socket.AF_UNIX:
            return None
        name = self.sock.getsockname()
        return name if isinstance(name, str) and name else None


def start_line(listener: Listener) -> str:
    """The smtpjs start line of a listener, naming what is not plain SMTP over TCP.

    ``Server start on ip: 127.0.0.1 port: 1337``, ``... port: 1465 (smtps)``,
    ``Server start on unix: /run/lmtp.sock (unix)``.
    """
    kinds = []
    path = listener.unix_path
    if listener.kind == "systemd":
        kinds.append("systemd")
    if path is not None:
        kinds.append("unix")
    if listener.implicit_tls:
        kinds.append("smtps")
    suffix = f" ({', '.join(kinds)})" if kinds else ""
    if path is not None:
        return f"Server start on unix: {path}{suffix}"
    host, port = listener.address
    return f"Server start on ip: {host} port: {port}{suffix}"


def sockaddr(name: Any) -> tuple[str, int]:
    """A socket address as ``(host, port)`` (``(path, 0)`` for a Unix socket)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return (str(name), 0)


def close_all(listeners: list[Listener]) -> None:
    """Close every listener's socket (synchronous: safe while cancelled).

    The socket file of a Unix listener we made is removed (if it is still ours).
    """
    for listener in listeners:
        if listener.sock.fileno() == -1:
            continue  # closed already
        path = listener.unix_path if listener.file_id is not None else None
        if path is not None:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == listener.file_id:
                    os.unlink(path)
            except OSError:
                pass
        listener.sock.close()


def open_unix(path: str, *, mode: int | None = None) -> Listener:
    """Listen on the Unix socket ``path`` (``--unix``), as Postfix's LMTP client expects.

    A socket file left by a server that is gone is replaced; one that a live server
    answers on is not (``EADDRINUSE``), nor is a file that is not a socket.

    Args:
        path: The socket file.
        mode: Its permission bits (``0o660`` lets a group connect); the umask's otherwise.

    Raises:
        OSError: naming the path.
    """
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except OSError:
                    os.unlink(path)  # stale: nobody listens any more
                else:
                    raise OSError(errno.EADDRINUSE, "Address already in use")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.setblocking(False)
        sock.listen(BACKLOG)
        st = os.stat(path)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {path}: {exc.strerror}") from None
    return Listener(sock=sock, kind="unix", file_id=(st.st_dev, st.st_ino))


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

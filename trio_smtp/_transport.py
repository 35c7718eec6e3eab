"""The transport: our own :class:`trio.abc.HalfCloseableStream` over an accepted socket.

Theory of operation: the server keeps the stdlib socket that ``accept()`` returned
and wraps it here, so the connection task talks to one Stream type (this one, or a
:class:`trio.SSLStream` over it) and nothing reads a private attribute of a Trio
object.

Every receive and send follows Trio's checkpoint order for non-blocking sockets
(``trio/_socket.py``, ``_try_sync`` and ``_nonblocking_helper``): raise
``Cancelled`` *before* the syscall (``checkpoint_if_cancelled``), try it once, and
after a successful call yield with ``cancel_shielded_checkpoint``, which schedules
but never raises. A cancelled receive therefore never throws away bytes it already
took from the kernel. Only when the call would block does it wait with
``wait_readable``/``wait_writable``, which raise ``Cancelled`` before the retry.

The two shortcuts are not checkpoints. :meth:`SocketTransport.send_nowait`: replies
are small and the socket buffer large, so a ``send()`` nearly always takes everything
at once without a trip through the scheduler; the connection task follows it with a
read (profiled with cProfile under ``smtp-source``: one scheduler trip per command
instead of two). :meth:`SocketTransport.receive_nowait`: when the client's next
command is already in the kernel (most of the time under load), the task takes it
without yielding, and checkpoints through :meth:`SocketTransport.receive_some` at
least every few reads (``Link.receive``), so no client can hold the loop for long.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any, Final

import trio

#: Errnos that mean our side closed the socket (trio's ``_closed_stream_errnos``).
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})
#: Trio's choice for ``SocketStream`` (trio issue #72): keep little unsent data queued.
_NOTSENT_LOWAT: Final = 2**14
DEFAULT_RECEIVE_SIZE: Final = 65536


def _stream_error(exc: OSError, what: str) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket {what} failed: {exc}")


class SocketTransport(trio.abc.HalfCloseableStream):
    """A connected, non-blocking stdlib socket as a Trio stream.

    Takes ownership of ``sock``: closing the transport closes it. Like
    :class:`trio.SocketStream`, it turns on ``TCP_NODELAY`` (and
    ``TCP_NOTSENT_LOWAT`` where the platform has it) for TCP sockets.

    Args:
        sock: A connected ``SOCK_STREAM`` socket (TCP or Unix).
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = ("_sending", "_shut_wr", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
            except OSError:
                pass  # a connection already reset: the first receive reports it
        #: The socket (ours: the server accepted it).
        self.sock = sock
        self._sending = False
        self._shut_wr = False

    def __repr__(self) -> str:
        return f"<SocketTransport fd={self.sock.fileno()}>"

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        sock = self.sock
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise _stream_error(exc, "receive") from exc
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        return await self.receive_when_readable(max_bytes)

    async def receive_when_readable(self, max_bytes: int) -> bytes:
        """Wait until the socket is readable, then receive: :meth:`receive_some` after
        its first ``recv()`` found nothing (as :meth:`receive_nowait` just did)."""
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _stream_error(exc, "receive") from exc

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the kernel holds now (``b""`` at end of file), or ``None`` if nothing yet.

        Not a checkpoint, never blocks: the caller must checkpoint often enough.

        Raises:
            trio.BrokenResourceError: the connection is broken.
        """
        try:
            return self.sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _stream_error(exc, "receive") from exc

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes now; return how many bytes that was.

        Not a checkpoint, never blocks. Call :meth:`send_all` with the rest.

        Raises:
            trio.BrokenResourceError: the connection is broken.
            trio.BusyResourceError: a :meth:`send_all` is in progress.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this transport")
        if self._shut_wr:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise _stream_error(exc, "send") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this transport")
        if self._shut_wr:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        self._sending = True
        try:
            await self._send_all(data)
        finally:
            self._sending = False

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.sock
        with memoryview(data) as view:
            await trio.lowlevel.checkpoint_if_cancelled()
            total = 0
            try:
                total = sock.send(view) if view else 0
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc, "send") from exc
            while total < len(view):
                await trio.lowlevel.wait_writable(sock)
                try:
                    with view[total:] as rest:
                        total += sock.send(rest)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _stream_error(exc, "send") from exc
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("this socket was already closed")
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        if self.sock.fileno() == -1:
            raise trio.ClosedResourceError("this socket was already closed")
        await trio.lowlevel.wait_writable(self.sock)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._shut_wr:
            return
        self._shut_wr = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc, "shutdown") from exc

    def close(self) -> None:
        """Close at once (not a checkpoint); tasks waiting on the socket get
        :exc:`trio.ClosedResourceError`."""
        sock = self.sock
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


class HandshakeFailed(Exception):
    """The TLS handshake failed (``detail`` says why) or timed out (``detail`` is None)."""

    def __init__(self, detail: str | None) -> None:
        super().__init__(f"TLS handshake failed ({detail})" if detail else "TLS handshake timeout")
        self.detail = detail


async def start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, *, limit: float
) -> trio.SSLStream[Any]:
    """The server side of a TLS handshake over ``stream``, within ``limit`` seconds.

    Raises:
        HandshakeFailed: the client broke off, sent no TLS, or was too slow.
    """
    ssl_stream = trio.SSLStream(stream, context, server_side=True)
    with trio.move_on_after(limit):
        try:
            await ssl_stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise HandshakeFailed(str(cause)) from exc
        return ssl_stream
    raise HandshakeFailed(None)

"""A connection's byte path: its stream, the engine's replies, and one I/O deadline.

Theory of operation: one cancel scope per connection carries every I/O deadline
(:meth:`Link.deadlines`). It is armed before each flush-and-read with the deadline of
the wait ahead (RFC 5321 §4.5.3.2): ``command_timeout`` from the moment the server
starts waiting for a command until a whole line has arrived (bytes dribbled in do not
move it), or ``data_timeout`` for a whole DATA body or BDAT chunk. It stays armed while
the events of a read are handled (no awaits there but hooks, the authenticator, the
spool and TLS, which :meth:`Link.disarm` it first or arm the exact deadline): one
deadline change per command instead of two, and Trio's per-scope cost off the
per-command path.

Over a plain socket the scope's deadline may lag behind the exact one (see
:meth:`Link.arm`): moving a deadline costs Trio a heap update, and each command moves
it later. When such a stale deadline fires during a receive, which gives up no data
when cancelled (:class:`~._transport.SocketTransport` checks before the syscall),
:meth:`Link.fired_early` says so and the caller reads again under a new scope armed
with the exact deadline: a timeout still fires exactly when it is due, at the cost of
one scope per timeout period.
"""

from __future__ import annotations

import math
import re
import ssl
from typing import TYPE_CHECKING, Any, Final

import trio

from ._transport import SocketTransport, start_tls
from .engine import Engine, State

if TYPE_CHECKING:
    from types import TracebackType

    from ._metrics import Metrics

__all__ = ["BODY_READ_SIZE", "COMMAND_READ_SIZE", "FAREWELL_TIMEOUT", "Link"]

#: Bytes asked of the transport per read while reading commands, and while reading a body.
COMMAND_READ_SIZE: Final = 16384
BODY_READ_SIZE: Final = 65536
#: How long the last words (a 421, the ``close`` hook, TLS close_notify) may take
#: when the task is being cancelled or the shutdown grace is over.
FAREWELL_TIMEOUT: Final = 1.0
#: Reads in a row that may skip the checkpoint when the client's bytes are already
#: there (see receive): bounds how long one busy client holds the event loop.
MAX_READS_WITHOUT_CHECKPOINT: Final = 4
#: Seconds of slack between a lifted I/O deadline and the timeouts of what runs under it.
_DEADLINE_MARGIN: Final = 1.0
_STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# The code of each reply's last line (RFC 5321 §4.2.1: "250-" continues, "250 " ends).
_REPLY_CODE: Final = re.compile(rb"(?m)^([2-5]\d\d) ")


class Link:
    """Moves one connection's bytes under its deadlines.

    Args:
        stream: The accepted connection (a :class:`~._transport.SocketTransport`, or
            any Trio stream); replaced by a TLS stream after a handshake.
        engine: Where received bytes go and replies come from.
        metrics: Counts the replies sent.
        command_timeout: The wait for a whole command line, in seconds.
        data_timeout: The wait for a whole DATA body or BDAT chunk, in seconds.
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = (
        "_clock",
        "_deadline",
        "_lifted",
        "_read_cancelled",
        "_reads_without_checkpoint",
        "_scope",
        "command_deadline",
        "command_timeout",
        "data_deadline",
        "data_timeout",
        "draining",
        "engine",
        "metrics",
        "reading",
        "sending",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        engine: Engine,
        metrics: Metrics,
        *,
        command_timeout: float,
        data_timeout: float,
    ) -> None:
        self.stream = stream
        self.engine = engine
        self.metrics = metrics
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        #: When the wait for the current command ends (``None``: not started yet).
        self.command_deadline: float | None = None
        #: When the wait for the current body or BDAT chunk ends.
        self.data_deadline: float | None = None
        #: The server is shutting down: no new command is read (see receive).
        self.draining = False
        #: True while a read waits.
        self.reading = False
        #: True while a send_all is in progress, and still True if it was cancelled.
        self.sending = False
        self._scope: trio.CancelScope | None = None
        #: The run's clock, read directly: ``trio.current_time()`` costs two more Python
        #: calls, and the deadline of every command reads it.
        self._clock = trio.lowlevel.current_clock()
        #: The exact deadline of the wait in progress (or the last one), Trio time.
        self._deadline = math.inf
        #: The deadline was lifted for a hook, the authenticator or TLS.
        self._lifted = False
        #: A deadline fired during a receive (maybe early: see fired_early).
        self._read_cancelled = False
        self._reads_without_checkpoint = 0

    def __repr__(self) -> str:
        return f"<Link {self.stream!r}>"

    @property
    def plain(self) -> bool:
        """Whether the stream is our own plain socket (no TLS, not a test stream)."""
        return type(self.stream) is SocketTransport

    # ------------------------------------------------------------------ deadlines

    def deadlines(self) -> Link:
        """``with link.deadlines() as scope``: the scope the deadlines are armed on;
        ``cancelled_caught`` means one passed. (The link is its own context manager: a
        generator-based one would cost every idle connection some 670 bytes.)"""
        return self

    def __enter__(self) -> trio.CancelScope:
        self._read_cancelled = False
        scope = self._scope = trio.CancelScope()
        return scope.__enter__()

    def __exit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self._scope
        assert scope is not None
        self._scope = None
        return scope.__exit__(etype, exc, tb)

    def fired_early(self) -> bool:
        """Whether the scope fired during a read at a stale deadline, before the exact one."""
        return self._read_cancelled and self._clock.current_time() < self._deadline

    def arm(self) -> bool:
        """Set the I/O deadline for the wait ahead: a whole command, or a whole body.

        Returns:
            Whether the wait ahead is for body octets (``Engine.reading_body``).
        """
        scope = self._scope
        assert scope is not None
        body = self.engine.reading_body
        if body:
            if self.data_deadline is None:
                self.data_deadline = self._clock.current_time() + self.data_timeout
            deadline = self.data_deadline
        else:
            # RFC 5321 §4.5.3.2.7: the wait for a command. Set when the wait starts and
            # kept until a whole line has arrived, so dribbling bytes does not extend it.
            if self.command_deadline is None:
                self.command_deadline = self._clock.current_time() + self.command_timeout
            deadline = self.command_deadline
        self._deadline = deadline
        self._lifted = False
        armed = scope.deadline
        if armed > deadline or (armed != deadline and type(self.stream) is not SocketTransport):
            # Never later than the exact deadline; earlier only over a plain socket,
            # whose receive can be retried when a stale deadline fires.
            scope.deadline = deadline
        return body

    def exact(self) -> None:
        """Arm the exact deadline of the wait that just ended (for awaits not retried)."""
        scope = self._scope
        if scope is not None and not self._lifted and scope.deadline != self._deadline:
            scope.deadline = self._deadline

    def disarm(self, bound: float | None = None) -> None:
        """Lift the I/O deadline: what comes next has its own timeout.

        Args:
            bound: That timeout, in seconds. The scope's deadline is then only pushed
                past it (to twice it, while that stays below both I/O timeouts, so
                the next wait need not move it again), and left alone when it is
                already later: moving a deadline is the expensive part.
        """
        scope = self._scope
        if scope is None:
            return
        self._lifted = True
        if bound is not None:
            now = self._clock.current_time()
            if scope.deadline >= now + bound + _DEADLINE_MARGIN:
                return
            if 2 * bound <= min(self.command_timeout, self.data_timeout):
                scope.deadline = now + 2 * bound
                return
        if scope.deadline != math.inf:
            scope.deadline = math.inf

    def wake(self) -> None:
        """End a read that is waiting, as if its deadline had passed."""
        if self._scope is not None and self.reading:
            self._scope.cancel()

    # ------------------------------------------------------------------ bytes

    async def receive(self) -> bytes | None:
        """Send the replies the engine has waiting, then read what the client sent.

        The read waits under the armed deadline (:meth:`arm`), which stays armed while
        the events it brings are handled (no awaits there but hooks, the authenticator,
        the spool and TLS, which disarm it or arm the exact deadline first): one
        deadline change per command instead of two.

        Returns:
            The bytes (``b""`` at end of file); ``None`` when the connection was lost
            (the engine is then closed), or while :attr:`draining` when the engine
            waits for a command (the engine is left open: the caller says goodbye).
        """
        body = self.arm()
        rest = self._send_nowait()
        if rest is not None:
            await self._send_rest(rest)
        engine = self.engine
        if self.draining and not engine.in_transaction and engine.state is State.COMMAND:
            return None
        size = BODY_READ_SIZE if body else COMMAND_READ_SIZE
        self.reading = True
        try:
            data: bytes | bytearray | None = None
            stream = self.stream
            if self._reads_without_checkpoint < MAX_READS_WITHOUT_CHECKPOINT:
                # The client's next bytes are often already here: take them without a
                # trip through the scheduler, a few times in a row at most.
                if type(stream) is SocketTransport:
                    data = stream.receive_nowait(size)
            if data is not None:
                self._reads_without_checkpoint += 1
            else:
                if self._reads_without_checkpoint < MAX_READS_WITHOUT_CHECKPOINT and (
                    type(stream) is SocketTransport
                ):
                    # Nothing there just now: wait (a checkpoint) without trying again.
                    data = await stream.receive_when_readable(size)
                else:
                    data = await stream.receive_some(size)
                self._reads_without_checkpoint = 0
        except trio.Cancelled:
            self._read_cancelled = True
            raise
        except (ssl.SSLError, trio.BrokenResourceError):
            engine.close(reason="connection lost")
            return None
        finally:
            self.reading = False
        return bytes(data)

    def _count_replies(self, data: bytes) -> bytes:
        if self.metrics.enabled and data:
            # The last line of each reply ("250 ..." after any "250-...").
            for code in _REPLY_CODE.findall(data):
                self.metrics.reply(int(code))
        return data

    async def flush(self) -> None:
        """Send the replies the engine has waiting."""
        rest = self._send_nowait()
        if rest is not None:
            await self._send_rest(rest)

    def _send_nowait(self) -> bytes | None:
        """Send what the kernel takes at once (a plain socket nearly always takes all:
        no coroutine, no scheduler trip); the rest, or ``None`` when nothing is left."""
        data = self.engine.data_to_send()
        if not data:
            return None
        if self.metrics.enabled:
            self._count_replies(data)
        stream = self.stream
        if type(stream) is not SocketTransport:
            return data
        sent = stream.send_nowait(data)
        if sent == len(data):
            return None
        return data[sent:] if sent else data

    async def _send_rest(self, data: bytes) -> None:
        """Send what :meth:`_send_nowait` left, bounded by the armed deadline."""
        self.sending = True
        if self._scope is not None and not self._lifted and self._deadline != math.inf:
            self.exact()
            await self.stream.send_all(data)  # bounded by the armed deadline
        else:
            # A client that never reads must not hold the task forever.
            with trio.fail_after(self.command_timeout):
                await self.stream.send_all(data)
        self.sending = False

    async def last_words(self) -> None:
        """Best effort: send what the engine has waiting, within FAREWELL_TIMEOUT."""
        if self.sending:
            return  # Trio forbids another send on a stream whose send_all was cancelled
        with trio.move_on_after(FAREWELL_TIMEOUT):
            try:
                await self.stream.send_all(self._count_replies(self.engine.data_to_send()))
            except _STREAM_ERRORS:
                pass

    async def start_tls(self, context: ssl.SSLContext, *, limit: float) -> trio.SSLStream[Any]:
        """The TLS handshake, within ``limit`` seconds; the stream is TLS from then on.

        Raises:
            HandshakeFailed: if it failed or timed out (the stream is unchanged).
        """
        self.disarm()
        tls_stream = await start_tls(self.stream, context, limit=limit)
        self.stream = tls_stream
        return tls_stream

    def close_now(self) -> bool:
        """Close a plain socket at once, without a checkpoint (``False``: not plain)."""
        stream = self.stream
        if type(stream) is SocketTransport:
            stream.close()
            return True
        return False

    async def aclose(self) -> None:
        """Close the stream; a TLS close_notify gets FAREWELL_TIMEOUT."""
        if type(self.stream) is SocketTransport:
            await self.stream.aclose()  # a plain socket closes at once
            return
        # TLS may try to send close_notify to a client that no longer reads.
        with trio.move_on_after(FAREWELL_TIMEOUT):
            try:
                await self.stream.aclose()
            except _STREAM_ERRORS:
                pass

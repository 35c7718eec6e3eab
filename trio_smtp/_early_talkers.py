"""``greet_delay``: clients that talk before the greeting are refused (opt-in).

Theory of operation: RFC 5321 §3.1 has the client wait for the 220 greeting before it
sends anything, and legitimate clients do. Spam bots often do not: they fire their
commands at once to save round trips. Postfix's postscreen (``postscreen_greet_wait``)
and Nodemailer's smtp-server (a 100 ms greeting delay) use that: the server waits a
little before the 220, and a client that sends anything in that time is told
``554 5.5.1`` and disconnected. With ``greet_delay = 0`` (the default) nobody waits.

The wait is one receive under a deadline: if it returns data, the client talked first;
if it returns nothing (end of file), the client left; if the deadline passes, the
client was patient and gets its greeting. Nothing the early talker sent is ever parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from ._names import hostport
from .engine import Reply

if TYPE_CHECKING:
    from ._logger import LoggerLike
    from ._session import Session
    from .engine import Engine

#: RFC 5321 §3.1 (the client waits for the greeting); postscreen answers the same.
TALKED_FIRST: Final = Reply(554, "5.5.1 protocol error: talked before greeting")
#: How much of what an early talker sent is read (and thrown away).
_PEEK_SIZE: Final = 4096


class EarlyTalker:
    """What :func:`wait_for_silence` saw instead of silence."""

    __slots__ = ("left", "sent")

    def __init__(self, sent: int) -> None:
        #: How many bytes the client sent before the greeting.
        self.sent = sent
        #: The client closed the connection instead (it sent nothing).
        self.left = sent == 0

    def __repr__(self) -> str:
        return f"<EarlyTalker sent={self.sent}>"


async def wait_for_silence(stream: trio.abc.ReceiveStream, delay: float) -> EarlyTalker | None:
    """Wait ``delay`` seconds before the greeting, watching the client.

    Args:
        stream: The connection, before anything was sent on it.
        delay: Seconds to wait; 0 or less returns at once.

    Returns:
        ``None`` if the client stayed silent for ``delay`` seconds (greet it), else an
        :class:`EarlyTalker` saying what it did (refuse it, or just close).
    """
    if delay <= 0:
        return None
    with trio.move_on_after(delay):
        data = await stream.receive_some(_PEEK_SIZE)
        return EarlyTalker(len(data))
    return None


class GreetingGuard:
    """The server's ``greet_delay`` and its count of clients refused for talking first.

    Args:
        delay: Seconds to wait before each greeting (0: none).
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        #: Clients refused with :data:`TALKED_FIRST` so far.
        self.refused = 0

    def __repr__(self) -> str:
        return f"<GreetingGuard delay={self.delay:g} refused={self.refused}>"

    async def wait(self, stream: trio.abc.ReceiveStream) -> EarlyTalker | None:
        """:func:`wait_for_silence` with this delay; counts the talkers it catches."""
        seen = await wait_for_silence(stream, self.delay)
        if seen is not None and not seen.left:
            self.refused += 1
        return seen

    async def hold(
        self, stream: trio.abc.Stream, engine: Engine, session: Session, logger: LoggerLike
    ) -> bool:
        """Wait before the greeting: ``False`` when the client left or talked (closed).

        An early talker gets :data:`TALKED_FIRST`; what it sent is never parsed.
        """
        seen = await self.wait(stream)
        if seen is None:
            return True
        if seen.left:
            engine.close(reason="closed before the greeting")
            return False
        logger.warn(
            f"Early talker: id={session.id} peer={hostport(session.peer)} sent "
            f"{seen.sent} bytes before the greeting"
        )
        engine.close(TALKED_FIRST, reason="talked before greeting")
        return False

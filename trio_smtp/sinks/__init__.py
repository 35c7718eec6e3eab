"""Delivery sinks: where an accepted message goes before the client hears 250.

A sink is any object with ``async def deliver(self, mail) -> None``. The server awaits it from
the ``done`` step: returning means the message is safely stored (or relayed), raising a
:class:`~trio_smtp.engine.Reply` refuses it with that reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .maildir import MaildirSink as MaildirSink
from .mbox import MboxSink as MboxSink
from .memory import MemorySink as MemorySink
from .printer import PrintSink as PrintSink
from .relay import RelaySink as RelaySink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._mail import Mail
    from ..engine import Reply

__all__ = ["MaildirSink", "MboxSink", "MemorySink", "PrintSink", "RelaySink", "Sink"]


@runtime_checkable
class Sink(Protocol):
    """What the server needs of a sink."""

    async def deliver(self, mail: Mail) -> Sequence[Reply] | None:
        """Store or forward ``mail``; raise :class:`~trio_smtp.engine.Reply` to refuse it.

        On an LMTP server a sink may also return one reply per recipient, in order, as a
        ``done`` hook may (:class:`RelaySink` does).

        Args:
            mail: The accepted message, with its envelope and session.
        """
        ...

"""Keep messages in a list: the sink for tests and embedding.

It is the one sink that holds whole messages in memory: each delivered message's
:attr:`~trio_smtp.Mail.content` is loaded as bytes (so the spool file of a large body is
closed), which is what tests want to compare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from .._spool import SPOOL_MEMORY

if TYPE_CHECKING:
    from .._mail import Mail

#: Content larger than this is loaded in a worker thread (it comes from a spool file).
_LOAD_IN_THREAD: Final = SPOOL_MEMORY


class MemorySink:
    """Collect delivered messages in :attr:`messages`.

    Attributes:
        messages: Every message delivered since creation or the last :meth:`reset`, in order.
    """

    def __init__(self) -> None:
        self.messages: list[Mail] = []
        self._arrivals = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"<MemorySink messages={len(self.messages)}>"

    async def deliver(self, mail: Mail) -> None:
        """Load the content, append the message and wake whoever waits in :meth:`wait_for`.

        Args:
            mail: The message.
        """
        if mail.content_size > _LOAD_IN_THREAD:
            await trio.to_thread.run_sync(lambda: mail.content)
        else:
            mail.content  # noqa: B018 (loads the bytes; the spool is then released)
            await trio.lowlevel.checkpoint()
        self.messages.append(mail)
        self._arrivals.unpark_all()

    def reset(self) -> None:
        """Forget every message stored so far."""
        self.messages.clear()

    async def wait_for(self, n: int) -> None:
        """Wait until at least ``n`` messages are stored.

        Args:
            n: How many messages :attr:`messages` must hold.

        .. warning:: It waits forever if they never come; wrap it in :func:`trio.fail_after`.
        """
        if len(self.messages) >= n:
            await trio.lowlevel.checkpoint()
            return
        while len(self.messages) < n:
            await self._arrivals.park()

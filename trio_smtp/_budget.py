"""The memory budget: body bytes that all connections of a server may hold in memory.

Shared by every :class:`~._spool.Body` of a server (``max_buffered_bytes``). A body that
cannot take its next chunk from it spills to its spool file at once; one that has no spool
file waits for room (:meth:`MemoryBudget.take`), so the connection stops reading.
"""

from __future__ import annotations

from typing import Final

import trio

#: Body bytes held in memory across all connections of a server (``max_buffered_bytes``).
MAX_BUFFERED_BYTES: Final = 64 << 20


class MemoryBudget:
    """The body bytes that all connections of a server may hold in memory together.

    Args:
        limit: The most bytes held at once.

    Raises:
        ValueError: for a negative limit.
    """

    def __init__(self, limit: int = MAX_BUFFERED_BYTES) -> None:
        if limit < 0:
            raise ValueError(f"max_buffered_bytes must not be negative, not {limit!r}")
        self.limit = limit
        #: Bytes taken and not yet given back.
        self.used = 0
        self._freed = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"<MemoryBudget used={self.used} limit={self.limit}>"

    def try_take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit; never waits.

        Returns:
            Whether they were taken.
        """
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    async def take(self, n: int) -> None:
        """Take ``n`` bytes, waiting until others give enough back.

        Raises:
            ValueError: if ``n`` exceeds the whole budget (it could never fit).
        """
        if n > self.limit:
            raise ValueError(f"{n} bytes can never fit a budget of {self.limit}")
        while not self.try_take(n):
            await self._freed.park()
        await trio.lowlevel.checkpoint()

    def give_back(self, n: int) -> None:
        """Return ``n`` bytes taken earlier and wake whoever waits for room."""
        self.used -= n
        assert self.used >= 0, "gave back more than was taken"
        if n and self._freed:  # unpark_all costs more than the test, and rarely wakes anyone
            self._freed.unpark_all()

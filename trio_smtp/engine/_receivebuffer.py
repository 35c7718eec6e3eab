"""The engine's receive buffer: a ``bytearray`` with a resumable line search.

Theory of operation: bytes are appended as they arrive. A line search remembers how
far it has already looked (``_scanned``), so a client dribbling one byte at a time
costs linear, not quadratic, time. A line that grows past the caller's bound is not
kept: the buffer drops it as it comes (``discarding``) until its end is seen, and
reports it as too long, so memory stays bounded by the bound whatever the client sends.
"""

from __future__ import annotations

from typing import Final

#: Returned by :meth:`ReceiveBuffer.next_line` for a line that exceeded the bound.
LINE_TOO_LONG: Final = b"\x00<line too long>"


class ReceiveBuffer:
    """Bytes received but not yet consumed."""

    __slots__ = ("_discarding", "_scanned", "raw")

    def __init__(self) -> None:
        #: The underlying buffer, for readers that consume it themselves (an attribute,
        #: not a property: it is read several times per command).
        self.raw = bytearray()
        self._scanned = 0
        self._discarding = False

    def __len__(self) -> int:
        return len(self.raw)

    def __bool__(self) -> bool:
        return bool(self.raw)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes."""
        self.raw += data

    def consume(self, n: int) -> bytes:
        """Remove and return the first ``n`` bytes."""
        out = bytes(self.raw[:n])
        del self.raw[:n]
        self._scanned = 0
        return out

    def discard(self, n: int) -> None:
        """Remove the first ``n`` bytes."""
        del self.raw[:n]
        self._scanned = 0

    def next_line(self, max_length: int) -> bytes | None:
        """Take one LF-terminated line, without its CRLF or LF.

        Args:
            max_length: The longest line allowed, terminator included.

        Returns:
            The line; ``None`` if no whole line is buffered yet; :data:`LINE_TOO_LONG`
            once the end of a line longer than ``max_length`` has been seen.
        """
        buf = self.raw
        idx = buf.find(b"\n", self._scanned)
        if idx < 0:
            if self._discarding:
                buf.clear()
                self._scanned = 0
            elif len(buf) > max_length:
                # Keep nothing of a line that can no longer be valid.
                self._discarding = True
                buf.clear()
                self._scanned = 0
            else:
                self._scanned = len(buf)
            return None
        if self._discarding or idx + 1 > max_length:
            self._discarding = False
            del buf[: idx + 1]
            self._scanned = 0
            return LINE_TOO_LONG
        end = idx - 1 if idx > 0 and buf[idx - 1] == 0x0D else idx
        line = bytes(buf[:end])
        del buf[: idx + 1]
        self._scanned = 0
        return line

"""Reading a body back without loading it: the async reader and the file over a spool file.

Each reader has a descriptor of its own (``Body._dup``) and reads with ``pread``, so several
may read one body at once, from the event loop (:class:`BodyReader`, a worker thread per
piece) or from a thread (:class:`SpoolFileReader` behind a ``BufferedReader``).
"""

from __future__ import annotations

import errno
import io
import os
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from ._spool import Body

#: Bytes read from a spool file at a time by the streaming readers.
READ_SIZE: Final = 256 << 10


class BodyReader:
    """Reads a body in order without loading it: ``async for chunk in reader``.

    In-memory content comes as the chunks that arrived (no copy); a spooled body in pieces
    of :data:`READ_SIZE` bytes, each read in a worker thread. Use it as an async context
    manager so that its descriptor is closed.
    """

    def __init__(self, body: Body) -> None:
        self._body = body
        self._fd: int | None = None
        self._chunks: list[bytes] = []
        self._index = 0
        self._offset = 0
        self._opened = False

    async def __aenter__(self) -> BodyReader:
        self._open()
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def _open(self) -> None:
        if not self._opened:
            self._opened = True
            self._fd = self._body._dup()
            if self._fd is None:
                self._chunks = list(self._body._chunks)

    def close(self) -> None:
        """Close the reader's descriptor; iteration ends."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._chunks = []
        self._offset = self._body.size

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        self._open()
        if self._fd is None:
            if self._index >= len(self._chunks):
                raise StopAsyncIteration
            chunk = self._chunks[self._index]
            self._index += 1
            await trio.lowlevel.checkpoint()
            return chunk
        size = self._body.size
        if self._offset >= size:
            raise StopAsyncIteration
        n = min(READ_SIZE, size - self._offset)
        chunk = await trio.to_thread.run_sync(pread_all, self._fd, n, self._offset)
        self._offset += len(chunk)
        return chunk


def pread_all(fd: int, n: int, offset: int = 0) -> bytes:
    parts = []
    while n > 0:
        part = os.pread(fd, n, offset)
        if not part:
            raise OSError(errno.EIO, "spool file is shorter than the message")
        parts.append(part)
        n -= len(part)
        offset += len(part)
    return b"".join(parts) if len(parts) != 1 else parts[0]


class SpoolFileReader(io.RawIOBase):
    """A read-only raw file over a spool descriptor, with a position of its own (pread)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        # A view, so that the slice below is the caller's memory and not a copy of it.
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._fd, [view[:n]], self._pos)
        self._pos += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset!r}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

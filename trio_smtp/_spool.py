"""Message bodies that never have to fit in memory: the spool.

Theory of operation: a :class:`Body` collects the content of one message as the engine hands
it over (:meth:`Body.append`). The first ``spool_memory`` bytes (1 MiB by default) stay in
memory, as the very chunks the engine produced; past that, the body moves to a spool file
and every later chunk goes there, gathered into writes of :data:`WRITE_SIZE` bytes that run
in a worker thread, so a slow disk stalls only the connection that is writing.

A :class:`MemoryBudget`, shared by every connection of a server, caps the body bytes held in
memory (``max_buffered_bytes``, 64 MiB by default). A body that cannot take its next chunk
from the budget spills to its spool file at once, whatever its size. If no spool file can be
made (a missing or unwritable ``spool_dir``), the body keeps its bytes in memory but waits
for the budget first: the connection stops reading (back-pressure) instead of growing, and a
body that alone would need more than the whole budget is refused.

Spool files are made by :func:`tempfile.TemporaryFile`: ``O_TMPFILE`` where the file system
supports it (the file never has a name), else a ``0600`` file created with ``O_EXCL`` under
an unguessable name and unlinked before anything is written to it. Either way the data lives
only as long as the descriptor: a connection that dies, a server that is killed, a body that
is refused all leave nothing on disk. Files that a crash left in the instant between create
and unlink carry the :data:`SPOOL_PREFIX`; :meth:`Spool.clean` removes them at start.

A spool disk that is full (``ENOSPC``, ``EDQUOT``, ``EFBIG``) fails the body: it drops what
it holds, keeps counting what arrives so the engine can read to the final dot, and
:meth:`Body.finish` raises ``452 4.3.1`` (RFC 3463: mail system full). Nothing half-stored is
ever delivered.

Who owns a body: the transaction, while the message arrives; then the :class:`~trio_smtp.Mail`
it belongs to. The transaction calls :meth:`Body.release` when it is done with a delivered
message (the memory goes back to the budget, the bytes stay readable for as long as the
``Mail`` lives) and :meth:`Body.discard` when the message was refused, reset or cut off.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
import weakref
from typing import Final

import trio

from ._body_reader import READ_SIZE as READ_SIZE
from ._body_reader import BodyReader as BodyReader
from ._body_reader import SpoolFileReader, pread_all
from ._budget import MAX_BUFFERED_BYTES as MAX_BUFFERED_BYTES
from ._budget import MemoryBudget as MemoryBudget
from .engine import Reply

#: Bytes of one body kept in memory before it moves to a spool file (``spool_memory``).
SPOOL_MEMORY: Final = 1 << 20
#: Bytes gathered before one write to a spool file.
WRITE_SIZE: Final = 256 << 10
#: Every spool file's name starts with this (while it has a name at all).
SPOOL_PREFIX: Final = "trio-smtp-spool-"

# ENOSPC: disk full; EDQUOT: quota; EFBIG: RLIMIT_FSIZE or the file system's size limit.
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_full() -> Reply:
    """The reply for a body the spool could not hold (a new instance each time).

    Returns:
        ``452 4.3.1 insufficient system storage`` (RFC 5321 §4.2.2, RFC 3463 §3.4).
    """
    return Reply(452, "4.3.1 insufficient system storage")


def _storage_error(exc: OSError) -> Reply:
    if exc.errno in _FULL_ERRNOS:
        return storage_full()
    return Reply(451, "4.3.0 cannot spool the message")


class Spool:
    """Where the bodies of one server go: the settings and the shared memory budget.

    Args:
        spool_dir: The directory for spool files; the system temporary directory by default.
        spool_memory: Bytes of one body kept in memory before it moves to a spool file.
        max_buffered_bytes: Body bytes held in memory across all connections.

    Raises:
        ValueError: for a negative size.
    """

    def __init__(
        self,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_memory: int = SPOOL_MEMORY,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        if spool_memory < 0:
            raise ValueError(f"spool_memory must not be negative, not {spool_memory!r}")
        self.spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self.spool_memory = spool_memory
        self.budget = MemoryBudget(max_buffered_bytes)

    def __repr__(self) -> str:
        return (
            f"Spool(spool_dir={self.spool_dir!r}, spool_memory={self.spool_memory}, "
            f"max_buffered_bytes={self.budget.limit})"
        )

    def body(self) -> Body:
        """A new, empty body that spools by these settings."""
        return Body(spool=self)

    def clean(self) -> int:
        """Remove spool files a killed server left behind (blocking; call it at start).

        Only regular files of this user whose name starts with :data:`SPOOL_PREFIX` are
        removed. A file another running server has just created is unlinked a moment early,
        which does it no harm: it reads and writes through its descriptor.

        Returns:
            How many files were removed.
        """
        where = self.spool_dir if self.spool_dir is not None else tempfile.gettempdir()
        removed = 0
        try:
            entries = list(os.scandir(where))
        except OSError:
            return 0
        for entry in entries:
            if not entry.name.startswith(SPOOL_PREFIX):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _close_quietly(file: io.FileIO) -> None:
    with contextlib.suppress(OSError):
        file.close()


class Body:
    """The content of one message: in memory up to a threshold, then in a spool file.

    Made by :meth:`Spool.body`. Filled with :meth:`append` and :meth:`finish` on the event
    loop; read with :meth:`reader` (async), :meth:`open_file` (sync, for threads) or
    :meth:`read_bytes`.

    Attributes:
        size: Bytes appended so far (also counted after a storage failure).
    """

    def __init__(self, *, spool: Spool) -> None:
        self._spool = spool
        self.size = 0
        self._chunks: list[bytes] = []
        #: Bytes of ``_chunks`` taken from the budget.
        self._held = 0
        self._file: io.FileIO | None = None
        self._closer: weakref.finalize[[io.FileIO], Body] | None = None
        self._no_spool = False
        self._error: Reply | None = None
        self._finished = False
        self._discarded = False

    @classmethod
    def from_bytes(cls, content: bytes) -> Body:
        """A finished body that holds ``content`` in memory, outside any budget."""
        body = cls(spool=Spool(spool_memory=0, max_buffered_bytes=0))
        body._chunks = [content] if content else []
        body.size = len(content)
        body._finished = True
        return body

    def __repr__(self) -> str:
        where = "spooled" if self._file is not None else "in memory"
        return f"<Body {self.size} bytes {where}>"

    @property
    def spooled(self) -> bool:
        """Whether the body lives in a spool file."""
        return self._file is not None

    @property
    def failed(self) -> Reply | None:
        """The reply owed to the client when storage failed, else ``None``."""
        return self._error

    # ------------------------------------------------------------------ filling

    def append_nowait(self, data: bytes) -> bool:
        """:meth:`append` when it returns at once (the piece fits in memory and in the
        budget, or is only counted); ``False``, having changed nothing, when it would
        write to the spool file or wait for room: then call :meth:`append`.

        Lets the caller skip preparing for a wait (its I/O deadline) on the common path.
        """
        n = len(data)
        if self._error is not None or self._discarded or not n:
            self.size += n
            return True
        budget = self._spool.budget
        if self._file is None and not self._no_spool:
            fits = self.size + n <= self._spool.spool_memory
        elif self._file is not None:
            fits = self._held + n < WRITE_SIZE
        else:
            return False
        if not fits or not budget.try_take(n):
            return False
        self.size += n
        self._chunks.append(data)
        self._held += n
        return True

    async def append(self, data: bytes) -> None:
        """Add the next piece of content.

        Returns at once while the body fits in memory and in the budget; otherwise it writes
        to the spool file in a worker thread, or (no spool file possible) waits for room in
        the budget. Either way the caller should not read more input until it returns.

        A storage failure is not raised here: the body drops what it holds, counts the rest,
        and :meth:`finish` raises the reply.
        """
        n = len(data)
        self.size += n
        if self._error is not None or self._discarded or not n:
            return
        budget = self._spool.budget
        if self._file is None and not self._no_spool:
            if self.size <= self._spool.spool_memory and budget.try_take(n):
                self._chunks.append(data)
                self._held += n
                return
            await self._spill(data)
        elif self._file is not None:
            if self._held + n < WRITE_SIZE and budget.try_take(n):
                self._chunks.append(data)
                self._held += n
                return
            await self._write_out(data)
        else:
            # No spool file: memory it is, but only as much as the budget allows.
            if self._held + n > budget.limit:
                self._fail(storage_full())
                return
            await budget.take(n)
            self._chunks.append(data)
            self._held += n

    async def finish(self) -> None:
        """Mark the body complete: write what is still in memory of a spooled body.

        Raises:
            trio_smtp.engine.Reply: ``452 4.3.1`` when the spool disk was full (or ``451
                4.3.0`` for another storage error); the body holds nothing then.
        """
        if self._error is None and self._file is not None and self._chunks:
            await self._write_out(b"")
        if self._error is not None:
            raise Reply(self._error.code, self._error.text)
        self._finished = True

    def release(self) -> None:
        """Give this body's memory back to the budget; its bytes stay readable."""
        if self._held:
            self._spool.budget.give_back(self._held)
            self._held = 0

    def discard(self) -> None:
        """Drop the content: memory back to the budget, the spool file closed (and gone)."""
        self.release()
        self._chunks = []
        self._discarded = True
        if self._closer is not None:
            self._closer()  # closes the file; a spool file has no name, so it is gone
        self._file = None

    async def _spill(self, data: bytes) -> None:
        try:
            file = await trio.to_thread.run_sync(self._create)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                self._fail(_storage_error(exc))
                return
            # The spool is unavailable: hold the bytes in memory, under the budget.
            self._no_spool = True
            self.size -= len(data)
            await self.append(data)
            return
        self._file = file
        self._closer = weakref.finalize(self, _close_quietly, file)
        await self._write_out(data)

    def _create(self) -> io.FileIO:
        file = tempfile.TemporaryFile(
            mode="w+b", buffering=0, dir=self._spool.spool_dir, prefix=SPOOL_PREFIX
        )
        assert isinstance(file, io.FileIO)
        return file

    async def _write_out(self, data: bytes) -> None:
        assert self._file is not None
        # Written as they are (writev): a joined copy would double what waits for a thread.
        pending = [*self._chunks, data] if data else self._chunks
        try:
            await trio.to_thread.run_sync(_write_all, self._file.fileno(), pending)
        except OSError as exc:
            self._fail(_storage_error(exc))
            return
        self.release()
        self._chunks = []

    def _fail(self, reply: Reply) -> None:
        self.discard()
        self._discarded = False
        self._error = reply

    # ------------------------------------------------------------------ reading

    def _check_readable(self) -> None:
        if self._discarded:
            raise RuntimeError("the message body was discarded (refused, reset or cut off)")
        if self._error is not None:
            raise RuntimeError(f"the message body could not be stored: {self._error}")

    def _dup(self) -> int | None:
        """A descriptor of our own for a spooled body (``None`` in memory).

        Readers use their own descriptor so that a body discarded on the event loop while a
        thread still reads it (an abandoned hook) never leaves them a reused descriptor number.
        """
        self._check_readable()
        return None if self._file is None else os.dup(self._file.fileno())

    def read_bytes(self) -> bytes:
        """The whole content (blocking for a spooled body: call it from a thread if large)."""
        fd = self._dup()
        if fd is None:
            if len(self._chunks) != 1:
                # Joined once: later reads (and the memory) share the one bytes object.
                self._chunks = [b"".join(self._chunks)]
            return self._chunks[0]
        try:
            return pread_all(fd, self.size)
        finally:
            os.close(fd)

    def reader(self) -> BodyReader:
        """An async iterator over the content; use it as ``async with body.reader() as r``."""
        return BodyReader(self)

    def open_file(self) -> io.BufferedReader | io.BytesIO:
        """A binary file object over the content, with its own position (blocking reads).

        Several may be open at once; each must be closed (``with`` closes it). A file of a
        spooled body stays readable even if the body is discarded meanwhile.
        """
        fd = self._dup()
        if fd is None:
            return io.BytesIO(self.read_bytes())
        return io.BufferedReader(SpoolFileReader(fd, self.size), READ_SIZE)


#: At most this many buffers per writev(2) (IOV_MAX is 1024 on Linux).
_IOV_MAX: Final = 512


def _write_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        # Drop what was written; a buffer written in part stays, cut at the offset.
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]

"""Append each message to an mbox file, in the mboxrd flavour.

Theory of operation (RFC 4155, and the mboxrd convention): each message starts with a
``From sender date`` separator line and ends with a blank line; any line of the message that
starts with ``"From "`` after zero or more ``>`` gets one more ``>``, so that no line of a body
can pass for a separator and readers that know mboxrd can undo the quoting exactly. Line
endings become LF: the format is a Unix text file, and readers look for ``"\\n\\nFrom "``.

Several connections share one file, so appends are serialized three ways:

* a :class:`trio.Lock` per sink, so deliveries of this process queue up in Trio instead of
  each holding a worker thread while it waits;
* ``flock``, which excludes every other open of the file, other sinks of this process included;
* ``fcntl`` record locks (``lockf``), which is what Postfix's local delivery, mutt and Python's
  :mod:`mailbox` use, so those do not read or write the file while we append.

No dot-lock file is made (it needs write access to the directory). The locks are polled
without blocking, for at most ``lock_timeout`` seconds, so a reader that never lets go makes
the sender retry (450) instead of hanging the connection. If writing fails halfway, the file is
truncated back to its previous size, so no partial message is left behind; if the writer dies
halfway (killed), the next start (building the sink) or delivery cuts the partial message off
(see the recovery notes at the end of this module).

The body is streamed from the spool (:meth:`~trio_smtp.Mail.open_file`) and quoted piece by
piece, so a message of any size costs a fixed amount of memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from typing import TYPE_CHECKING, Final

import trio

from .._received import (
    MAX_PATH,
    end_of_trace,
    printable,
    received_header,
    return_path_header,
)
from .._spool import READ_SIZE
from ..engine import Reply
from ..verify._header import auth_header, delivery_file

if TYPE_CHECKING:
    from .._mail import Mail

#: How long a delivery waits for another program to release the mbox lock, by default.
DEFAULT_LOCK_TIMEOUT: Final = 30.0
_LOCK_POLL_INTERVAL: Final = 0.05
_FILE_MODE: Final = 0o600

# mboxrd: one more '>' before any line that reads '>*From '.
_FROM_LINE: Final = re.compile(rb"^(>*From )", re.MULTILINE)


# A line start that may still turn out to read '>*From ' once more bytes arrive.
_FROM_PREFIX: Final = re.compile(rb">*(?:F|Fr|Fro|From)?")


def _separator(sender: str) -> bytes:
    # RFC 4155 §2: "From " + the envelope sender + a UTC asctime() date. The null path is
    # written as MAILER-DAEMON, as Postfix and sendmail do; whitespace would end the address.
    who = printable(sender, limit=MAX_PATH, token=True) if sender else "MAILER-DAEMON"
    return f"From {who} {time.asctime(time.gmtime())}\n".encode()


class _MboxrdQuoter:
    """CRLF to LF and mboxrd quoting for a message that arrives in pieces.

    Equal to quoting the whole message at once, with a bounded carry between pieces: a CR
    that may be the first half of a CRLF, and a line start that may yet read ``From ``
    (the ``>`` before it are written at once: one more ``>`` anywhere in the run is the same
    as one more at its start).
    """

    def __init__(self) -> None:
        self._carry = b""
        #: Whether the carry begins a line (after nothing but ``>``).
        self._line_start = True
        #: Whether the last byte written was a LF.
        self.ended_line = True

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        cr = data.endswith(b"\r")
        if cr:
            data = data[:-1]
        data = data.replace(b"\r\n", b"\n")
        head = b""
        if not self._line_start:
            nl = data.find(b"\n")
            if nl < 0:
                self._carry = b"\r" if cr else b""
                return self._emit(data)
            head, data = data[: nl + 1], data[nl + 1 :]
        last = data.rfind(b"\n") + 1
        whole, tail = data[:last], data[last:]
        out = head + _FROM_LINE.sub(rb">\1", whole)
        m = _FROM_PREFIX.fullmatch(tail)
        if m is not None:
            quotes = len(tail) - len(tail.lstrip(b">"))
            out += tail[:quotes]
            self._carry, self._line_start = tail[quotes:], True
        else:
            out += _FROM_LINE.sub(rb">\1", tail)
            self._carry, self._line_start = b"", False
        if cr:
            self._carry += b"\r"
        return self._emit(out)

    def end(self) -> bytes:
        """What is still held back (never a ``From `` line)."""
        carry, self._carry = self._carry, b""
        return self._emit(carry)

    def _emit(self, out: bytes) -> bytes:
        if out:
            self.ended_line = out.endswith(b"\n")
        return out


def _mboxrd_entry(sender: str, headers: bytes, content: bytes) -> bytes:
    """The whole entry at once (kept for tests: the streaming writer must equal it)."""
    body = _FROM_LINE.sub(rb">\1", (headers + content).replace(b"\r\n", b"\n"))
    if not body.endswith(b"\n"):
        body += b"\n"
    return _separator(sender) + body + b"\n"


class MboxSink:
    """Append each message to an mbox file (mboxrd quoting), locked and fsynced.

    The file is created (mode 0600) if missing; its directory is not. It can be read with
    :class:`mailbox.mbox`, mutt and the like. Give every server of a process that writes
    the same file the same sink, so that its deliveries queue up in Trio.

    Args:
        path: The mbox file.
        lock_timeout: Seconds to wait for another program to release its lock on the file.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> None:
        if lock_timeout < 0:
            raise ValueError(f"lock_timeout must not be negative, not {lock_timeout!r}")
        self.path = os.fspath(path)
        self.lock_timeout = lock_timeout
        self._lock = trio.Lock()
        recover(self.path)

    def __repr__(self) -> str:
        return f"MboxSink({self.path!r})"

    async def deliver(self, mail: Mail) -> None:
        """Append the message, with ``Return-Path`` and ``Received`` headers, and fsync.

        Args:
            mail: The message to store.

        Raises:
            trio_smtp.engine.Reply: ``450 4.2.0`` when another program holds the mbox lock
                for longer than ``lock_timeout``; ``451 4.3.0`` when the file cannot be
                written. Either way the file is as it was before.
        """
        await self.store(mail)

    async def store(self, mail: Mail) -> str:
        """Like :meth:`deliver`, and return the path of the mbox file."""
        headers = return_path_header(mail) + received_header(mail) + auth_header(mail)
        async with self._lock:
            try:
                await trio.to_thread.run_sync(self._append, mail, headers)
            except OSError as exc:
                reason = os.strerror(exc.errno).lower() if exc.errno else "storage error"
                raise Reply(451, f"4.3.0 cannot store the message: {reason}") from exc
        return self.path

    def _append(self, mail: Mail, headers: bytes) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, _FILE_MODE)
        try:
            self._acquire(fd)
            size = _recover(fd, self.path, os.fstat(fd).st_size)
            # A separator line only counts after a blank line; mend a file that lacks one
            # (written by a tool that does not end messages with a blank line).
            mend = b""
            if size:
                tail = os.pread(fd, 2, max(size - 2, 0))
                if not tail.endswith(b"\n"):
                    mend = b"\n\n"
                elif size >= 2 and tail != b"\n\n":
                    mend = b"\n"
            _mark_pending(fd, self.path, size, size + len(mend))
            try:
                _write_all(fd, mend + _separator(mail.mail_from))
                quoter = _MboxrdQuoter()
                with delivery_file(mail) as body:
                    first = body.read(READ_SIZE)
                    _write_all(fd, quoter.feed(headers + end_of_trace(first) + first))
                    while chunk := body.read(READ_SIZE):
                        _write_all(fd, quoter.feed(chunk))
                end = quoter.end()
                _write_all(fd, end + (b"\n" if not quoter.ended_line else b"") + b"\n")
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                _clear_pending(fd, self.path)
                raise
            _clear_pending(fd, self.path)
        finally:
            # Closing the descriptor releases both locks.
            os.close(fd)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BaseException:
                    # Never hold one lock while waiting for the other: that could deadlock
                    # with a program that takes them in the other order.
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    raise
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                # RFC 5321 §4.2.3: 450 is the reply for a mailbox that is busy.
                raise Reply(450, "4.2.0 mailbox busy, try again later")
            time.sleep(_LOCK_POLL_INTERVAL)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Crash recovery. Before appending, the sink records where the file ended and where its
# entry starts, and removes the record once the entry is fsynced. The record goes on the file
# itself (an extended attribute: no other file, no write access to the directory needed);
# where the file system has no user xattrs, into a small fsynced journal file next to the
# mbox (``<mbox>.trio-smtp-append``). A record found when a sink is built (at start) or at
# the next delivery means a writer died mid-append (SIGKILL, power loss): the bytes from that
# offset on are a partial, never-acknowledged entry, and the file is cut back to where the
# last complete message ended. Unless another program appended a message after it (a line
# reading "From " past our separator: inside our entry every such line is quoted): then
# nothing is cut, since that mail is somebody's. Postfix's local(8) and procmail only
# truncate after a write error they see; a killed writer leaves its partial message there.
_PENDING_XATTR: Final = "user.trio-smtp.append"
_JOURNAL_SUFFIX: Final = ".trio-smtp-append"
_SCAN_SIZE: Final = 1 << 20


def recover(path: str) -> None:
    """Cut off an entry a killed writer left in the mbox at ``path`` (blocking; at start).

    Does nothing when the file is missing or another program holds its lock (the next
    delivery recovers then).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _recover(fd, path, os.fstat(fd).st_size)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mark_pending(fd: int, path: str, size: int, entry_start: int) -> None:
    record = f"{size} {entry_start}".encode()
    try:
        os.setxattr(fd, _PENDING_XATTR, record)
        return
    except (OSError, AttributeError):
        pass
    # No user xattrs here: the journal. Without write access to the directory either, the
    # append goes on unrecorded (as Postfix's would): it cannot be repaired after a crash.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        journal = os.open(path + _JOURNAL_SUFFIX, flags, _FILE_MODE)
        try:
            os.write(journal, record)  # 20-odd bytes to a regular file: one write
            os.fsync(journal)
        finally:
            os.close(journal)


def _clear_pending(fd: int, path: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.removexattr(fd, _PENDING_XATTR)
    with contextlib.suppress(OSError):
        os.unlink(path + _JOURNAL_SUFFIX)


def _read_pending(fd: int, path: str) -> bytes | None:
    try:
        return os.getxattr(fd, _PENDING_XATTR)
    except (OSError, AttributeError):
        pass
    try:
        with open(path + _JOURNAL_SUFFIX, "rb") as journal:
            return journal.read(64)
    except OSError:
        return None


def _recover(fd: int, path: str, size: int) -> int:
    """Cut off an entry a dead writer left half-written; return the file's size."""
    record = _read_pending(fd, path)
    if record is None:
        return size
    try:
        start, entry_start = (int(x) for x in record.split())
    except ValueError:
        _clear_pending(fd, path)
        return size
    if start < size and not _another_message_after(fd, entry_start + 1, size):
        os.ftruncate(fd, start)
        os.fsync(fd)
        size = start
    _clear_pending(fd, path)
    return size


def _another_message_after(fd: int, offset: int, size: int) -> bool:
    needle = b"\nFrom "
    overlap = b""
    while offset < size:
        chunk = os.pread(fd, min(_SCAN_SIZE, size - offset), offset)
        if not chunk:
            break
        if needle in overlap + chunk:
            return True
        overlap = chunk[-(len(needle) - 1) :]
        offset += len(chunk)
    return False

"""Append each message to an mbox file, in the mboxrd flavour.

Theory of operation (RFC 4155, and the mboxrd convention): each message starts with a
``From sender date`` separator line and ends with a blank line; any line of the message that
starts with ``From `` after zero or more ``>`` gets one more ``>``, so that no line of a body
can pass for a separator and readers that know mboxrd can undo the quoting exactly. Line
endings become LF: the format is a Unix text file, and readers look for ``\\n\\nFrom ``.

Several connections share one file, so appends are serialized three ways:

* a :class:`trio.Lock` per sink, so deliveries of this process queue up in Trio instead of
  each holding a worker thread while it waits;
* ``flock``, which excludes every other open of the file, other sinks of this process included;
* ``fcntl`` record locks (``lockf``), which is what Postfix's local delivery, mutt and Python's
  :mod:`mailbox` use, so those do not read or write the file while we append.

No dot-lock file is made (it needs write access to the directory). The locks are polled
without blocking, for at most ``lock_timeout`` seconds, so a reader that never lets go makes
the sender retry (450) instead of hanging the connection. If writing fails halfway, the file is
truncated back to its previous size, so no partial message is left behind.
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
from ..engine import Reply

if TYPE_CHECKING:
    from .._mail import Mail

#: How long a delivery waits for another program to release the mbox lock, by default.
DEFAULT_LOCK_TIMEOUT: Final = 30.0
_LOCK_POLL_INTERVAL: Final = 0.05
_FILE_MODE: Final = 0o600

# mboxrd: one more '>' before any line that reads '>*From '.
_FROM_LINE: Final = re.compile(rb"^(>*From )", re.MULTILINE)


def _mboxrd_entry(sender: str, headers: bytes, content: bytes) -> bytes:
    # RFC 4155 §2: "From " + the envelope sender + a UTC asctime() date. The null path is
    # written as MAILER-DAEMON, as Postfix and sendmail do; whitespace would end the address.
    who = printable(sender, limit=MAX_PATH, token=True) if sender else "MAILER-DAEMON"
    separator = f"From {who} {time.asctime(time.gmtime())}\n".encode()
    body = _FROM_LINE.sub(rb">\1", (headers + content).replace(b"\r\n", b"\n"))
    if not body.endswith(b"\n"):
        body += b"\n"
    return separator + body + b"\n"


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
        headers = return_path_header(mail) + received_header(mail) + end_of_trace(mail.content)
        async with self._lock:
            try:
                await trio.to_thread.run_sync(self._append, mail.mail_from, headers, mail.content)
            except OSError as exc:
                reason = os.strerror(exc.errno).lower() if exc.errno else "storage error"
                raise Reply(451, f"4.3.0 cannot store the message: {reason}") from exc

    def _append(self, sender: str, headers: bytes, content: bytes) -> None:
        entry = _mboxrd_entry(sender, headers, content)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.path, flags, _FILE_MODE)
        try:
            self._acquire(fd)
            size = os.fstat(fd).st_size
            # A separator line only counts after a blank line; mend a file that lacks one
            # (written by a tool that does not end messages with a blank line).
            if size:
                tail = os.pread(fd, 2, max(size - 2, 0))
                if not tail.endswith(b"\n"):
                    entry = b"\n\n" + entry
                elif size >= 2 and tail != b"\n\n":
                    entry = b"\n" + entry
            try:
                view = memoryview(entry)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
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

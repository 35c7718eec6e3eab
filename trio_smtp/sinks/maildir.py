"""Deliver each message into a Maildir, one file per message.

Theory of operation (https://cr.yp.to/proto/maildir.html): the message is written under a
unique name into ``tmp/``, flushed to disk with ``fsync``, then renamed into ``new/``, and the
``new/`` directory itself is fsynced so that the rename survives a crash. Readers only look in
``new/`` and ``cur/``, so they never see a half-written file, and once :meth:`deliver` returns
the message is on disk: the server may answer 250 (SPEC §6).

The body is streamed from the spool (:meth:`~trio_smtp.Mail.open_file`) into ``tmp/`` in
pieces, so a message of any size costs a fixed amount of memory; it is never loaded whole.

All of the file work runs in a worker thread so that a slow disk never stalls the event loop.
The thread is not abandoned on cancellation: a cancelled delivery waits for the thread, which
either stores the message or cleans up after itself, so nothing half-written is left behind.

The file holds the ``Return-Path`` and ``Received`` headers followed by the content exactly as
received, CRLF line endings included: Maildir does not fix a line ending, Dovecot and Python's
:mod:`mailbox` read CRLF files, and keeping the bytes leaves signatures (DKIM) and binary
bodies intact.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import secrets
import shutil
import socket
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from .._received import end_of_trace, received_header, return_path_header
from .._spool import READ_SIZE
from ..engine import Reply
from ..verify._header import auth_header, delivery_file

if TYPE_CHECKING:
    from .._mail import Mail

_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_SUBDIRS: Final = ("tmp", "new", "cur")

# Maildir spec, "the Q deliveries counter": unique within this process, across all sinks.
_deliveries = itertools.count(1)


def _storage_error(exc: OSError) -> Reply:
    # A short reason helps the sender's postmaster; the path would only help an attacker.
    reason = os.strerror(exc.errno).lower() if exc.errno else "storage error"
    return Reply(451, f"4.3.0 cannot store the message: {reason}")


def _copy_rest(body: Any, out: io.BufferedWriter, size: int) -> None:
    """Copy what is left of ``body`` to ``out``, and flush it.

    A spooled body goes file to file in the kernel (``sendfile``), with no buffer in this
    process; a body in memory is written from its bytes.
    """
    try:
        src = body.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):  # in memory, or filtered
        shutil.copyfileobj(body, out, READ_SIZE)
        out.flush()
        return
    out.flush()
    offset = body.tell()
    while offset < size:
        sent = os.sendfile(out.fileno(), src, offset, size - offset)
        if not sent:
            raise OSError(errno.EIO, "spool file is shorter than the message")
        offset += sent


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MaildirSink:
    """Store each message as one file in a Maildir.

    The directory and its ``tmp/``, ``new/`` and ``cur/`` are created (mode 0700) if missing,
    on every delivery, so a Maildir removed while the server runs comes back. The file names
    follow the Maildir spec (``time.MusecPpidQcountRrandom.host``), and the files can be read with
    :class:`mailbox.Maildir`, Dovecot, mutt and the like.

    Args:
        path: The Maildir directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # Maildir spec: '/' and ':' in the host name are written as octal escapes.
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    def __repr__(self) -> str:
        return f"MaildirSink({self.path!r})"

    def _unique_name(self) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return (
            f"{seconds}.M{micros}P{os.getpid()}Q{next(_deliveries)}"
            f"R{secrets.token_hex(4)}.{self._host}"
        )

    async def deliver(self, mail: Mail) -> None:
        """Store the message in ``new/``, fsynced.

        Args:
            mail: The message to store.

        Raises:
            trio_smtp.engine.Reply: ``451 4.3.0`` when the file cannot be written (disk full,
                permissions, a missing or wrong path); nothing is left in ``tmp/`` or ``new/``.
        """
        await self.store(mail)

    async def store(self, mail: Mail) -> str:
        """Like :meth:`deliver`, and return the path of the file written in ``new/``."""
        headers = return_path_header(mail) + received_header(mail) + auth_header(mail)
        name = self._unique_name()
        try:
            await trio.to_thread.run_sync(self._store, name, headers, mail)
        except OSError as exc:
            raise _storage_error(exc) from exc
        return os.path.join(self.path, "new", name)

    def _store(self, name: str, headers: bytes, mail: Mail) -> None:
        # makedirs gives `mode` to the last directory only, so the Maildir itself comes first.
        os.makedirs(self.path, mode=_DIR_MODE, exist_ok=True)
        for sub in _SUBDIRS:
            os.makedirs(os.path.join(self.path, sub), mode=_DIR_MODE, exist_ok=True)
        new_dir = os.path.join(self.path, "new")
        written = os.path.join(self.path, "tmp", name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(written, flags, _FILE_MODE)
        try:
            with open(fd, "wb", closefd=True) as f, delivery_file(mail) as body:
                first = body.read(READ_SIZE)
                f.write(headers + end_of_trace(first) + first)
                _copy_rest(body, f, mail.content_size)
                os.fsync(f.fileno())
            os.rename(written, os.path.join(new_dir, name))
            written = os.path.join(new_dir, name)
            _fsync_directory(new_dir)
        except BaseException:
            # The sender will be told to retry, so a copy left here would become a duplicate
            # (in new/) or litter (in tmp/).
            with contextlib.suppress(OSError):
                os.unlink(written)
            raise

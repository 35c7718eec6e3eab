"""One mail transaction: the :class:`Mail` being built and its body as it arrives.

The connection task opens a :class:`Transaction` when MAIL arrives and drops it
whenever the engine says no transaction is in progress any more (a refused MAIL,
RSET, HELO, a refused BDAT chunk, the end of the message): the engine is the one
owner of the session's sequencing, this object only collects what it accepted.

The body sits behind a small interface (:class:`Body`: ``append``, ``finish``,
``discard``, ``size``) so that where it is kept (memory today, a spool file past a
threshold) can change without touching the connection task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._mail import Mail, Recipient

if TYPE_CHECKING:
    from ._session import Session
    from .engine import MailFrom, RcptTo


class Body(Protocol):
    """Where a message body goes while it arrives."""

    @property
    def size(self) -> int:
        """Octets appended so far."""
        ...

    def append(self, chunk: bytes) -> None:
        """Add the next piece of the (dot-unstuffed) body."""
        ...

    def finish(self) -> bytes:
        """The whole body; the body is empty afterwards."""
        ...

    def discard(self) -> None:
        """Drop what was received (a refused or interrupted message)."""
        ...


class MemoryBody:
    """A body kept in memory, as a list of chunks joined once at the end."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)

    def finish(self) -> bytes:
        data = b"".join(self._chunks)
        self.discard()
        return data

    def discard(self) -> None:
        self._chunks = []
        self._size = 0


class Transaction:
    """The mail being built from MAIL to the end of its body.

    Args:
        mail: The new mail (envelope from MAIL, no recipients yet).
        body: Where the body goes (a :class:`MemoryBody` by default).
    """

    def __init__(self, mail: Mail, body: Body | None = None) -> None:
        self.mail = mail
        self.body: Body = body if body is not None else MemoryBody()

    def __repr__(self) -> str:
        return f"<Transaction {self.mail.id} body={self.body.size} octets>"

    @classmethod
    def start(cls, event: MailFrom, *, session: Session, mail_id: str) -> Transaction:
        """A transaction for an accepted (or about to be answered) MAIL command."""
        return cls(
            Mail(
                id=mail_id,
                session=session,
                mail_from=event.address,
                mail_params=event.params,
                body_type=event.body,
                smtputf8=event.smtputf8,
                size=event.size,
                ret=event.ret,
                envid=event.envid,
                auth=event.auth,
            )
        )

    def add_recipient(self, event: RcptTo) -> None:
        """Record a recipient the engine accepted."""
        self.mail.recipients.append(
            Recipient(
                address=event.address,
                params=event.params,
                notify=event.notify,
                orcpt=event.orcpt,
            )
        )

    def append(self, chunk: bytes) -> None:
        """Add a piece of the body."""
        self.body.append(chunk)

    def finish(self) -> Mail:
        """The complete mail, its content set from the body."""
        self.mail.content = self.body.finish()
        return self.mail

    def discard(self) -> None:
        """Drop the body received so far."""
        self.body.discard()

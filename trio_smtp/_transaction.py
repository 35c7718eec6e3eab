"""One mail transaction: the :class:`Mail` being built and its body as it arrives.

The connection task opens a :class:`Transaction` when MAIL arrives and drops it
whenever the engine says no transaction is in progress any more (a refused MAIL,
RSET, HELO, a refused BDAT chunk, the end of the message): the engine is the one
owner of the session's sequencing, this object only collects what it accepted.

The body is a spooled :class:`~._spool.Body`: in memory up to ``spool_memory``, then in
an anonymous spool file, under the server's memory budget (see ``_spool.py``). Appending
may wait (a write in a worker thread, or room in the budget): the connection reads no more
input meanwhile, which is the back-pressure that keeps memory bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._mail import Mail, Recipient

if TYPE_CHECKING:
    from ._session import Session
    from ._spool import Body, Spool
    from .engine import MailFrom, RcptTo, Reply


class Transaction:
    """The mail being built from MAIL to the end of its body.

    Args:
        mail: The new mail (envelope from MAIL, no recipients yet).
        body: Where the body goes.
    """

    def __init__(self, mail: Mail, body: Body) -> None:
        self.mail = mail
        self.body = body
        #: The reply a ``DATA_CHUNK`` hook refused the message with while it arrived.
        self.refusal: Reply | None = None

    def __repr__(self) -> str:
        return f"<Transaction {self.mail.id} body={self.body.size} octets>"

    @classmethod
    def start(cls, event: MailFrom, *, session: Session, mail_id: str, spool: Spool) -> Transaction:
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
            ),
            spool.body(),
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

    def append_nowait(self, chunk: bytes) -> bool:
        """Add a piece of the body if that needs no wait (see :meth:`Body.append_nowait`)."""
        return self.body.append_nowait(chunk)

    async def append(self, chunk: bytes) -> None:
        """Add a piece of the body (dropped, but counted, once the message is refused)."""
        await self.body.append(chunk)

    def refuse(self, reply: Reply) -> None:
        """Refuse the message before its end: the rest is read and dropped."""
        self.refusal = reply
        self.body.discard()

    async def finish(self) -> Mail:
        """The complete mail, its body attached (in memory or spooled).

        Raises:
            trio_smtp.engine.Reply: ``452 4.3.1`` when the spool disk was full; the body is
                gone then.
        """
        await self.body.finish()
        self.mail._body = self.body  # read on first use: mail.content, open(), open_file()
        return self.mail

    def release(self) -> None:
        """The message was answered: its memory goes back to the server's budget.

        The bytes stay readable for as long as someone holds the :class:`Mail`.
        """
        self.body.release()

    def discard(self) -> None:
        """Drop the body received so far (refused, reset, timed out or cut off)."""
        self.body.discard()

"""A connection's mail transactions: from MAIL to the replies after the final dot.

Theory of operation: the engine decides when a transaction starts and ends (a
positive MAIL, RSET, a refused chunk, the end of the message); :class:`Delivery`
holds the :class:`~._transaction.Transaction` (its Mail and body) exactly that long,
and nothing else does: no local of the task's loop may hold it, or its Mail (and
spool file) would outlive the message. Each body chunk is appended to the
transaction's :class:`~._body.Body`, without a trip through the scheduler when it
fits in memory and in the budget, else under the exact data deadline while the spool
or the budget makes room (no more input is read meanwhile: back-pressure). The
``DATA_CHUNK`` hook may refuse the message early; the refusal is the reply after the
final dot. At the end the verifier (DKIM, DMARC, ARC) and the ``done`` hook or the
sink decide the replies: one for SMTP, one per recipient for LMTP (RFC 2033 §4.2).
A message refused is logged and counted here; a stored one too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._logger import writes
from ._message_log import log_message
from ._transaction import Transaction
from .engine import MailFrom, RcptTo, Reply

if TYPE_CHECKING:
    from ._hooks import HookRunner
    from ._link import Link
    from ._mail import Mail
    from ._session import Session
    from ._settings import ConnectionSettings
    from .engine import Command

__all__ = ["Delivery"]


class Delivery:
    """Holds one connection's transaction in progress, and answers its final dot.

    Args:
        link: The connection's byte path (its deadlines, and the engine to answer).
        hooks: The connection's hooks.
        settings: What the server gives every connection.
        session: The session the messages belong to.
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = (
        "_started",
        "engine",
        "hook_bound",
        "hooks",
        "link",
        "lmtp",
        "logger",
        "metrics",
        "session",
        "settings",
        "txn",
    )

    def __init__(
        self,
        link: Link,
        hooks: HookRunner,
        settings: ConnectionSettings,
        session: Session,
    ) -> None:
        self.link = link
        self.engine = link.engine
        self.hooks = hooks
        self.settings = settings
        self.session = session
        self.lmtp = settings.config.lmtp
        self.logger = settings.logger
        self.metrics = settings.metrics
        #: How long a hook can take: itself and, if it fails, the ``error`` hook.
        self.hook_bound = 2 * settings.config.hook_timeout
        #: The mail transaction in progress, while the engine says there is one.
        self.txn: Transaction | None = None
        self._started = 0

    def __repr__(self) -> str:
        return f"<Delivery {self.session.id} {self.txn!r}>"

    @property
    def mail(self) -> Mail | None:
        """The mail of the transaction in progress, or ``None``."""
        return self.txn.mail if self.txn is not None else None

    async def start(self, event: MailFrom) -> None:
        """A MAIL command: its transaction starts (kept if the reply is positive)."""
        self._started += 1
        txn = self.txn = Transaction.start(
            event,
            session=self.session,
            mail_id=f"{self.session.id}.{self._started}",
            spool=self.settings.spool,
        )
        if self.settings.verifier is not None:  # SPF, for MAIL and RCPT hooks to read
            self.link.exact()
            await self.settings.verifier.mail_started(txn.mail, authserv_id=self.settings.hostname)

    def answered(self, event: Command, *, in_transaction: bool) -> None:
        """A command was answered: the transaction follows what the engine decided
        (``in_transaction``: whether the engine still has one)."""
        txn = self.txn
        if txn is None:
            return
        if not in_transaction:
            # RSET, HELO, a refused MAIL or BDAT chunk: nothing is kept.
            self.discard()
        elif type(event) is RcptTo and self.engine.session.recipients > len(txn.mail.recipients):
            txn.add_recipient(event)

    def discard(self) -> None:
        """End the transaction in progress, keeping nothing of it."""
        if self.txn is not None:
            self.txn.discard()
            self.txn = None

    def dropped(self) -> None:
        """The connection ended: a message cut off in its body is logged and thrown away."""
        txn = self.txn
        if txn is not None and txn.body.size:
            self.logger.info(
                f"Message dropped: id={txn.mail.id} (connection ended before the final dot)"
            )
        self.discard()

    async def append(self, chunk: bytes) -> None:
        """Add a piece of the body; the ``DATA_CHUNK`` hook sees it."""
        txn = self.txn
        assert txn is not None
        if not txn.append_nowait(chunk):
            # Waits for a spool write or for room in the memory budget: no more input is
            # read meanwhile (back-pressure), under the exact data deadline (not a stale
            # one: only a receive is retried when that fires, see Link.fired_early).
            self.link.exact()
            await txn.append(chunk)
        if "DATA_CHUNK" in self.hooks.hooks and txn.refusal is None:
            # A refusal now is the reply after the final dot.
            self.link.disarm(self.hook_bound)
            reply = await self.hooks.chunk_reply(txn.mail, chunk, txn.body.size)
            if reply is not None and not reply.is_positive:
                txn.refuse(reply)

    async def finish(self) -> bool:
        """Answer the final dot (or BDAT LAST); the transaction ends.

        Returns:
            Whether the message was stored for at least one recipient.
        """
        txn = self.txn
        assert txn is not None
        engine = self.engine
        settings = self.settings
        # The verifier has timeouts of its own (DNS), not hook_timeout.
        self.link.disarm(self.hook_bound if settings.verifier is None else None)
        refusal = txn.refusal
        if refusal is None:
            try:
                mail = await txn.finish()
            except Reply as storage_full:  # the spool disk was full: nothing was kept
                refusal = storage_full
        if refusal is not None:
            # SMTP has one reply for the message, LMTP one per recipient (RFC 2033 §4.2).
            engine.respond([refusal] * (len(txn.mail.recipients) if self.lmtp else 1))
            self.refused(refusal, txn)
            self.txn = None
            return False
        try:
            if settings.verifier is None:
                replies = await self.hooks.deliver(mail, settings.sink, lmtp=self.lmtp)
            else:
                replies = await self._verified(mail)
        finally:
            txn.release()
        # SMTP's one reply as itself: the engine then checks no list.
        engine.respond(replies if self.lmtp else replies[0])
        # Not in a finally: a delivery cut short (cancelled) leaves the transaction
        # for dropped() to log and discard.
        self.txn = None
        # SMTP has one reply for the whole message, LMTP one per recipient.
        per_recipient = replies if self.lmtp else replies * len(mail.recipients)
        accepted = [
            r.address
            for r, reply in zip(mail.recipients, per_recipient, strict=True)
            if reply.is_positive
        ]
        if not accepted:
            # Released above, not discarded: the hook saw the Mail and may keep it; its
            # spool file closes when the last reference to the Mail goes.
            self.refused(replies[0], None, mail)
            return False
        self.session.messages += 1
        if self.metrics.enabled:
            self.metrics.message("accepted", mail.content_size)
        # A sink that logs each message itself (the print sink, the CLI's sinks) says it.
        quiet = "done" not in self.hooks.hooks and getattr(
            self.settings.sink, "logs_messages", False
        )
        level = "debug" if quiet else "info"
        if writes(self.logger, level):  # (log_message checks too, but after a coroutine)
            await log_message(self.logger, level, mail, "accepted", recipients=accepted)
        return True

    async def _verified(self, mail: Mail) -> list[Reply]:
        """The replies to a complete message: the verifier's refusal, or the delivery's."""
        settings = self.settings
        assert settings.verifier is not None  # DKIM, DMARC, ARC; refusal: dmarc_enforce
        verdict = await settings.verifier.message_received(mail, authserv_id=settings.hostname)
        if verdict is not None:
            return await self.hooks.message_replies(verdict, mail, lmtp=self.lmtp)
        return await self.hooks.deliver(mail, settings.sink, lmtp=self.lmtp)

    def rejected(self, reply: Reply) -> None:
        """The engine refused the message (too big, bad line endings): it is discarded."""
        self.refused(reply, self.txn)
        self.txn = None

    def refused(self, reply: Reply, txn: Transaction | None, mail: Mail | None = None) -> None:
        """Count and log a message refused with ``reply`` (its transaction is discarded)."""
        if txn is not None:
            mail = txn.mail
            txn.discard()
        # A temporary refusal (a failing hook or sink, a full disk) is a failure on our side.
        self.metrics.message("failed" if reply.code // 100 == 4 else "refused")
        self.logger.info(
            f"Message refused: id={mail.id if mail else self.session.id} "
            f"from=<{mail.mail_from if mail else ''}> -> {reply}"
        )

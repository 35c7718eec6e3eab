"""The one log record written for each message, whatever stored it.

Every sink and the connection task describe a message the same way, so a grep (or a ``jq``
filter on the JSON format) finds every message in one pattern::

    Message accepted: id=4F2A… from=<a@x.test> to=<b@y.test>,<c@y.test> size=1234
        subject="Hello" path=/var/mail/new/1700…

The fields of the JSON format are ``message_id``, ``from``, ``to``, ``size``, ``subject``,
``result`` (``accepted``, ``refused`` or ``failed``) and, when known, ``path`` (the file a
Maildir or mbox sink wrote), ``upstream`` (where a relay sent it), ``reply`` and ``reason``.
Values that came from the client are escaped by the logger, not here.
"""

from __future__ import annotations

import email.parser
import email.policy
import smtplib
from typing import TYPE_CHECKING, Any, Final

from ._logger import LoggerLike, emit, writes
from .engine import Reply

if TYPE_CHECKING:
    from ._mail import Mail

#: Only this much of the message is read to find its Subject.
_MAX_HEADER_SCAN: Final = 64 * 1024
#: A Subject longer than this is cut in the log line.
_MAX_SUBJECT: Final = 200


async def read_subject(mail: Mail) -> str | None:
    """The decoded ``Subject`` of a message, read from its header block only.

    Reads at most 64 KiB through :meth:`Mail.open` (in a worker thread for a spooled
    body), never the whole message.

    Returns:
        The subject (RFC 2047 encoded words decoded), cut to a sensible length, or
        ``None`` when there is none.
    """
    head = b""
    async with mail.open() as body:
        async for chunk in body:
            head += chunk
            if len(head) >= _MAX_HEADER_SCAN or b"\r\n\r\n" in head:
                break
    return subject_from_head(head)


def subject_from_head(head: bytes) -> str | None:
    """The decoded ``Subject`` found in the first bytes of a message (see :func:`read_subject`)."""
    head = head[:_MAX_HEADER_SCAN]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[: end + 2]
    try:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        value = parsed.get("subject")
    except Exception:  # malformed headers: the email package raises various errors
        return None
    if value is None:
        return None
    # The email package has unfolded and decoded it; what is left is escaped by the logger.
    text = str(value)
    return text if len(text) <= _MAX_SUBJECT else text[: _MAX_SUBJECT - 1] + "…"


def describe(
    mail: Mail,
    result: str,
    *,
    subject: str | None = None,
    recipients: list[str] | None = None,
    path: str | None = None,
    upstream: str | None = None,
    reply: object = None,
    reason: str | None = None,
) -> tuple[str, dict[str, object]]:
    """The text and the fields of the record for ``mail``.

    Args:
        mail: The message.
        result: ``"accepted"``, ``"refused"`` or ``"failed"``.
        subject: The Subject (:func:`read_subject`).
        recipients: The recipients it was accepted for (LMTP may accept some only);
            all of them by default.
        path: The file written, for file sinks.
        upstream: ``host:port`` of the server it was relayed to.
        reply: The reply the client got, when it was not a 250.
        reason: Why storing or relaying failed.
    """
    rcpts = mail.rcpt_tos if recipients is None else recipients
    size = mail.content_size
    fields: dict[str, object] = {
        "message_id": mail.id,
        "session": mail.session.id,
        "from": mail.mail_from,
        "to": rcpts,
        "size": size,
        "subject": subject,
        "result": result,
    }
    text = (
        f"Message {result}: id={mail.id} from=<{mail.mail_from}> "
        f"to={','.join(f'<{a}>' for a in rcpts)} size={size}"
    )
    if subject is not None:
        text += f' subject="{subject}"'
    for key, value in (("path", path), ("upstream", upstream), ("reason", reason)):
        if value is not None:
            text += f" {key}={value}"
            fields[key] = value
    if reply is not None:
        text += f" -> {reply}"
        fields["reply"] = str(reply)
    return text, {k: v for k, v in fields.items() if v is not None}


async def log_message(
    logger: LoggerLike,
    level: str,
    mail: Mail,
    result: str,
    *,
    exc: BaseException | None = None,
    recipients: list[str] | None = None,
    path: str | None = None,
    upstream: str | None = None,
    reply: object = None,
    reason: str | None = None,
) -> None:
    """Write the record :func:`describe` makes, at ``level``, with the Subject.

    Args:
        logger: The server's logger.
        level: ``"info"`` for accepted and refused messages, ``"error"`` for failures.
        mail: The message.
        result: ``"accepted"``, ``"refused"`` or ``"failed"``.
        exc: The exception behind a failure, if its traceback is worth showing.
        recipients, path, upstream, reply, reason: As for :func:`describe`.
    """
    if not writes(logger, level):
        return  # no Subject to parse (it costs a fifth of a small message's CPU)
    try:
        subject = await read_subject(mail)
    except OSError:  # a spool file that cannot be read is no reason to lose the record
        subject = None
    text, fields = describe(
        mail,
        result,
        subject=subject,
        recipients=recipients,
        path=path,
        upstream=upstream,
        reply=reply,
        reason=reason,
    )
    emit(logger, level, text, exc=exc, **fields)


class LoggedSink:
    """Wrap a sink so that each delivery is logged in the one format, with where it went.

    A message stored or relayed is logged at INFO with the file written (``path=``, when
    the sink's ``store`` method reports it) or the upstream; a delivery that fails for a
    reason on our side (a disk error, an upstream that cannot be reached) at ERROR with
    the path or upstream and the reason; a refusal passed on from an upstream at WARN.

    Args:
        sink: The sink. If it has ``async def store(mail) -> str | None``, that is
            called instead of ``deliver`` and its result is logged as the path.
        logger: The server's logger.
        where: What the sink writes to, for the record: ``("path", "/var/mail/x")`` or
            ``("upstream", "mx.example.net:25")``.
    """

    #: The server need not log its own line for each message: this wrapper does.
    logs_messages: Final = True

    def __init__(self, sink: Any, logger: LoggerLike, *, where: tuple[str, str]) -> None:
        self.sink = sink
        self.logger = logger
        self.where = where

    def __repr__(self) -> str:
        return f"LoggedSink({self.sink!r})"

    async def deliver(self, mail: Mail) -> Any:
        """Deliver through the wrapped sink, log the outcome, return what the sink did.

        Raises:
            trio_smtp.engine.Reply: whatever the wrapped sink raised.
        """
        kind, target = self.where
        store = getattr(self.sink, "store", None)
        replies = None  # per recipient, from a sink on an LMTP server
        try:
            if store is not None:
                written = await store(mail)
            else:
                replies = await self.sink.deliver(mail)
                written = None
        except Reply as reply:
            cause = reply.__cause__
            path = target if kind == "path" else None
            upstream = target if kind == "upstream" else None
            # An upstream's own refusal is its business; a disk or network error is ours.
            if isinstance(cause, OSError) and not isinstance(cause, smtplib.SMTPResponseException):
                await log_message(
                    self.logger,
                    "error",
                    mail,
                    "failed",
                    reply=reply,
                    reason=_reason(cause),
                    path=path,
                    upstream=upstream,
                )
            else:
                await log_message(
                    self.logger, "warn", mail, "refused", reply=reply, path=path, upstream=upstream
                )
            raise
        if kind == "path":
            await log_message(self.logger, "info", mail, "accepted", path=written or target)
        elif replies is None:
            await log_message(self.logger, "info", mail, "accepted", upstream=target)
        else:
            await self._log_per_recipient(mail, replies, target)
        return replies

    async def _log_per_recipient(self, mail: Mail, replies: Any, target: str) -> None:
        """An LMTP server's relay answered each recipient: who got it, who was refused."""
        pairs = list(zip(mail.recipients, replies, strict=False))
        taken = [rcpt.address for rcpt, reply in pairs if reply.is_positive]
        if taken:
            await log_message(
                self.logger, "info", mail, "accepted", recipients=taken, upstream=target
            )
        for rcpt, reply in pairs:
            if not reply.is_positive:
                await log_message(
                    self.logger,
                    "warn",
                    mail,
                    "refused",
                    recipients=[rcpt.address],
                    reply=reply,
                    upstream=target,
                )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__

"""One message as the server received it: envelope, content and session."""

from __future__ import annotations

import datetime
import email.message
import email.parser
import email.policy
import io
from typing import TYPE_CHECKING

import attrs

from ._message_parts import Attachment, Headers, attachments_of, text_of
from ._spool import Body, BodyReader

if TYPE_CHECKING:
    from ._session import Session
    from .verify import AuthResults


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.define(kw_only=True, eq=False)
class Recipient:
    """One accepted recipient with its RFC 3461 DSN parameters.

    Attributes:
        address: The forward-path, without angle brackets.
        params: Every ESMTP parameter given on RCPT, keys upper-cased.
        notify: The ``NOTIFY`` values (``("SUCCESS", "FAILURE")``, ``("NEVER",)``) or ``None``.
        orcpt: The ``ORCPT`` value as ``(address-type, decoded address)`` or ``None``.
    """

    address: str
    params: dict[str, str | None] = attrs.field(factory=dict)
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None


@attrs.define(kw_only=True, eq=False)
class Mail:
    """A mail transaction: built as MAIL and RCPT arrive, completed at the final dot.

    Attributes:
        id: The queue identifier given in the 250 reply and log lines.
        session: The connection it came in on.
        mail_from: The reverse-path without angle brackets (``""`` for the null path).
        mail_params: Every ESMTP parameter given on MAIL, keys upper-cased.
        recipients: The accepted recipients, in order, with their parameters.
        content: The message exactly as received, dot-unstuffed (and with bare LF or CR
            normalized to CRLF under the default policy), as bytes. Empty until the final
            dot. A large body lives in a spool file until this is first read; to read it
            without loading it, use :meth:`open` or :meth:`open_file`.
        body_type: ``"7BIT"``, ``"8BITMIME"`` or ``"BINARYMIME"`` (the ``BODY`` parameter).
        smtputf8: Whether the client asked for SMTPUTF8.
        size: The ``SIZE`` the client declared, or ``None``.
        ret: The DSN ``RET`` value (``"FULL"``/``"HDRS"``) or ``None``.
        envid: The decoded DSN ``ENVID`` or ``None``.
        auth: The decoded ``AUTH=`` value of MAIL, or ``None``.
        received_at: When the transaction started (UTC).
        auth_results: What ``verify`` found (SPF from MAIL on; DKIM, DMARC and ARC before
            ``done``), or ``None`` when verification is off.
    """

    id: str
    session: Session
    mail_from: str = ""
    mail_params: dict[str, str | None] = attrs.field(factory=dict)
    recipients: list[Recipient] = attrs.field(factory=list)
    _content: bytes | None = attrs.field(default=None, alias="content")
    _body: Body | None = attrs.field(default=None, alias="body")
    body_type: str = "7BIT"
    smtputf8: bool = False
    size: int | None = None
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    received_at: datetime.datetime = attrs.field(factory=_utcnow)
    auth_results: AuthResults | None = None
    _message: email.message.EmailMessage | None = attrs.field(default=None, alias="_message")

    @property
    def rcpt_tos(self) -> list[str]:
        """The accepted recipients' addresses, in order."""
        return [r.address for r in self.recipients]

    @property
    def rcpt_params(self) -> list[dict[str, str | None]]:
        """The accepted recipients' ESMTP parameters, in the order of :attr:`rcpt_tos`."""
        return [r.params for r in self.recipients]

    @property
    def content(self) -> bytes:
        """The whole content as bytes, loaded on first use (see the class docstring)."""
        if self._content is None:
            if self._body is None:
                return b""
            self._content = self._body.read_bytes()
            # The bytes are here now: the spool file is no longer needed by this Mail.
            self._body = None
        return self._content

    @content.setter
    def content(self, value: bytes) -> None:
        self._content = value
        self._body = None
        self._message = None

    @property
    def content_size(self) -> int:
        """The length of :attr:`content` in bytes, without loading it.

        (:attr:`size` is the ``SIZE`` the client declared, which may differ.)
        """
        if self._content is None and self._body is not None:
            return self._body.size
        return len(self.content)

    def open(self) -> BodyReader:
        """Read the content in order without loading it whole.

        ::

            async with mail.open() as body:
                async for chunk in body:
                    digest.update(chunk)

        Each chunk is a :class:`bytes` object (up to 256 KiB for a spooled body, read in a
        worker thread; as it arrived for a body kept in memory).
        """
        return (self._body or Body.from_bytes(self.content)).reader()

    def open_file(self) -> io.BufferedReader | io.BytesIO:
        """The content as a binary file object with blocking reads, for code in a thread.

        Use it in a ``with`` block; several may be open at once, each with its own position.
        """
        if self._content is None and self._body is not None:
            return self._body.open_file()
        return io.BytesIO(self.content)

    @property
    def message(self) -> email.message.EmailMessage:
        """The content parsed with :mod:`email` (``policy.default``), on first access."""
        if self._message is None:
            parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(self.content)
            assert isinstance(parsed, email.message.EmailMessage)
            self._message = parsed
        return self._message

    @property
    def headers(self) -> Headers:
        """The headers, decoded; ``mail.headers["subject"]`` ignores case."""
        return Headers(self.message)

    @property
    def text(self) -> str:
        """The decoded text body (``text/plain``, else ``text/html``, else ``""``)."""
        return text_of(self.message)

    @property
    def attachments(self) -> list[Attachment]:
        """The attached files, decoded, in order."""
        return attachments_of(self.message)

    def __repr__(self) -> str:
        return (
            f"<Mail {self.id} from={self.mail_from!r} to={self.rcpt_tos!r} "
            f"size={self.content_size}>"
        )

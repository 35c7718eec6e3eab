"""Forward each message to another SMTP server before answering the client.

Theory of operation: :mod:`smtplib` does the talking, in a worker thread, over a fresh
connection per message. Whatever the upstream answers becomes our answer: the client gets 250
only once the upstream has said 250 to the message, and an upstream refusal becomes a
:class:`~trio_smtp.engine.Reply` of the same class (4xx stays 4xx, 5xx stays 5xx) with the
upstream's enhanced status code.

Decisions worth knowing:

* **All or nothing, on SMTP.** The client already heard 250 for each RCPT, and a DATA
  transaction has a single reply, so a recipient the upstream refuses cannot be reported
  alone. Rather than relay to the others and silently drop it (we have no queue to send a
  bounce from), the transaction is reset on the upstream and the whole message is refused
  with that recipient's reply; a temporary refusal wins over a permanent one, so the sender
  retries rather than bounces. The text names the recipient.
* **One answer per recipient, on LMTP.** When our own server speaks LMTP, the client gets
  one reply per recipient after the data (RFC 2033 §4.2), so each gets the upstream's
  answer for it: a refusal at RCPT or after the data (from an LMTP upstream) is that
  recipient's reply, and the message goes to the others. :meth:`RelaySink.deliver`
  returns those replies, as a ``done`` hook may.
* **Certificates are verified, always, by default.** Every TLS the relay speaks (STARTTLS,
  whether opportunistic or required, and implicit TLS) checks the upstream's certificate
  against the system's trust store and ``host``. A certificate that does not verify gets
  the client 451 4.7.5 (it retries later; nothing is acknowledged that was not relayed)
  and an ERROR line naming the upstream and the reason. ``verify=False``
  (``--relay-no-verify``) is the opt-out, for upstreams with self-signed certificates.
* **STARTTLS.** ``"opportunistic"`` (the default) uses STARTTLS when the upstream offers it
  and sends in the clear when it does not (RFC 7435: an upstream that offers no TLS
  cannot be told from one whose offer was stripped). Once offered, though, TLS must work:
  a failed handshake or a certificate that does not verify is 451 4.7.5, not a retry in
  the clear, since whoever presents a wrong certificate would read that retry. Only with
  ``verify=False`` does a failed handshake fall back to a new plaintext connection, as
  Postfix's ``may`` level does (``smtp_tls_security_level``: ``"never"`` is ``none``,
  ``"opportunistic"`` with ``verify=False`` is ``may``, ``"require"`` with
  ``verify=False`` is ``encrypt``, ``"require"`` is ``verify``, and the default,
  ``"opportunistic"`` verified, sits between ``may`` and ``verify``). ``"require"``
  refuses to send in the clear (451 4.7.4 when STARTTLS is not offered, 451 4.7.5 when
  the handshake fails). ``"never"`` never asks.
* **Parameters.** ``SIZE``, ``BODY=8BITMIME`` and ``SMTPUTF8`` are passed on when the upstream
  advertises them, and the RFC 3461 DSN parameters (``RET``, ``ENVID``, ``NOTIFY``,
  ``ORCPT``) when it advertises ``DSN``. An SMTPUTF8 message is refused (554 5.6.7) by an
  upstream without SMTPUTF8, as RFC 6531 §3.2 requires, instead of being downgraded. 8-bit
  content goes out unconverted to an upstream without 8BITMIME.
* **The body streams.** It is read from the spool (:meth:`~trio_smtp.Mail.open_file`) in
  the worker thread and sent in pieces, never loaded whole; ``SIZE`` gives the size the
  spool knows (RFC 1870 calls it an estimate).
* **The body never ends DATA early upstream.** A text body (7BIT, 8BITMIME) goes out with
  every lone CR or LF turned into CRLF and every line that starts with a dot stuffed, both
  done here rather than by :mod:`smtplib` (which stuffs only after LF and passes a lone CR
  through), piece by piece (:mod:`trio_smtp.sinks._data_stream`): no upstream, however
  lenient, can read ``<CR>.<CR><LF>`` or ``<LF>.<LF>`` as the end of data and what follows
  as commands (SMTP smuggling). A ``BODY=BINARYMIME`` message goes with ``BDAT`` chunks,
  octet for octet, to an upstream that offers CHUNKING and BINARYMIME (RFC 3030), and is
  refused (554 5.6.3) by any other.
* **Failures to reach the upstream** (refused connection, timeout, a dropped connection) give
  451 4.4.1, so the sender retries later.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from typing import TYPE_CHECKING, Final, Literal

import trio

from .._received import end_of_trace, printable, received_header
from .._spool import READ_SIZE
from ..engine import Reply
from ..verify._header import auth_header, delivery_file
from ._data_stream import DataEncoder

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO

    from .._mail import Mail, Recipient

#: Seconds each network operation with the upstream may take, by default.
DEFAULT_TIMEOUT: Final = 60.0

StartTLSPolicy = Literal["opportunistic", "require", "never"]
_STARTTLS_POLICIES: Final = ("opportunistic", "require", "never")

# The reply codes that mean the same thing when we give them at the end of DATA; any other
# upstream code is mapped to the generic one of its class.
_TRANSIENT_CODES: Final = frozenset({450, 451, 452})
_PERMANENT_CODES: Final = frozenset({550, 551, 552, 553, 554})

# RFC 3463 §2: class.subject.detail at the start of the reply text.
_ENHANCED: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\s*")
# RFC 3461 §4: xtext and the keywords are printable ASCII without spaces or '='.
_SAFE_PARAM_VALUE: Final = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_MAX_REPLY_TEXT: Final = 400

UNAVAILABLE: Final = "4.4.1 upstream unavailable"
NOT_VERIFIED: Final = "4.7.5 upstream certificate does not verify"


def _upstream_reply(code: int, message: bytes | str, what: str) -> Reply:
    """Turn an upstream refusal into our reply, keeping its class and enhanced code."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    text = " ".join(message.split())
    if code // 100 == 4:
        ours = code if code in _TRANSIENT_CODES else 451
    elif code // 100 == 5:
        ours = code if code in _PERMANENT_CODES else 554
    else:
        # An upstream that says something other than an error where it should have said OK
        # is confused; the sender should try again later.
        ours = 451
    enhanced = f"{ours // 100}.0.0"
    m = _ENHANCED.match(text)
    if m is not None:
        text = text[m.end() :]
        if m.group(1) == str(ours // 100):
            enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    detail = printable(text, limit=_MAX_REPLY_TEXT, ascii_only=True)
    return Reply(ours, f"{enhanced} upstream {what}: {detail}" if detail else f"{enhanced} {what}")


def _dsn_params(params: dict[str, str | None], names: tuple[str, ...]) -> list[str]:
    return [
        f"{name}={value}"
        for name in names
        if (value := params.get(name)) is not None and _SAFE_PARAM_VALUE.fullmatch(value)
    ]


class _HandshakeFailed(Exception):
    pass


def _why_not_verified(host: str, exc: ssl.SSLCertVerificationError) -> OSError:
    """The reason the log line gives (an OSError: a failure on our side, logged at ERROR)."""
    detail = exc.verify_message or exc.reason or str(exc)
    return OSError(
        f"certificate verify failed for {host}: {detail} "
        "(verify=False, --relay-no-verify, accepts it)"
    )


class RelaySink:
    """Forward each message to another SMTP server, with our ``Received`` header prepended.

    See the module docstring for how refusals, STARTTLS and parameters are handled.

    Args:
        host: The upstream server, or the path of a Unix socket (with ``lmtp=True``,
            Dovecot's ``/run/dovecot/lmtp``).
        port: Its port (ignored for a Unix socket).
        timeout: Seconds each network operation may take.
        starttls: ``"opportunistic"``, ``"require"`` or ``"never"``.
        ssl_context: The context for TLS; by default :func:`ssl.create_default_context`
            (verifying the upstream's certificate and name), without verification when
            ``verify`` is ``False``. A context given is used as it is.
        local_hostname: The name to give in EHLO; by default the session's ``hostname``
            (no DNS lookup is made).
        implicit_tls: Speak TLS from the first byte (SMTPS, RFC 8314; ``smtps://``).
        lmtp: Speak LMTP (RFC 2033): LHLO, and one reply per recipient after the data;
            the way into Dovecot's ``lmtp`` service.
        auth: ``(login, password)`` to authenticate to the upstream (AUTH PLAIN/LOGIN),
            only over TLS; never shown in a ``repr`` or a log line.
        verify: ``False`` turns certificate verification off (an upstream with a
            self-signed certificate), and lets opportunistic STARTTLS fall back to
            plaintext when the handshake fails.

    Raises:
        ValueError: for an unknown ``starttls`` policy or a negative timeout.

    .. warning:: Cancelling :meth:`deliver` (a hook timeout) abandons the worker thread, which
       may still hand the message to the upstream after the client was told to retry: the
       message can then arrive twice, never zero times.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        starttls: StartTLSPolicy = "opportunistic",
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        implicit_tls: bool = False,
        lmtp: bool = False,
        auth: tuple[str, str] | None = None,
        verify: bool = True,
    ) -> None:
        if starttls not in _STARTTLS_POLICIES:
            raise ValueError(
                f"starttls must be one of {', '.join(_STARTTLS_POLICIES)}, not {starttls!r}"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.starttls: StartTLSPolicy = starttls
        self.local_hostname = local_hostname
        self.implicit_tls = implicit_tls
        self.lmtp = lmtp
        self._auth = auth
        if auth is not None and starttls == "opportunistic" and not implicit_tls:
            # Credentials never travel in the clear: with AUTH, TLS is required.
            self.starttls = starttls = "require"
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            if not verify:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        self.ssl_context = ssl_context
        #: Whether the upstream's certificate is checked (the context's own setting).
        self.verify = ssl_context.verify_mode != ssl.CERT_NONE

    def __repr__(self) -> str:
        kind = "lmtp" if self.lmtp else "smtps" if self.implicit_tls else "smtp"
        login = f", login={self._auth[0]!r}" if self._auth is not None else ""
        return f"RelaySink({self.host!r}, {self.port!r}, {kind}, starttls={self.starttls!r}{login})"

    async def deliver(self, mail: Mail) -> list[Reply] | None:
        """Relay the message; return once the upstream accepted it.

        Args:
            mail: The message.

        Returns:
            ``None`` when every recipient was relayed. On an LMTP server
            (``mail.session.lmtp``), one reply per recipient instead, in order: 250 for
            each one relayed and the upstream's refusal for the others (see the module
            docstring).

        Raises:
            trio_smtp.engine.Reply: the upstream's refusal (same class, its enhanced code), or
                ``451 4.4.1`` when it cannot be reached, or one of the refusals described in
                the module docstring.
        """
        headers = received_header(mail) + auth_header(mail)
        hostname = self.local_hostname or mail.session.hostname
        return await trio.to_thread.run_sync(
            self._relay, mail, headers, hostname, abandon_on_cancel=True
        )

    def _relay(self, mail: Mail, headers: bytes, hostname: str) -> list[Reply] | None:
        try:
            # The body is read from the spool piece by piece as it goes out, never whole.
            with delivery_file(mail) as body:
                first = body.read(READ_SIZE)
                message = _Message(
                    first=headers + end_of_trace(first) + first,
                    rest=body,
                    # RFC 1870 §4: an estimate (forged fields removed, line ends fixed).
                    size=len(headers) + len(end_of_trace(first)) + mail.content_size,
                )
                try:
                    smtp = self._connect(hostname, tls=self.starttls != "never")
                except _HandshakeFailed:
                    smtp = self._connect(hostname, tls=False)
                try:
                    replies = self._transaction(smtp, mail, message)
                    try:
                        smtp.quit()
                    except (smtplib.SMTPException, OSError):
                        pass  # The upstream has the message; how it says goodbye does not matter.
                finally:
                    smtp.close()
                return replies
        except smtplib.SMTPResponseException as exc:
            raise _upstream_reply(exc.smtp_code, exc.smtp_error, "replied") from exc
        except OSError as exc:  # smtplib.SMTPException, ssl.SSLError and socket errors
            raise Reply(451, UNAVAILABLE) from exc

    def _connect(self, hostname: str, *, tls: bool) -> smtplib.SMTP:
        # Connecting in the constructor is what sets the name STARTTLS verifies.
        smtp: smtplib.SMTP
        if self.lmtp:
            smtp = smtplib.LMTP(self.host, self.port, local_hostname=hostname, timeout=self.timeout)
        elif self.implicit_tls:
            try:
                smtp = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=hostname,
                    timeout=self.timeout,
                    context=self.ssl_context,
                )
            except ssl.SSLCertVerificationError as exc:
                raise Reply(451, NOT_VERIFIED) from _why_not_verified(self.host, exc)
        else:
            smtp = smtplib.SMTP(self.host, self.port, local_hostname=hostname, timeout=self.timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if not tls or self.implicit_tls:
                self._login(smtp)
                return smtp
            if not smtp.has_extn("starttls"):
                if self.starttls == "require":
                    raise Reply(451, "4.7.4 upstream does not offer STARTTLS")
                return smtp
            try:
                smtp.starttls(context=self.ssl_context)
            except ssl.SSLCertVerificationError as exc:
                if not self.verify:  # a context given with its own checks
                    raise _HandshakeFailed from exc
                raise Reply(451, NOT_VERIFIED) from _why_not_verified(self.host, exc)
            except (ssl.SSLError, smtplib.SMTPResponseException) as exc:
                if self.starttls == "require" or self.verify:
                    # Offered, then failed: never a retry in the clear while verifying.
                    raise Reply(451, "4.7.5 TLS with the upstream failed") from exc
                raise _HandshakeFailed from exc
            smtp.ehlo()
            self._login(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        if self._auth is None:
            return
        if not (self.implicit_tls or isinstance(smtp.sock, ssl.SSLSocket)):
            raise Reply(451, "4.7.4 no TLS with the upstream: credentials not sent")
        login, password = self._auth
        try:
            smtp.login(login, password)
        except smtplib.SMTPAuthenticationError as exc:
            # Our configuration, not the sender's fault: retry later, and log it.
            raise Reply(451, "4.7.0 upstream refused our credentials") from OSError(
                f"upstream refused the credentials of {login!r} ({exc.smtp_code})"
            )
        except smtplib.SMTPNotSupportedError as exc:
            raise Reply(451, "4.7.0 upstream does not offer AUTH") from exc

    def _transaction(self, smtp: smtplib.SMTP, mail: Mail, data: _Message) -> list[Reply] | None:
        options = []
        binary = mail.body_type == "BINARYMIME"
        if binary:
            # RFC 3030 §3: binary content goes with BDAT all the way, or not at all: DATA
            # cannot carry a lone CR or LF, and converting would break the content.
            if not (smtp.has_extn("chunking") and smtp.has_extn("binarymime")):
                raise Reply(554, "5.6.3 upstream cannot take binary content (no BINARYMIME)")
        if smtp.has_extn("size"):
            options.append(f"SIZE={data.size}")  # RFC 1870: lets the upstream refuse early
        if binary:
            options.append("BODY=BINARYMIME")
        elif mail.body_type != "7BIT" and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152
        if mail.smtputf8:
            if not smtp.has_extn("smtputf8"):
                raise Reply(554, "5.6.7 upstream does not support SMTPUTF8")
            options.append("SMTPUTF8")
        dsn = smtp.has_extn("dsn")
        if dsn:
            options += _dsn_params(mail.mail_params, ("RET", "ENVID"))  # RFC 3461 §4.3, §4.4
        code, message = smtp.mail(mail.mail_from, options)
        if code != 250:
            raise _upstream_reply(code, message, "refused the sender")
        # On our LMTP server each recipient gets its own answer (RFC 2033 §4.2), so the
        # upstream's answers are passed on one by one; on SMTP, all or nothing.
        per_recipient = mail.session.lmtp
        refused: list[tuple[int, int, bytes]] = []
        accepted: list[int] = []
        for i, rcpt in enumerate(mail.recipients):
            rcpt_options = _dsn_params(rcpt.params, ("NOTIFY", "ORCPT")) if dsn else []
            code, message = smtp.rcpt(rcpt.address, rcpt_options)
            if code in (250, 251):
                accepted.append(i)
            else:
                refused.append((i, code, message))
        if refused and not (per_recipient and accepted):
            try:
                smtp.rset()
            except (smtplib.SMTPException, OSError):
                pass  # Closing the connection aborts the transaction just as well.
            if per_recipient:
                return _replies_for(mail, refused)
            # All or nothing (see the module docstring): a temporary refusal wins.
            i, code, message = next((r for r in refused if r[1] // 100 == 4), refused[0])
            what = f"refused <{_shown(mail.recipients[i])}>"
            if len(mail.recipients) > 1:
                what += f" ({len(refused)} of {len(mail.recipients)} refused, none relayed)"
            raise _upstream_reply(code, message, what)
        code, message = _send_bdat(smtp, data) if binary else _send_data(smtp, data)
        answers = [(accepted[0], code, message)]
        if self.lmtp:
            # RFC 2033 §4.2: one reply per accepted recipient, the first one read above.
            answers += [(i, *smtp.getreply()) for i in accepted[1:]]
        else:
            answers += [(i, code, message) for i in accepted[1:]]
        failed = [a for a in answers if a[1] != 250]
        if per_recipient:
            return _replies_for(mail, refused + failed)
        if failed:
            # One reply for all (see "All or nothing"): a temporary failure wins, and
            # those an LMTP upstream delivered may get the message again on retry.
            i, code, message = next((f for f in failed if f[1] // 100 == 4), failed[0])
            what = "refused the message"
            if self.lmtp and len(mail.recipients) > 1:
                what = f"refused <{_shown(mail.recipients[i])}>"
            raise _upstream_reply(code, message, what)
        return None


def _shown(rcpt: Recipient) -> str:
    return printable(rcpt.address, limit=256, ascii_only=True)


def _replies_for(mail: Mail, failures: list[tuple[int, int, bytes]]) -> list[Reply]:
    """One reply per recipient, in order: the upstream's refusals, 250 for the others."""
    replies = [Reply(250, f"2.1.5 <{_shown(rcpt)}> relayed") for rcpt in mail.recipients]
    for i, code, message in failures:
        replies[i] = _upstream_reply(code, message, f"refused <{_shown(mail.recipients[i])}>")
    return replies


class _Message:
    """What goes upstream: our headers and the first piece, then the rest of the body file."""

    def __init__(self, *, first: bytes, rest: BinaryIO, size: int) -> None:
        self.first = first
        self.rest = rest
        self.size = size

    def pieces(self, size: int) -> Iterator[bytes]:
        """The whole message in order, in pieces of about ``size`` bytes (never empty)."""
        if self.first:
            yield self.first
        while piece := self.rest.read(size):
            yield piece


def _send_data(smtp: smtplib.SMTP, data: _Message) -> tuple[int, bytes]:
    """DATA, with line ends fixed and dots stuffed here (RFC 5321 §4.5.2).

    smtplib stuffs only dots after an LF and passes a lone CR through; doing it here, on
    CRLF lines (:class:`~trio_smtp.sinks._data_stream.DataEncoder`), keeps every byte that
    goes out under our control, and streams the body in pieces.
    """
    code, message = smtp.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, message)
    encoder = DataEncoder()
    for piece in data.pieces(READ_SIZE):
        if out := encoder.feed(piece):
            smtp.send(out)
    smtp.send(encoder.end())
    return smtp.getreply()


#: Chunks of a BINARYMIME body sent with BDAT.
BDAT_CHUNK: Final = 1024 * 1024


def _send_bdat(smtp: smtplib.SMTP, data: _Message) -> tuple[int, bytes]:
    """The body as BDAT chunks (RFC 3030 §2): exact octets, no stuffing, no line rules.

    One chunk is read ahead, so that the last one goes as ``BDAT n LAST``.
    """
    pieces = data.pieces(BDAT_CHUNK)
    chunk = next(pieces, b"")
    while True:
        following = next(pieces, None)
        last = following is None
        smtp.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
        code, message = smtp.getreply()
        if last or code != 250:
            return code, message
        assert following is not None
        chunk = following

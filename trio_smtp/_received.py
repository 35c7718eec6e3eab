"""The trace headers a receiving server adds: ``Received`` and ``Return-Path``.

Theory of operation: most of what goes into these headers came from the client (the HELO
name, the envelope addresses), so every value passes through :func:`printable` before it is
written. That function replaces control characters, CR and LF included, so no client can end
the header early and inject lines of its own, and it caps the length so that every header line
stays under the 998-octet limit of RFC 5322 §2.1.1 without having to fold inside a value. The
``Received`` header puts each clause on its own line (folded with CRLF TAB, as Postfix does),
so only a single clause ever has to fit on a line.

A message whose first line begins with whitespace (SP or HTAB) would, once our headers are
put in front of it, read as a continuation of our last header (RFC 5322 §2.2.3 unfolding):
attacker text inside our ``Received`` trace. :func:`end_of_trace` gives the bytes to put
between our headers and such a message: an empty line, which ends the header section right
after our own headers, so the message's lines all become body text and none of them can join
a header we wrote. Such a message has no valid header section anyway (a header section cannot
begin with a continuation line, RFC 5322 §2.2); its bytes are kept, none is altered.

What is deliberately left out: the login of an authenticated client. The RFC 3848 protocol
keyword (``ESMTPA``, ``ESMTPSA`` …) already records that the client authenticated, while the
login itself would travel with the message to every recipient. That is Postfix's default
(``smtpd_sasl_authenticated_header = no``). A hook that wants it can add its own header.
"""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._mail import Mail

#: RFC 5321 §4.5.3.1.2: the longest domain name.
MAX_DOMAIN: Final = 255
#: RFC 5321 §4.5.3.1.3: the longest reverse-path or forward-path.
MAX_PATH: Final = 256
#: Caps for values we generate ourselves (queue id, TLS names), kept short but not trusted.
_MAX_TOKEN: Final = 64

# RFC 5322 §3.2.2: folding whitespace; one clause per line keeps every line short.
_FOLD: Final = "\r\n\t"

# Characters that would change how the header's clauses parse if they appeared in a token:
# whitespace separates clauses, parentheses open and close comments, ';' starts the date
# (RFC 5321 §4.4 Stamp), backslash and quote are RFC 5322 quoting.
_TOKEN_BREAKERS: Final = frozenset(' \t();\\"')


def printable(text: str, *, limit: int, ascii_only: bool = False, token: bool = False) -> str:
    """Make client-supplied text safe to put in a header or a log line.

    Args:
        text: The text to clean.
        limit: The most characters to keep; anything after is dropped.
        ascii_only: Also replace non-ASCII characters (outside SMTPUTF8 messages, headers
            must be ASCII: RFC 5322 §2.2).
        token: Also replace whitespace and the characters that delimit comments and the date
            in a ``Received`` header, for values written outside a comment.

    Returns:
        The text with every unsafe character replaced by ``?``.
    """
    out = []
    for ch in text[:limit]:
        if (
            not ch.isprintable()
            or (ascii_only and not ch.isascii())
            or (token and ch in _TOKEN_BREAKERS)
        ):
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def address_literal(host: str) -> str:
    """The RFC 5321 §4.1.3 address literal for an IP address (``[192.0.2.1]``, ``[IPv6:…]``).

    Args:
        host: The peer's address as the socket reported it.

    Returns:
        The address literal, or a cleaned token if ``host`` is not an IP address (a Unix
        socket, or a test double).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return printable(host, limit=MAX_DOMAIN, ascii_only=True, token=True) or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"


def _protocol(mail: Mail) -> str:
    protocol = mail.session.protocol
    # RFC 6531 §3.7.3: a message sent with SMTPUTF8 gets the UTF8SMTP / UTF8LMTP keywords
    # (with the same S and A suffixes as RFC 3848).
    if mail.smtputf8:
        if protocol.startswith("ESMTP"):
            return "UTF8SMTP" + protocol[len("ESMTP") :]
        if protocol.startswith("LMTP"):
            return "UTF8" + protocol
    return protocol


def received_header(mail: Mail, *, for_recipient: str | None = None) -> bytes:
    """Build the RFC 5321 §4.4 ``Received`` trace header for a message we accept.

    The result looks like::

        Received: from client.example ([192.0.2.7])
        \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))
        \tby mx.example.org with ESMTPS id 1a2b3c
        \tfor <bob@example.org>; Tue, 28 Nov 2026 14:39:08 +0000

    No DNS lookup is made: the client is named by its HELO name, the name a trusted proxy
    gave (XCLIENT ``NAME``; Postfix's ``from helo (name [addr])``) and its address literal. The
    ``for`` clause names one recipient only (RFC 5321 §4.4 warns that listing several discloses
    Bcc recipients): ``for_recipient`` when given, else the only recipient of a
    single-recipient message, else none. The login of an authenticated client is never
    written (see the module docstring).

    Args:
        mail: The message; its session gives the names, the address, TLS and the protocol.
        for_recipient: The recipient to name in the ``for`` clause.

    Returns:
        The header, folded one clause per line, CRLF-terminated; ASCII unless the message
        uses SMTPUTF8, in which case UTF-8.
    """
    session = mail.session
    ascii_only = not mail.smtputf8
    peer = address_literal(session.peer[0])
    helo = printable(session.helo_name or "", limit=MAX_DOMAIN, ascii_only=ascii_only, token=True)
    # RFC 5321 §4.4 Extended-Domain: a domain (or address literal) followed by the
    # TCP-info, "address-literal / ( Domain FWS address-literal )": the client's name
    # when a trusted proxy gave it (XCLIENT NAME), as Postfix writes "(name [addr])".
    name = printable(session.client_name or "", limit=MAX_DOMAIN, ascii_only=True, token=True)
    tcp_info = f"{name} {peer}" if name else peer
    lines = [f"Received: from {helo or name or peer} ({tcp_info})"]
    if session.tls is not None:
        tls = [f"using {printable(session.tls.version or 'TLS', limit=_MAX_TOKEN, token=True)}"]
        if session.tls.cipher:
            tls.append(f"with cipher {printable(session.tls.cipher, limit=_MAX_TOKEN, token=True)}")
        if session.tls.bits:
            tls.append(f"({int(session.tls.bits)} bits)")
        lines.append(f"({' '.join(tls)})")
    hostname = printable(session.hostname, limit=MAX_DOMAIN, ascii_only=True, token=True)
    queue_id = printable(mail.id, limit=_MAX_TOKEN, ascii_only=True, token=True)
    by = f"by {hostname} with {_protocol(mail)} id {queue_id}"
    if for_recipient is None and len(mail.recipients) == 1:
        for_recipient = mail.recipients[0].address
    # An address too long to be a valid path is left out rather than written truncated.
    if for_recipient is not None and len(for_recipient) <= MAX_PATH:
        rcpt = printable(for_recipient, limit=MAX_PATH, ascii_only=ascii_only)
        lines.append(by)
        by = f"for <{rcpt}>"
    now = datetime.datetime.now(datetime.UTC)
    lines.append(f"{by}; {email.utils.format_datetime(now)}")
    return (_FOLD.join(lines) + "\r\n").encode("utf-8")


#: RFC 5234 WSP: a line that starts with one of these continues the header before it.
_WSP: Final = (b" ", b"\t")


def end_of_trace(content: bytes) -> bytes:
    """What goes between the trace headers we add and ``content``.

    Args:
        content: The message as the client sent it.

    Returns:
        ``b"\r\n"`` (an empty line: our headers end there and the whole message becomes
        body) when ``content`` begins with whitespace, which would otherwise continue our
        last header; else ``b""``.
    """
    return b"\r\n" if content[:1] in _WSP else b""


def return_path_header(mail: Mail) -> bytes:
    """Build the ``Return-Path`` header a final delivery adds (RFC 5321 §4.4).

    Args:
        mail: The message; its reverse-path (``""`` for the null path) is written.

    Returns:
        ``Return-Path: <sender>`` CRLF-terminated.
    """
    sender = printable(mail.mail_from, limit=MAX_PATH, ascii_only=not mail.smtputf8)
    return f"Return-Path: <{sender}>\r\n".encode()

"""The events the engine produces from a client's bytes.

Each command event *needs a reply*: the caller answers it with
:meth:`Engine.respond` (no argument for the engine's default reply, or a
:class:`Reply`) before asking for the next event. The other events only inform.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar, Final

import attrs

from ._replies import Reply


@attrs.frozen(kw_only=True)
class Event:
    """Base class of every engine event."""

    #: Whether the caller must answer this event with :meth:`Engine.respond`.
    needs_reply: ClassVar[bool] = False


@attrs.frozen(kw_only=True)
class Command(Event):
    """A well-formed command in the right sequence; the caller must answer it.

    Attributes:
        verb: The command verb, upper-cased (``"MAIL"``, ``"EHLO"`` …).
        argument: Everything after the verb, stripped.
        default_reply: What :meth:`Engine.respond` sends when given no reply.
    """

    needs_reply: ClassVar[bool] = True
    verb: str
    argument: str = ""
    default_reply: Reply


@attrs.frozen(kw_only=True)
class Helo(Command):
    """HELO, EHLO or LHLO.

    Attributes:
        name: The client's self-given name.
        extended: True for EHLO and LHLO.
    """

    name: str
    extended: bool


@attrs.frozen(kw_only=True)
class MailFrom(Command):
    """MAIL FROM.

    Attributes:
        address: The reverse-path without brackets; ``""`` is the null path.
        params: ESMTP parameters, keys upper-cased, ``None`` for a bare keyword.
        size: The declared ``SIZE``, if any.
        body: ``"7BIT"``, ``"8BITMIME"`` or ``"BINARYMIME"``.
        smtputf8: Whether ``SMTPUTF8`` was given.
        ret: DSN ``RET`` (``"FULL"`` / ``"HDRS"``) or ``None``.
        envid: DSN ``ENVID``, xtext-decoded, or ``None``.
        auth: The ``AUTH=`` mailbox, xtext-decoded (``"<>"`` kept as is), or ``None``.
    """

    address: str
    params: dict[str, str | None]
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@attrs.frozen(kw_only=True)
class RcptTo(Command):
    """RCPT TO.

    Attributes:
        address: The forward-path without brackets.
        params: ESMTP parameters, keys upper-cased.
        notify: DSN ``NOTIFY`` keywords, or ``None``.
        orcpt: DSN ``ORCPT`` as ``(addr-type, decoded address)``, or ``None``.
    """

    address: str
    params: dict[str, str | None]
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None


@attrs.frozen(kw_only=True)
class Data(Command):
    """DATA: the caller answers 354 (the default) to receive the body, or refuses."""


@attrs.frozen(kw_only=True)
class Bdat(Command):
    """A BDAT chunk that has been fully received (RFC 3030).

    For a chunk that is not the last, the default reply is ``250 … octets received``.
    For the last one (``last=True``) a positive answer is not sent: the engine emits
    :class:`EndOfMessage` right after, whose reply is the one the client gets (RFC 3030
    §2: one reply per BDAT command). A negative answer is sent and fails the transaction.

    Attributes:
        size: The chunk's declared size.
        last: Whether the client marked it ``LAST``.
    """

    size: int
    last: bool


@attrs.frozen(kw_only=True)
class Rset(Command):
    """RSET."""


@attrs.frozen(kw_only=True)
class Noop(Command):
    """NOOP."""


@attrs.frozen(kw_only=True)
class Quit(Command):
    """QUIT: after the reply the engine emits :class:`ConnectionClosed`."""


@attrs.frozen(kw_only=True)
class Vrfy(Command):
    """VRFY with its argument."""


@attrs.frozen(kw_only=True)
class Expn(Command):
    """EXPN with its argument."""


@attrs.frozen(kw_only=True)
class Help(Command):
    """HELP with its optional argument."""


@attrs.frozen(kw_only=True)
class StartTLS(Command):
    """STARTTLS. After a positive reply, :meth:`Engine.next_event` gives
    :class:`TLSUpgrade` (or :class:`ConnectionClosed` if the client sent more bytes in
    the same flight)."""


@attrs.frozen(kw_only=True)
class AuthCredentials(Command):
    """A finished SASL exchange (AUTH PLAIN or LOGIN) whose credentials need checking.

    The default reply refuses (535 5.7.8); answer with a 235 reply to accept.

    Attributes:
        mechanism: ``"PLAIN"`` or ``"LOGIN"``.
        login: The authentication identity.
        password: The password; never shown in a ``repr``.
        authzid: The authorization identity (PLAIN only), or ``""``.
    """

    mechanism: str
    login: str
    password: str = attrs.field(repr=False)
    authzid: str = ""


@attrs.frozen(kw_only=True)
class Xclient(Command):
    """XCLIENT (Postfix's extension): a trusted proxy says who the real client is.

    Only sent by clients the caller allowed (``Engine.allow_xclient``). The default reply
    is a new 220 greeting: on a positive answer the session starts over (the client
    must send EHLO again) as if the client had just connected, with ``login`` (when
    given) as the authenticated user. The caller applies the other attributes to what
    its hooks, limits, logs and Received header see; a negative answer changes nothing.

    Attributes:
        attributes: Every attribute given, names upper-cased, values xtext-decoded;
            ``[UNAVAILABLE]`` and ``[TEMPUNAVAIL]`` kept as these upper-case markers.
        name: The client's hostname (``NAME``), ``None`` if not given or unavailable.
        addr: The client's address (``ADDR``; IPv6 without the ``IPV6:`` prefix).
        port: The client's port (``PORT``).
        proto: ``"SMTP"`` or ``"ESMTP"`` (``PROTO``).
        helo: The client's HELO/EHLO name (``HELO``).
        login: The SASL login (``LOGIN``).
        destaddr: The server address the client connected to (``DESTADDR``).
        destport: The server port the client connected to (``DESTPORT``).
    """

    attributes: dict[str, str]
    name: str | None = None
    addr: str | None = None
    port: int | None = None
    proto: str | None = None
    helo: str | None = None
    login: str | None = None
    destaddr: str | None = None
    destport: int | None = None


@attrs.frozen(kw_only=True)
class MessageData(Event):
    """A piece of message content, dot-unstuffed, as it arrives.

    Attributes:
        data: The bytes; join the pieces of one message to get its content.
    """

    data: bytes


@attrs.frozen(kw_only=True)
class EndOfMessage(Event):
    """The message is complete (final dot, or after ``BDAT … LAST``).

    The caller must answer: one :class:`Reply` (default ``250 2.0.0 OK``), or on an
    LMTP server one reply per accepted recipient (RFC 2033 §4.2).

    Attributes:
        size: The content's size in octets.
        recipients: How many recipients the transaction has (the number of LMTP replies).
    """

    needs_reply: ClassVar[bool] = True
    size: int
    recipients: int
    default_reply: Reply


@attrs.frozen(kw_only=True)
class MessageRejected(Event):
    """The engine refused the message it was receiving, and has sent ``reply``.

    Emitted for a message over the size limit, a text line over the line limit, or a
    bare LF or CR under the ``reject`` policy, once the whole body has been read.
    """

    reply: Reply


@attrs.frozen(kw_only=True)
class CommandRejected(Event):
    """The engine answered a command itself with an error reply (for logging)."""

    line: str
    reply: Reply


@attrs.frozen(kw_only=True)
class ProxyHeader(Event):
    """A PROXY protocol header (v1 or v2) read before the greeting.

    Attributes:
        version: 1 or 2.
        local: True for v2 ``LOCAL`` and v1 ``UNKNOWN``: use the socket's own addresses.
        source: The client's ``(host, port)``, or ``None`` when ``local``.
        destination: The proxy's ``(host, port)`` seen by the client, or ``None``.
        tlvs: v2 TLV fields by type.
    """

    version: int
    local: bool
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: dict[int, bytes] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TLSUpgrade(Event):
    """Start the TLS handshake now, then call :meth:`Engine.tls_started`."""


@attrs.frozen(kw_only=True)
class ConnectionClosed(Event):
    """The session is over: send :meth:`Engine.data_to_send` and close the connection.

    Attributes:
        reason: ``"quit"``, ``"eof"``, ``"closed"`` (a 421 was sent),
            ``"starttls-injection"``, ``"proxy-error"``, ``"auth-failures"``, or the
            reason the caller gave :meth:`Engine.close` or :meth:`Engine.respond`.
    """

    reason: str


class Sentinel(Enum):
    """What :meth:`Engine.next_event` returns when it has no event (members, so ``is`` narrows)."""

    #: Needs more bytes: flush :meth:`Engine.data_to_send` and read.
    NEED_DATA = "NEED_DATA"
    #: Nothing until the caller acts (TLS handshake, greeting).
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


#: :meth:`Engine.next_event` needs more bytes: flush :meth:`Engine.data_to_send` and read.
NEED_DATA: Final = Sentinel.NEED_DATA
#: :meth:`Engine.next_event` has nothing until the caller acts (TLS handshake, greeting).
PAUSED: Final = Sentinel.PAUSED


EventOrSentinel = Event | Sentinel

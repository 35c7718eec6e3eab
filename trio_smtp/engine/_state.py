"""Every sequencing rule of the engine, as tables.

Two things move: the connection :class:`State` (what kind of input is expected
next) and, while reading commands, the session :class:`Phase` (how far the client
has got: greeted, in a mail transaction …). ``SEQUENCE`` says in which phases each
command is allowed and what it gets elsewhere; ``AFTER`` says which phase a command
leads to once it is answered positively. A command in a phase missing from its row
gets the row's error reply (RFC 5321 §4.1.4, §4.3.2: 503 5.5.1).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Final, Protocol

from ._events import AuthCredentials, Bdat, Command, Helo, MailFrom, RcptTo, Rset, Xclient
from ._replies import BDAT_FAILED, Reply


class State(Enum):
    """What input the engine expects next."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's own __hash__ is a Python function, called for every set or dict lookup).
    __hash__ = object.__hash__

    #: Waiting for a PROXY protocol header, before the greeting.
    PROXY = "proxy"
    #: Waiting for the caller to greet (or reject) the client.
    CONNECTED = "connected"
    #: Reading command lines.
    COMMAND = "command"
    #: Reading a SASL response line (inside AUTH).
    AUTH = "auth"
    #: Reading a DATA body.
    DATA = "data"
    #: Reading the octets of a BDAT chunk.
    BDAT = "bdat"
    #: STARTTLS was accepted; the caller must run the handshake.
    STARTTLS = "starttls"
    #: The session is over.
    CLOSED = "closed"


class Phase(Enum):
    """How far the SMTP session has got (RFC 5321 §4.1.4)."""

    # Looked up in a set for every command (SEQUENCE, TRANSACTION_PHASES): see State.
    __hash__ = object.__hash__

    #: Greeted, no HELO/EHLO yet.
    INITIAL = "initial"
    #: HELO/EHLO done, no transaction.
    READY = "ready"
    #: MAIL accepted.
    MAIL = "mail"
    #: At least one RCPT accepted.
    RCPT = "rcpt"
    #: At least one BDAT chunk accepted (RFC 3030).
    CHUNKING = "chunking"


_ALL: Final = frozenset(Phase)
# Read once per message (reset_transaction): on Python 3.11 ``Phase.X`` goes through
# ``EnumType.__getattr__``, 15 times a module constant's cost.
_INITIAL: Final = Phase.INITIAL
_READY: Final = Phase.READY
_NO_TRANSACTION: Final = frozenset({Phase.INITIAL, Phase.READY})
#: The phases of a mail transaction in progress.
TRANSACTION_PHASES: Final = frozenset({Phase.MAIL, Phase.RCPT, Phase.CHUNKING})


def _seq(text: str) -> Reply:
    return Reply(503, f"5.5.1 {text}")


#: verb -> (phases where it is allowed, {phase: reply elsewhere}, default reply elsewhere)
SEQUENCE: Final[dict[str, tuple[frozenset[Phase], dict[Phase, Reply], Reply | None]]] = {
    "HELO": (_ALL, {}, None),
    "EHLO": (_ALL, {}, None),
    "LHLO": (_ALL, {}, None),
    "MAIL": (
        frozenset({Phase.READY}),
        {Phase.INITIAL: _seq("send HELO or EHLO first")},
        _seq("nested MAIL command"),
    ),
    "RCPT": (
        frozenset({Phase.MAIL, Phase.RCPT}),
        {Phase.CHUNKING: _seq("RCPT is not allowed after BDAT")},
        _seq("need MAIL before RCPT"),
    ),
    "DATA": (
        frozenset({Phase.RCPT}),
        {
            Phase.MAIL: _seq("need RCPT before DATA (no valid recipients)"),
            Phase.CHUNKING: _seq("DATA is not allowed after BDAT"),
        },
        _seq("need MAIL before DATA"),
    ),
    "BDAT": (
        frozenset({Phase.RCPT, Phase.CHUNKING}),
        {Phase.MAIL: _seq("need RCPT before BDAT (no valid recipients)")},
        _seq("need MAIL before BDAT"),
    ),
    "RSET": (_ALL, {}, None),
    "NOOP": (_ALL, {}, None),
    "QUIT": (_ALL, {}, None),
    "VRFY": (_ALL, {}, None),
    "EXPN": (_ALL, {}, None),
    "HELP": (_ALL, {}, None),
    # RFC 3207 §4: not inside a mail transaction.
    "STARTTLS": (_NO_TRANSACTION, {}, _seq("STARTTLS is not allowed in a mail transaction")),
    # Postfix XCLIENT_README: "at any time, except in the middle of a mail transaction".
    "XCLIENT": (_NO_TRANSACTION, {}, _seq("XCLIENT is not allowed in a mail transaction")),
    # RFC 4954 §4: after EHLO, not during a mail transaction.
    "AUTH": (
        frozenset({Phase.READY}),
        {Phase.INITIAL: _seq("send EHLO first")},
        _seq("AUTH is not allowed in a mail transaction"),
    ),
}

#: The phase a positively answered command leads to; absent verbs keep the phase.
AFTER: Final[dict[str, Phase]] = {
    "HELO": Phase.READY,
    "EHLO": Phase.READY,
    "LHLO": Phase.READY,
    "MAIL": Phase.MAIL,
    "RCPT": Phase.RCPT,
    "BDAT": Phase.CHUNKING,
}

#: Old or optional commands we know and do not implement (RFC 5321 §4.2.4: 502).
NOT_IMPLEMENTED: Final = frozenset(
    {"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB", "ONEX", "XFORWARD"}
)

#: Verbs that mean an HTTP client reached the SMTP port (cross-protocol attacks).
HTTP_VERBS: Final = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT"})


def check_sequence(verb: str, phase: Phase) -> Reply | None:
    """The error reply for ``verb`` in ``phase``, or ``None`` if it is allowed there."""
    allowed, errors, otherwise = SEQUENCE[verb]
    if phase in allowed:
        return None
    return errors.get(phase, otherwise)


class SessionView(Protocol):
    """What command parsers may read of the session (``_commands.py``): facts, no
    transitions, so that only the engine moves the session on."""

    @property
    def phase(self) -> Phase: ...
    @property
    def tls_active(self) -> bool: ...
    @property
    def authenticated_as(self) -> str | None: ...
    @property
    def recipients(self) -> int: ...
    @property
    def smtputf8(self) -> bool: ...
    @property
    def body(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def bdat_failed(self) -> Reply | None: ...
    @property
    def xclient_allowed(self) -> bool: ...


class SessionState:
    """The facts of one session, owned by its :class:`~trio_smtp.engine.Engine`.

    Read it through :attr:`Engine.session <trio_smtp.engine.Engine.session>`: every
    attribute is a read-only property. The engine alone calls the transitions:
    :meth:`answered` applies the caller's reply to a command (what a positive reply
    means for each command is written there and nowhere else), the others follow
    STARTTLS, the end of a message and the end of the session. A caller never keeps a
    copy that could drift from what the engine decided.
    """

    __slots__ = (
        "_auth_mechanism",
        "_authenticated_as",
        "_bdat_failed",
        "_body",
        "_close_reason",
        "_esmtp",
        "_helo_name",
        "_phase",
        "_recipients",
        "_size",
        "_smtputf8",
        "_tls_active",
        "_xclient_allowed",
        "_xclient_helo",
        "_xclient_proto",
    )

    def __init__(self, *, tls_active: bool = False) -> None:
        self._phase = Phase.INITIAL
        self._helo_name: str | None = None
        self._esmtp = False
        self._tls_active = tls_active
        self._authenticated_as: str | None = None
        self._auth_mechanism: str | None = None
        self._close_reason: str | None = None
        self._recipients = 0
        self._smtputf8 = False
        self._body = "7BIT"
        self._size = 0
        self._bdat_failed: Reply | None = None
        self._xclient_allowed = False
        # What XCLIENT's HELO= and PROTO= said, which a later HELO/EHLO from the proxy
        # itself does not replace: ``(value,)`` once given, ``[UNAVAILABLE]`` as ``(None,)``.
        self._xclient_helo: tuple[str | None] | None = None
        self._xclient_proto: str | None = None

    def __repr__(self) -> str:
        return (
            f"<SessionState phase={self._phase.value} helo={self._helo_name!r}"
            f" tls={self._tls_active} auth={self._authenticated_as!r}>"
        )

    # ------------------------------------------------------------------ the session

    @property
    def phase(self) -> Phase:
        """How far the session has got."""
        return self._phase

    @property
    def helo_name(self) -> str | None:
        """The HELO/EHLO/LHLO name once accepted (``None`` before, and after STARTTLS).

        After XCLIENT ``HELO=``, the name it gave (``None`` for ``[UNAVAILABLE]``), as if
        the client had said it: the proxy's own HELO/EHLO that follows does not replace it.
        """
        if self._xclient_helo is not None:
            return self._xclient_helo[0]
        return self._helo_name

    @property
    def esmtp(self) -> bool:
        """Whether the accepted greeting was EHLO or LHLO (XCLIENT ``PROTO=`` overrides)."""
        if self._xclient_proto is not None:
            return self._xclient_proto == "ESMTP"
        return self._esmtp

    @property
    def tls_active(self) -> bool:
        """Whether the connection is encrypted (implicit TLS or after STARTTLS)."""
        return self._tls_active

    @property
    def authenticated_as(self) -> str | None:
        """The login of a successful AUTH, or ``None``."""
        return self._authenticated_as

    @property
    def auth_mechanism(self) -> str | None:
        """The SASL mechanism of that AUTH (``"PLAIN"``, ``"LOGIN"``), or ``None``."""
        return self._auth_mechanism

    @property
    def close_reason(self) -> str | None:
        """Why the session ended (``"quit"``, ``"eof"``, ``"closed"`` …), ``None`` while open."""
        return self._close_reason

    @property
    def xclient_allowed(self) -> bool:
        """Whether this client may send XCLIENT (the caller's policy, e.g. --xclient-from)."""
        return self._xclient_allowed

    # ------------------------------------------------------------------ the transaction

    @property
    def recipients(self) -> int:
        """Recipients accepted in the current transaction."""
        return self._recipients

    @property
    def smtputf8(self) -> bool:
        """Whether the accepted MAIL carried SMTPUTF8 (RFC 6531)."""
        return self._smtputf8

    @property
    def body(self) -> str:
        """The accepted MAIL's BODY type: ``7BIT``, ``8BITMIME`` or ``BINARYMIME``."""
        return self._body

    @property
    def size(self) -> int:
        """Octets of message content received so far in this transaction (BDAT)."""
        return self._size

    @property
    def bdat_failed(self) -> Reply | None:
        """The reply later chunks get once a BDAT chunk was refused (until RSET)."""
        return self._bdat_failed

    # ------------------------------------------------------------------ the engine's side

    def answered(self, event: Command, reply: Reply) -> None:
        """Apply the caller's ``reply`` to the command ``event`` (RFC 5321 §4.1.4).

        What a reply means for each command is the :data:`TRANSITIONS` table below;
        commands missing from it (NOOP, VRFY, DATA …) leave the session as it is.
        """
        transition = TRANSITIONS.get(type(event))
        if transition is not None:
            transition(self, event, reply.code)

    def _on_hello(self, event: Command, code: int) -> None:
        assert isinstance(event, Helo)
        if code < 400:
            self._helo_name = event.name
            self._esmtp = event.extended
            self._phase = AFTER[event.verb]
            self.reset_transaction()

    def _on_mail(self, event: Command, code: int) -> None:
        assert isinstance(event, MailFrom)
        if code < 400:
            self._phase = AFTER["MAIL"]
            self._smtputf8 = event.smtputf8
            self._body = event.body

    def _on_rcpt(self, event: Command, code: int) -> None:
        if code < 400:
            self._phase = AFTER["RCPT"]
            self._recipients += 1

    def _on_bdat(self, event: Command, code: int) -> None:
        if code < 400:
            self._phase = AFTER["BDAT"]
        else:
            # RFC 3030 §2: a refused chunk ends the transaction.
            self.reset_transaction()

    def _on_rset(self, event: Command, code: int) -> None:
        self.reset_transaction()

    def _on_auth(self, event: Command, code: int) -> None:
        assert isinstance(event, AuthCredentials)
        if code == 235:  # RFC 4954 §6
            self._authenticated_as = event.login
            self._auth_mechanism = event.mechanism

    def _on_xclient(self, event: Command, code: int) -> None:
        assert isinstance(event, Xclient)
        if code < 400:
            # XCLIENT_README: the server "resets state to the initial SMTP greeting
            # protocol stage"; the client must send EHLO again.
            self._phase = Phase.INITIAL
            self._helo_name = None
            self._esmtp = False
            # XCLIENT_README: HELO is the client's HELO/EHLO name, PROTO whether it said
            # HELO (SMTP) or EHLO (ESMTP); an attribute not given keeps the earlier value.
            if "HELO" in event.attributes:
                self._xclient_helo = (event.helo,)
            if event.proto in ("SMTP", "ESMTP"):
                self._xclient_proto = event.proto
            elif "PROTO" in event.attributes:
                self._xclient_proto = None
            if "LOGIN" in event.attributes:
                # The proxy's word: who logged in, not how (no SASL mechanism here).
                self._authenticated_as = event.login
                self._auth_mechanism = None
            self.reset_transaction()

    def reset_transaction(self) -> None:
        """RSET, the end of a message, or a failed transaction: back to READY."""
        if self._phase is not _INITIAL:
            self._phase = _READY
        self._recipients = 0
        self._smtputf8 = False
        self._body = "7BIT"
        self._size = 0
        self._bdat_failed = None

    def received(self, octets: int) -> None:
        """Count content octets of a BDAT message."""
        self._size += octets

    def chunk_refused(self, *, too_big: bool) -> None:
        """A BDAT chunk was refused inside a transaction: later chunks get 503."""
        self._bdat_failed = BDAT_FAILED
        if too_big:
            self._size = 0

    def tls_started(self) -> None:
        """RFC 3207 §4.2: after STARTTLS the server forgets what the client said before."""
        self._tls_active = True
        self._phase = Phase.INITIAL
        self._helo_name = None
        self._esmtp = False
        self._xclient_helo = None
        self._xclient_proto = None
        self._authenticated_as = None
        self._auth_mechanism = None
        self.reset_transaction()

    def allow_xclient(self, allowed: bool) -> None:
        """Let this client send XCLIENT, or not (the caller's policy)."""
        self._xclient_allowed = allowed

    def set_tls_active(self, active: bool) -> None:
        """Mark the connection encrypted before the greeting (implicit TLS)."""
        self._tls_active = active

    def closed(self, reason: str) -> None:
        """The session is over, for ``reason`` (the first reason given wins)."""
        if self._close_reason is None:
            self._close_reason = reason


#: command event type -> the transition a reply to it makes (``SessionState.answered``).
TRANSITIONS: Final[dict[type[Command], Callable[[SessionState, Command, int], None]]] = {
    Helo: SessionState._on_hello,
    MailFrom: SessionState._on_mail,
    RcptTo: SessionState._on_rcpt,
    Bdat: SessionState._on_bdat,
    Rset: SessionState._on_rset,
    AuthCredentials: SessionState._on_auth,
    Xclient: SessionState._on_xclient,
}

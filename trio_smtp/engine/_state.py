"""Every sequencing rule of the engine, as tables.

Two things move: the connection :class:`State` (what kind of input is expected
next) and, while reading commands, the session :class:`Phase` (how far the client
has got: greeted, in a mail transaction …). ``SEQUENCE`` says in which phases each
command is allowed and what it gets elsewhere; ``AFTER`` says which phase a command
leads to once it is answered positively. A command in a phase missing from its row
gets the row's error reply (RFC 5321 §4.1.4, §4.3.2: 503 5.5.1).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from ._replies import Reply


class State(Enum):
    """What input the engine expects next."""

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
_NO_TRANSACTION: Final = frozenset({Phase.INITIAL, Phase.READY})


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
    {"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB", "ONEX", "XCLIENT", "XFORWARD"}
)

#: Verbs that mean an HTTP client reached the SMTP port (cross-protocol attacks).
HTTP_VERBS: Final = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT"})


def check_sequence(verb: str, phase: Phase) -> Reply | None:
    """The error reply for ``verb`` in ``phase``, or ``None`` if it is allowed there."""
    allowed, errors, otherwise = SEQUENCE[verb]
    if phase in allowed:
        return None
    return errors.get(phase, otherwise)

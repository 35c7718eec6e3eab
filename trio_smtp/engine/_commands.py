"""The command parsers and their dispatch table, as h11's ``_readers.py``.

Theory of operation: :func:`read_command` turns one command line into an outcome: the
:class:`Command` event to emit, a :class:`Refused` line, a :class:`ChunkStarted` BDAT or
a :class:`SaslStarted` AUTH. :data:`READERS` maps a verb to its parser; a parser gets the
engine's configuration, a read-only :class:`~._state.SessionView` of the session and the
command's verb and argument, and raises :class:`RemoteProtocolError` with the reply for
anything wrong. Nothing here changes state: the engine acts on the outcome and applies
the caller's answer (``SessionState.answered``), so a command refused by a hook leaves
no trace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import attrs

from ._auth import SaslExchange
from ._config import EngineConfig
from ._errors import RemoteProtocolError
from ._events import (
    Bdat,
    Command,
    Data,
    Expn,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTLS,
    Vrfy,
)
from ._grammar import (
    ascii_upper,
    check_domain,
    parse_params,
    parse_path,
    simple_path,
)
from ._greeting import closing_reply, greeting_reply, hello_reply
from ._params import MailParams, mail_params, rcpt_params
from ._receivebuffer import LINE_TOO_LONG
from ._replies import (
    BDAT_UNTRUSTED,
    CANNOT_VRFY,
    CONTROL_CHARACTERS,
    EMPTY_COMMAND,
    HTTP,
    MSG_TOO_BIG,
    NEED_AUTH,
    NEED_TLS,
    NO_EXPN,
    NOT_IMPLEMENTED,
    NOT_RECOGNIZED,
    NOT_UTF8,
    OK,
    READY_TLS,
    RECIPIENT_OK,
    SENDER_OK,
    START_DATA,
    TOO_MANY_RCPTS,
    XCLIENT_DENIED,
    Reply,
)
from ._replies import LINE_TOO_LONG as LINE_TOO_LONG_REPLY
from ._state import HTTP_VERBS, SEQUENCE, SessionView
from ._state import NOT_IMPLEMENTED as NOT_IMPLEMENTED_VERBS
from ._xclient import parse_xclient

# RFC 3030 §2: chunk-size = 1*DIGIT; leading zeros are allowed, so the cap is generous.
MAX_BDAT_DIGITS: Final = 30
# Exactly "BDAT" SP chunk-size [ SP end-marker ], ASCII only: nothing else is trusted.
_BDAT_ARGUMENT: Final = re.compile(rf"([0-9]{{1,{MAX_BDAT_DIGITS}}})(?: ([Ll][Aa][Ss][Tt]))?\Z")
_NO_PARAMS: Final = MailParams()
#: Verbs that need TLS first under ``require_tls`` (RFC 3207 §4).
_NEED_TLS_VERBS: Final = frozenset({"MAIL", "RCPT", "DATA", "BDAT", "AUTH"})
#: Every DATA command that is accepted reads the same (an event is frozen: one will do).
_DATA: Final = Data(verb="DATA", argument="", default_reply=START_DATA)
#: How a BDAT line may start. A set, not ``raw[:1] in b"Bb \t"``: a bytes operand of
#: ``in`` is first tried as an int, which raises (and clears) a formatted TypeError.
_BDAT_FIRST_OCTETS: Final = frozenset({b"B", b"b", b" ", b"\t"})


def _refuse(code: int, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reply(code, text))


@attrs.frozen
class SaslStarted:
    """AUTH was accepted for parsing: the exchange and its first step's result."""

    exchange: SaslExchange
    #: A 334 challenge to send, or the decoded ``(authzid, login, password)``.
    result: Reply | tuple[str, str, str]


@attrs.frozen
class ChunkStarted:
    """A well-formed BDAT: its octets follow, to be read whatever ``refusal`` says."""

    chunk: Bdat
    #: The reply the chunk gets once read (it is then thrown away), or ``None``.
    refusal: Reply | None


@attrs.frozen
class Refused:
    """The line gets ``reply``; with ``close``, the session then ends for that reason."""

    line: str
    reply: Reply
    #: The close reason when the session must end after the reply.
    close: str | None = None
    #: A refused DATA: if more bytes are already buffered, they are a body sent
    #: without waiting for 354 (RFC 2920 §3.1), so the session must end.
    data: bool = False


Outcome = Command | SaslStarted
Reader = Callable[[EngineConfig, SessionView, str, str], Outcome]
LineOutcome = Command | SaslStarted | ChunkStarted | Refused


def read_command(config: EngineConfig, session: SessionView, raw: bytes) -> LineOutcome:
    """What one command line (without its CRLF, or :data:`LINE_TOO_LONG`) means."""
    if raw is LINE_TOO_LONG:
        return Refused("", LINE_TOO_LONG_REPLY)
    # (The first octet spares the usual command the full look.)
    if raw[:1] in _BDAT_FIRST_OCTETS and _is_bdat(raw):
        # Checked on the raw octets, before anything could refuse the line: a BDAT is
        # followed by its chunk, and if the size is not read exactly as the client
        # meant it, the chunk would run as commands (smuggling).
        return _bdat(config, session, raw)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(raw[:40].decode("ascii", "replace"), NOT_UTF8)
    verb, _, argument = line.partition(" ")
    if verb.isascii():  # ascii_upper(), inline: this runs for every command
        verb = verb.upper()
    argument = argument.strip(" ")
    if verb == "AUTH":
        # Events may be logged: never carry the initial response (a password).
        line = f"AUTH {argument.partition(' ')[0]}".rstrip()
    if "\r" in line or "\x00" in line:
        return Refused(line, CONTROL_CHARACTERS)
    if not verb:
        return Refused(line, EMPTY_COMMAND)
    reader = READERS.get(verb)
    if reader is None:
        if verb in HTTP_VERBS and "HTTP/" in argument:
            return Refused(line, HTTP, close="closed")
        if verb in NOT_IMPLEMENTED_VERBS:
            return Refused(line, NOT_IMPLEMENTED)
        return Refused(line, NOT_RECOGNIZED)
    try:
        return reader(config, session, verb, argument)
    except RemoteProtocolError as exc:
        return Refused(line, exc.reply, data=verb == "DATA")


def gate(config: EngineConfig, session: SessionView, verb: str) -> None:
    """Policy and sequence checks that come before parsing arguments."""
    if config.require_tls and not session.tls_active and verb in _NEED_TLS_VERBS:
        raise RemoteProtocolError(NEED_TLS)
    phase = session.phase
    allowed, errors, otherwise = SEQUENCE[verb]  # check_sequence(), inline
    if phase not in allowed:
        error = errors.get(phase, otherwise)
        assert error is not None  # every verb allowed nowhere-else has a reply
        raise RemoteProtocolError(error)


def _is_bdat(raw: bytes) -> bool:
    """Whether a line is a BDAT command, however malformed (leading blanks, a tab)."""
    head = raw.lstrip(b" \t")[:5]
    return head[:4].upper() == b"BDAT" and not head[4:].isalnum()


def _helo(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if config.lmtp and verb != "LHLO":
        raise _refuse(500, "5.5.1 this is an LMTP server: use LHLO")
    if not config.lmtp and verb == "LHLO":
        raise RemoteProtocolError(NOT_RECOGNIZED)
    if not check_domain(argument):
        raise _refuse(501, f"5.5.4 syntax: {verb} hostname")
    extended = verb != "HELO"
    default = hello_reply(
        config,
        extended=extended,
        tls_active=session.tls_active,
        xclient=session.xclient_allowed,
    )
    return Helo(
        verb=verb, argument=argument, name=argument, extended=extended, default_reply=default
    )


def _mail(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    gate(config, session, verb)
    if config.auth_required and session.authenticated_as is None:
        raise RemoteProtocolError(NEED_AUTH)
    # Plain upper() is exact here: no non-ASCII character upper-cases into "FROM:" or
    # "TO:" (only U+00DF, U+0131, U+017F and the ff/fi/fl/st ligatures map to ASCII).
    if argument[:5].upper() != "FROM:":
        raise _refuse(501, "5.5.4 syntax: MAIL FROM:<address>")
    simple = simple_path(argument, 5)
    if simple is not None:
        return MailFrom(
            verb=verb,
            argument=argument,
            address=simple,
            params={},
            size=None,
            body=_NO_PARAMS.body,
            smtputf8=False,
            ret=None,
            envid=None,
            auth=None,
            default_reply=SENDER_OK,
        )
    address, rest = parse_path(
        argument[5:],
        utf8=config.smtputf8,
        allow_null=True,
        allow_postmaster=False,
        sender=True,
        lenient=config.lenient_addresses,
    )
    params = parse_params(rest, utf8=config.smtputf8)
    p = mail_params(config, params) if params else _NO_PARAMS
    if not address.isascii() and not p.smtputf8:
        raise _refuse(553, "5.6.7 non-ASCII addresses need the SMTPUTF8 parameter")
    return MailFrom(
        verb=verb,
        argument=argument,
        address=address,
        params=params,
        size=p.size,
        body=p.body,
        smtputf8=p.smtputf8,
        ret=p.ret,
        envid=p.envid,
        auth=p.auth,
        default_reply=SENDER_OK,
    )


def _rcpt(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    gate(config, session, verb)
    if argument[:3].upper() != "TO:":
        raise _refuse(501, "5.5.4 syntax: RCPT TO:<address>")
    simple = simple_path(argument, 3)
    if simple is not None:
        if session.recipients >= config.max_recipients:
            raise RemoteProtocolError(TOO_MANY_RCPTS)
        return RcptTo(
            verb=verb,
            argument=argument,
            address=simple,
            params={},
            notify=None,
            orcpt=None,
            default_reply=RECIPIENT_OK,
        )
    utf8 = session.smtputf8
    address, rest = parse_path(
        argument[3:],
        utf8=utf8,
        allow_null=False,
        allow_postmaster=True,
        sender=False,
        lenient=config.lenient_addresses,
    )
    params = parse_params(rest, utf8=utf8)
    notify, orcpt = rcpt_params(config, params) if params else (None, None)
    if session.recipients >= config.max_recipients:
        raise RemoteProtocolError(TOO_MANY_RCPTS)
    return RcptTo(
        verb=verb,
        argument=argument,
        address=address,
        params=params,
        notify=notify,
        orcpt=orcpt,
        default_reply=RECIPIENT_OK,
    )


def _data(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    gate(config, session, verb)
    if argument:
        raise _refuse(501, "5.5.4 syntax: DATA")
    if session.bdat_failed is not None:
        raise RemoteProtocolError(session.bdat_failed)
    if session.body == "BINARYMIME":
        raise _refuse(503, "5.5.1 BODY=BINARYMIME needs BDAT, not DATA")
    return _DATA


def _bdat(config: EngineConfig, session: SessionView, raw: bytes) -> ChunkStarted | Refused:
    """A BDAT line (RFC 3030 §2): ``"BDAT" SP chunk-size [ SP end-marker ]``, nothing
    more: no extra space, no tab, no sign, ASCII digits only (leading zeros allowed)."""
    text = raw.decode("ascii", "replace")
    m = None
    if raw.isascii() and raw[:5].upper() == b"BDAT ":
        m = _BDAT_ARGUMENT.match(text, 5)
    if m is None:
        # The chunk's octets follow whatever the reply; when their count is not
        # certain, nothing after this line can be told from a command.
        return Refused(text[:60], BDAT_UNTRUSTED, close="bdat-syntax")
    size = int(m.group(1))
    chunk = Bdat(
        verb="BDAT",
        argument=text[5:],
        size=size,
        last=m.group(2) is not None,
        default_reply=Reply(250, f"2.0.0 {size} octets received"),
    )
    return ChunkStarted(chunk, _bdat_refusal(config, session, size))


def _bdat_refusal(config: EngineConfig, session: SessionView, size: int) -> Reply | None:
    """The reply a BDAT chunk of ``size`` octets gets, if refused: the chunk's octets
    follow whatever its fate, so a refused chunk is still read and thrown away."""
    if not config.chunking:
        # Not advertised, so no client may send it: 502, but its octets are still
        # swallowed, never run as commands.
        return NOT_IMPLEMENTED
    try:
        gate(config, session, "BDAT")
    except RemoteProtocolError as exc:
        return exc.reply
    if session.bdat_failed is not None:
        return session.bdat_failed
    limit = config.max_message_size
    if limit is not None and session.size + size > limit:
        return MSG_TOO_BIG
    return None


def _rset(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if argument:
        raise _refuse(501, "5.5.4 syntax: RSET")
    return Rset(verb=verb, default_reply=OK)


def _noop(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    return Noop(verb=verb, argument=argument, default_reply=OK)


def _quit(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if argument:
        raise _refuse(501, "5.5.4 syntax: QUIT")
    return Quit(verb=verb, default_reply=closing_reply(config.hostname))


def _vrfy(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if not argument:
        raise _refuse(501, "5.5.4 syntax: VRFY address")
    return Vrfy(verb=verb, argument=argument, default_reply=CANNOT_VRFY)


def _expn(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if not argument:
        raise _refuse(501, "5.5.4 syntax: EXPN list")
    return Expn(verb=verb, argument=argument, default_reply=NO_EXPN)


def _help(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    hello = "LHLO" if config.lmtp else "HELO EHLO"
    text = (
        f"2.0.0 commands: {hello} MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH"
    )
    return Help(verb=verb, argument=argument, default_reply=Reply(214, text))


def _starttls(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if not config.starttls:
        raise _refuse(502, "5.5.1 STARTTLS not available")
    if session.tls_active:
        raise _refuse(503, "5.5.1 TLS is already active")
    if argument:
        raise _refuse(501, "5.5.4 syntax: STARTTLS")
    gate(config, session, verb)
    return StartTLS(verb=verb, default_reply=READY_TLS)


def _auth(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    c = config
    if not c.auth_mechanisms:
        raise _refuse(502, "5.5.1 authentication not enabled")
    gate(config, session, verb)
    if session.authenticated_as is not None:
        raise _refuse(503, "5.5.1 already authenticated")
    parts = argument.split(" ")
    if not argument or len(parts) > 2:
        raise _refuse(501, "5.5.4 syntax: AUTH mechanism [initial-response]")
    mechanism = ascii_upper(parts[0])
    if mechanism not in c.auth_mechanisms:
        raise _refuse(504, "5.5.4 unrecognized authentication type")
    if not session.tls_active and not c.auth_insecure:
        # RFC 4954 §6
        raise _refuse(538, "5.7.11 encryption required for requested authentication mechanism")
    sasl = SaslExchange(mechanism)
    return SaslStarted(sasl, sasl.start(parts[1] if len(parts) == 2 else None))


def _xclient(config: EngineConfig, session: SessionView, verb: str, argument: str) -> Outcome:
    if not session.xclient_allowed:
        # XCLIENT_README: "550 insufficient authorization".
        raise RemoteProtocolError(XCLIENT_DENIED)
    gate(config, session, verb)
    return parse_xclient(verb, argument, default_reply=greeting_reply(config))


#: verb -> parser. BDAT is not here: :func:`read_command` recognises its line on the raw
#: octets and parses it before anything else could refuse it.
READERS: Final[dict[str, Reader]] = {
    "HELO": _helo,
    "EHLO": _helo,
    "LHLO": _helo,
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _data,
    "RSET": _rset,
    "NOOP": _noop,
    "QUIT": _quit,
    "VRFY": _vrfy,
    "EXPN": _expn,
    "HELP": _help,
    "STARTTLS": _starttls,
    "AUTH": _auth,
    "XCLIENT": _xclient,
}

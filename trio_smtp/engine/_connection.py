"""The engine: bytes in, events out, replies to bytes.

Theory of operation: the caller feeds received bytes with :meth:`Engine.receive_data`
(``b""`` for end of file) and pulls events with :meth:`Engine.next_event` until it
returns :data:`NEED_DATA`. A command event must be answered with
:meth:`Engine.respond` before the next event is asked for; the engine answers
malformed or out-of-sequence commands itself. Replies accumulate in an output
buffer; the caller sends :meth:`Engine.data_to_send` whenever ``next_event`` says
:data:`NEED_DATA` (the client's input is exhausted, so the whole pipelined batch is
answered in one write, RFC 2920 §3.1) and before closing or starting TLS.

The engine holds no clock and does no I/O: timeouts, hooks and sockets belong to the
caller, which may also end the session with :meth:`Engine.close`.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Sequence
from enum import Enum
from typing import Final

from . import _state
from ._auth import SaslExchange
from ._config import EngineConfig
from ._data import BdatReader, BdatText, DataReader
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    AuthCredentials,
    Bdat,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    MailFrom,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTLS,
    TLSUpgrade,
    Vrfy,
)
from ._grammar import (
    ascii_upper,
    check_domain,
    decode_xtext,
    need_value,
    parse_params,
    parse_path,
)
from ._proxy import ProxyHeaderError, parse_proxy_header
from ._receivebuffer import LINE_TOO_LONG, ReceiveBuffer
from ._replies import Reply
from ._state import Phase, SessionState, State


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

# RFC 3030 §2: chunk-size = 1*DIGIT; leading zeros are allowed, so the cap is generous.
_MAX_BDAT_DIGITS: Final = 30
# Exactly "BDAT" SP chunk-size [ SP end-marker ], ASCII only: nothing else is trusted.
_BDAT_ARGUMENT: Final = re.compile(rf"([0-9]{{1,{_MAX_BDAT_DIGITS}}})(?: ([Ll][Aa][Ss][Tt]))?\Z")
_BDAT_UNTRUSTED: Final = Reply(
    421, "4.5.4 BDAT needs exactly: BDAT chunk-size [LAST]; closing connection"
)
_OK: Final = Reply(250, "2.0.0 OK")
_TOO_MANY_ERRORS: Final = Reply(421, "4.7.0 too many errors, closing connection")
_TOO_MANY_AUTH: Final = Reply(421, "4.7.0 too many failed authentication attempts")
_BAD_PIPELINING: Final = Reply(421, "4.5.0 improper pipelining after refused DATA")
_TLS_ON_PLAIN_PORT: Final = Reply(421, "4.7.0 TLS handshake on a plain SMTP port; use STARTTLS")
_HTTP: Final = Reply(421, "4.7.0 this is an SMTP server, not an HTTP server")
_NEED_TLS: Final = Reply(530, "5.7.0 must issue a STARTTLS command first")
_NEED_AUTH: Final = Reply(530, "5.7.0 authentication required")
_TOO_MANY_RCPTS: Final = Reply(452, "4.5.3 too many recipients")
_MSG_TOO_BIG: Final = Reply(552, "5.3.4 message size exceeds fixed maximum message size")
_SENDER_OK: Final = Reply(250, "2.1.0 sender OK")
_RECIPIENT_OK: Final = Reply(250, "2.1.5 recipient OK")
_START_DATA: Final = Reply(354, "end data with <CR><LF>.<CR><LF>")
_MESSAGE_OK: Final = Reply(250, "2.0.0 OK message accepted")
_AUTH_INVALID: Final = Reply(535, "5.7.8 authentication credentials invalid")
_READY_TLS: Final = Reply(220, "2.0.0 ready to start TLS")
_NO_EXPN: Final = Reply(502, "5.5.1 EXPN not available")
_CANNOT_VRFY: Final = Reply(
    252, "2.0.0 cannot VRFY user, but will accept message and attempt delivery"
)
#: Codes that count as a client error towards ``max_bad_commands``.
_BAD_CODES: Final = frozenset({500, 501, 502, 503, 504, 555})

EventOrSentinel = Event | Sentinel


class Engine:
    """One SMTP or LMTP server session, as a state machine.

    Args:
        config: The settings (limits, extensions, policy).
        tls_active: True when the connection is already encrypted (implicit TLS).
    """

    def __init__(self, config: EngineConfig | None = None, *, tls_active: bool = False) -> None:
        self.config = config if config is not None else EngineConfig()
        self._buf = ReceiveBuffer()
        self._out: list[bytes] = []
        self._events: collections.deque[Event] = collections.deque()
        self._pending: Event | None = None
        self._eof = False
        self._reader: DataReader | BdatReader | None = None
        self._sasl: SaslExchange | None = None
        self._bdat_event: Bdat | None = None
        self._bdat_error: Reply | None = None
        self._bad_commands = 0
        self._auth_failures = 0
        self._size = 0
        #: The connection state (what input comes next).
        self.state = State.PROXY if self.config.proxy_protocol else State.CONNECTED
        self._session = SessionState(tls_active=tls_active)
        self._smtputf8 = False
        self._body = "7BIT"
        self._tls_announced = False
        self._bdat_refusal: Reply | None = None
        self._bdat_text: BdatText | None = None

    # ------------------------------------------------------------------ the caller's side

    def __repr__(self) -> str:
        return f"<Engine state={self.state.value} phase={self.phase.value}>"

    @property
    def session(self) -> SessionState:
        """The session's facts (phase, HELO name, ESMTP, TLS, login, close reason), read-only.

        The engine is their one owner: read them here rather than copying them.
        """
        return self._session

    @property
    def phase(self) -> Phase:
        """The session phase (greeted, in a transaction …); same as ``session.phase``."""
        return self._session.phase

    @property
    def tls_active(self) -> bool:
        """Whether TLS is active on the connection; same as ``session.tls_active``."""
        return self._session.tls_active

    @tls_active.setter
    def tls_active(self, value: bool) -> None:
        # Kept for callers that mark implicit TLS after construction; prefer
        # ``Engine(config, tls_active=True)``.
        self._session.set_tls_active(value)

    @property
    def helo_name(self) -> str | None:
        """The HELO/EHLO/LHLO name once accepted; same as ``session.helo_name``."""
        return self._session.helo_name

    @property
    def esmtp(self) -> bool:
        """Whether the client used EHLO or LHLO; same as ``session.esmtp``."""
        return self._session.esmtp

    @property
    def authenticated_as(self) -> str | None:
        """The login of a successful AUTH; same as ``session.authenticated_as``."""
        return self._session.authenticated_as

    @property
    def recipients(self) -> int:
        """Accepted recipients in the current transaction; same as ``session.recipients``."""
        return self._session.recipients

    @property
    def reading_body(self) -> bool:
        """Whether the engine is reading a DATA body or the octets of a BDAT chunk."""
        return self.state is State.DATA or self.state is State.BDAT

    @property
    def in_transaction(self) -> bool:
        """Whether a mail transaction is in progress (MAIL accepted, not yet finished)."""
        return self.phase in (Phase.MAIL, Phase.RCPT, Phase.CHUNKING) or self.reading_body

    @property
    def awaiting_reply(self) -> bool:
        """Whether an event is waiting for :meth:`respond`."""
        return self._pending is not None

    @property
    def buffered(self) -> int:
        """How many received bytes are waiting to be read."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the client; ``b""`` means end of file."""
        if self._eof and data:
            raise LocalProtocolError("received data after end of file")
        if not data:
            self._eof = True
            return
        if self.state is State.CLOSED:
            return
        self._buf.append(data)

    def data_to_send(self) -> bytes:
        """Take the bytes waiting to go to the client."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def greet(self, reply: Reply | None = None) -> None:
        """Send the greeting (220 by default), or a rejection (then the session closes).

        Args:
            reply: A 220 greeting, or a 4xx/5xx reply to refuse the connection
                (RFC 5321 §3.1: 554).
        """
        if self.state is not State.CONNECTED:
            raise LocalProtocolError(f"cannot greet in state {self.state.value}")
        if reply is None:
            kind = "LMTP" if self.config.lmtp else self.config.banner
            reply = Reply(220, f"{self.config.hostname} {kind}")
        self._out.append(reply.to_bytes(enhanced=False))
        if reply.code == 220:
            self.state = State.COMMAND
        else:
            self._close("rejected")

    def close(self, reply: Reply | None = None, *, reason: str = "closed") -> None:
        """End the session from the server's side (timeout, shutdown), sending ``reply``.

        Args:
            reply: What the client gets last (typically a 421), or nothing.
            reason: The close reason recorded in :attr:`session` (``"timeout"``,
                ``"shutdown"`` …); the default is ``"closed"``.
        """
        if self.state is State.CLOSED:
            return
        if reply is not None:
            self._out.append(reply.to_bytes())
        self._pending = None
        self._close(reason)

    def tls_started(self) -> None:
        """Report that the TLS handshake after STARTTLS has completed.

        RFC 3207 §4.2: the server forgets everything the client said before TLS.
        """
        if self.state is not State.STARTTLS:
            raise LocalProtocolError(f"no STARTTLS in progress (state {self.state.value})")
        self.state = State.COMMAND
        self._session.tls_started()
        self._reset_transaction()

    def next_event(self) -> EventOrSentinel:
        """The next event, or :data:`NEED_DATA` / :data:`PAUSED`.

        Raises:
            LocalProtocolError: if the previous event still needs :meth:`respond`.
        """
        if self._pending is not None:
            raise LocalProtocolError(f"answer {type(self._pending).__name__} first")
        if self._events:
            return self._emit(self._events.popleft())
        while True:
            state = self.state
            if state is State.COMMAND or state is State.AUTH:
                if self._buf.raw[:1] == b"\x16" and state is State.COMMAND:
                    # A TLS record (ClientHello) where a command should be: the client
                    # wants implicit TLS. No SMTP command starts with 0x16.
                    self._send(_TLS_ON_PLAIN_PORT)
                    return self._emit(self._close("closed"))
                line = self._buf.next_line(self._line_limit())
                if line is None:
                    if self._eof:
                        return self._emit(self._close("eof"))
                    return NEED_DATA
                event = self._line(line)
            elif state is State.DATA or state is State.BDAT:
                event = self._body_step()
                if event is None:
                    if self._eof:
                        return self._emit(self._close("eof"))
                    return NEED_DATA
            elif state is State.CLOSED:
                return ConnectionClosed(reason=self._session.close_reason or "closed")
            elif state is State.STARTTLS:
                if self._buf:
                    # RFC 3207 §4 / CVE-2011-0411: never run what came with STARTTLS.
                    self._buf.discard(len(self._buf))
                    return self._emit(self._close("starttls-injection"))
                if self._pending is None and not self._tls_announced:
                    self._tls_announced = True
                    return TLSUpgrade()
                return PAUSED
            elif state is State.PROXY:
                event = self._proxy_step()
                if event is None:
                    if self._eof:
                        return self._emit(self._close("eof"))
                    return NEED_DATA
            else:  # CONNECTED
                return PAUSED
            if event is not None:
                return self._emit(event)

    def respond(self, reply: Reply | Sequence[Reply] | None = None) -> None:
        """Answer the pending event.

        Args:
            reply: ``None`` for the event's default reply; a :class:`Reply`; or for an
                LMTP :class:`EndOfMessage`, one reply per recipient (a single reply is
                repeated for each).
        """
        event = self._pending
        if event is None:
            raise LocalProtocolError("no event is waiting for a reply")
        if isinstance(event, EndOfMessage):
            # Checked before the event is dropped: a bad call leaves it pending.
            replies = self._message_replies(event, reply)
            self._pending = None
            self._message_done()
            for r in replies:
                self._send(r)
            if any(r.code == 421 for r in replies):
                self._close("closed")
            return
        if reply is None:
            assert isinstance(event, Command)
            reply = event.default_reply
        elif not isinstance(reply, Reply):
            raise LocalProtocolError(f"expected a Reply, not {reply!r}")
        self._pending = None
        self._apply(event, reply)

    # ------------------------------------------------------------------ internals

    def _emit(self, event: Event) -> Event:
        if event.needs_reply:
            self._pending = event
        return event

    def _close(self, reason: str) -> ConnectionClosed:
        self.state = State.CLOSED
        self._session.closed(reason)
        self._reader = None
        self._sasl = None
        self._buf.discard(len(self._buf))
        return ConnectionClosed(reason=reason)

    def _send(self, reply: Reply, *, enhanced: bool = True) -> None:
        self._out.append(reply.to_bytes(enhanced=enhanced))

    def _line_limit(self) -> int:
        if self.state is State.AUTH:
            return self.config.max_auth_line
        buf = self._buf.raw
        if buf[:5].upper() == b"AUTH ":
            # RFC 4954 §4: an initial response may make AUTH longer than 512 octets.
            return self.config.max_auth_line
        return self.config.max_command_line

    def _count_error(self, reply: Reply) -> bool:
        """Count a client error; True when it was one too many (421 sent, session over)."""
        if reply.code not in _BAD_CODES:
            return False
        self._bad_commands += 1
        if self._bad_commands < self.config.max_bad_commands:
            return False
        self._send(_TOO_MANY_ERRORS)
        self._close("closed")
        return True

    def _reject(self, line: str, reply: Reply) -> Event:
        """Answer a command with an error the engine decided on."""
        self._send(reply)
        self._count_error(reply)
        return CommandRejected(line=line, reply=reply)

    def _reset_transaction(self) -> None:
        self._session.reset_transaction()
        self._smtputf8 = False
        self._body = "7BIT"
        self._size = 0
        self._bdat_error = None
        self._bdat_text = None

    def _message_done(self) -> None:
        self.state = State.COMMAND
        self._reader = None
        self._reset_transaction()

    # ------------------------------------------------------------------ PROXY

    def _proxy_step(self) -> Event | None:
        try:
            header, used = parse_proxy_header(self._buf.raw)
        except ProxyHeaderError:
            return self._close("proxy-error")
        if header is None:
            return None
        self._buf.discard(used)
        self.state = State.CONNECTED
        return header

    # ------------------------------------------------------------------ commands

    def _line(self, raw: bytes) -> Event | None:
        if self.state is State.AUTH:
            return self._auth_line(raw)
        if raw is LINE_TOO_LONG:
            return self._reject("", Reply(500, "5.5.6 line too long"))
        head = raw.lstrip(b" \t")[:5]
        if head[:4].upper() == b"BDAT" and not head[4:].isalnum():
            # Checked on the raw octets, before anything could refuse the line: a BDAT
            # is followed by its chunk, and if the size is not read exactly as the
            # client meant it, the chunk would run as commands (smuggling).
            return self._bdat_line(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(
                raw[:40].decode("ascii", "replace"), Reply(500, "5.5.2 command is not valid UTF-8")
            )
        verb, _, argument = line.partition(" ")
        verb = ascii_upper(verb)
        argument = argument.strip(" ")
        if verb == "AUTH":
            # Events may be logged: never carry the initial response (a password).
            line = f"AUTH {argument.partition(' ')[0]}".rstrip()
        if "\r" in line or "\x00" in line:
            return self._reject(line, Reply(501, "5.5.2 control characters in command"))
        if not verb:
            return self._reject(line, Reply(500, "5.5.2 empty command"))
        handler = _HANDLERS.get(verb)
        if handler is None:
            if verb in _state.HTTP_VERBS and "HTTP/" in argument:
                self._send(_HTTP)
                return self._close("closed")
            if verb in _state.NOT_IMPLEMENTED:
                return self._reject(line, Reply(502, "5.5.1 command not implemented"))
            return self._reject(line, Reply(500, "5.5.2 command not recognized"))
        try:
            event = handler(self, verb, argument)
        except RemoteProtocolError as exc:
            rejected = self._reject(line, exc.reply)
            if verb == "DATA" and self._buf and self.state is not State.CLOSED:
                # RFC 2920 §3.1: DATA ends a pipelined group, so bytes already here
                # are a body sent without waiting for 354; never run them as commands.
                self._send(_BAD_PIPELINING)
                self._close("closed")
            return rejected
        return event

    def _gate(self, verb: str) -> None:
        """Policy and sequence checks that come before parsing arguments."""
        if (
            self.config.require_tls
            and not self.tls_active
            and verb
            in (
                "MAIL",
                "RCPT",
                "DATA",
                "BDAT",
                "AUTH",
            )
        ):
            raise RemoteProtocolError(_NEED_TLS)
        error = _state.check_sequence(verb, self.phase)
        if error is not None:
            raise RemoteProtocolError(error)

    def _helo(self, verb: str, argument: str) -> Event:
        lmtp = self.config.lmtp
        if lmtp and verb != "LHLO":
            raise RemoteProtocolError(Reply(500, "5.5.1 this is an LMTP server: use LHLO"))
        if not lmtp and verb == "LHLO":
            raise RemoteProtocolError(Reply(500, "5.5.2 command not recognized"))
        if not check_domain(argument):
            raise RemoteProtocolError(Reply(501, f"5.5.4 syntax: {verb} hostname"))
        extended = verb != "HELO"
        default = _hello_reply(self.config, extended=extended, tls_active=self.tls_active)
        return Helo(
            verb=verb, argument=argument, name=argument, extended=extended, default_reply=default
        )

    def _mail(self, verb: str, argument: str) -> Event:
        self._gate(verb)
        if self.config.auth_required and self.authenticated_as is None:
            raise RemoteProtocolError(_NEED_AUTH)
        if ascii_upper(argument[:5]) != "FROM:":
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: MAIL FROM:<address>"))
        c = self.config
        address, rest = parse_path(
            argument[5:],
            utf8=c.smtputf8,
            allow_null=True,
            allow_postmaster=False,
            sender=True,
            lenient=c.lenient_addresses,
        )
        params = parse_params(rest, utf8=c.smtputf8)
        size: int | None = None
        body = "7BIT"
        ret = envid = auth = None
        smtputf8 = False
        for key in params:
            if key == "SIZE":  # RFC 1870 §6
                value = need_value(params, key)
                # isascii(): str.isdigit() also accepts digits int() refuses ("²").
                if not value.isascii() or not value.isdigit() or len(value) > 20:
                    raise RemoteProtocolError(Reply(501, "5.5.4 bad SIZE value"))
                size = int(value)
                if c.max_message_size is not None and size > c.max_message_size:
                    raise RemoteProtocolError(_MSG_TOO_BIG)
            elif key == "BODY":  # RFC 6152, RFC 3030 §3
                body = ascii_upper(need_value(params, key))
                allowed = {"7BIT"}
                if c.eightbitmime:
                    allowed.add("8BITMIME")
                if c.chunking and c.binarymime:
                    allowed.add("BINARYMIME")
                if body not in allowed:
                    raise RemoteProtocolError(Reply(501, f"5.5.4 unsupported BODY={body}"))
            elif key == "SMTPUTF8" and c.smtputf8:  # RFC 6531 §3.4
                if params[key] is not None:
                    raise RemoteProtocolError(Reply(501, "5.5.4 SMTPUTF8 takes no value"))
                smtputf8 = True
            elif key == "RET" and c.dsn:  # RFC 3461 §4.3
                ret = ascii_upper(need_value(params, key))
                if ret not in ("FULL", "HDRS"):
                    raise RemoteProtocolError(Reply(501, "5.5.4 RET must be FULL or HDRS"))
            elif key == "ENVID" and c.dsn:  # RFC 3461 §4.4
                envid = decode_xtext(need_value(params, key), "ENVID")
                if len(need_value(params, key)) > 100:
                    raise RemoteProtocolError(Reply(501, "5.5.4 ENVID too long"))
            elif key == "AUTH" and c.auth_mechanisms:  # RFC 4954 §5
                auth = decode_xtext(need_value(params, key), "AUTH")
            else:
                raise RemoteProtocolError(Reply(555, f"5.5.4 unsupported parameter {key}"))
        if not address.isascii() and not smtputf8:
            raise RemoteProtocolError(
                Reply(553, "5.6.7 non-ASCII addresses need the SMTPUTF8 parameter")
            )
        self._smtputf8 = smtputf8
        self._body = body
        return MailFrom(
            verb=verb,
            argument=argument,
            address=address,
            params=params,
            size=size,
            body=body,
            smtputf8=smtputf8,
            ret=ret,
            envid=envid,
            auth=auth,
            default_reply=_SENDER_OK,
        )

    def _rcpt(self, verb: str, argument: str) -> Event:
        self._gate(verb)
        if ascii_upper(argument[:3]) != "TO:":
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: RCPT TO:<address>"))
        c = self.config
        address, rest = parse_path(
            argument[3:],
            utf8=self._smtputf8,
            allow_null=False,
            allow_postmaster=True,
            sender=False,
            lenient=c.lenient_addresses,
        )
        params = parse_params(rest, utf8=self._smtputf8)
        notify: tuple[str, ...] | None = None
        orcpt: tuple[str, str] | None = None
        for key in params:
            if key == "NOTIFY" and c.dsn:  # RFC 3461 §4.1
                words = tuple(ascii_upper(w) for w in need_value(params, key).split(","))
                valid = {"SUCCESS", "FAILURE", "DELAY"}
                if not (
                    words == ("NEVER",) or (set(words) <= valid and len(set(words)) == len(words))
                ):
                    raise RemoteProtocolError(Reply(501, "5.5.4 bad NOTIFY value"))
                notify = words
            elif key == "ORCPT" and c.dsn:  # RFC 3461 §4.2
                kind, sep, value = need_value(params, key).partition(";")
                if not sep or not kind or not value or not kind.isascii():
                    raise RemoteProtocolError(Reply(501, "5.5.4 bad ORCPT value"))
                orcpt = (kind.lower(), decode_xtext(value, "ORCPT"))
            else:
                raise RemoteProtocolError(Reply(555, f"5.5.4 unsupported parameter {key}"))
        if self.recipients >= c.max_recipients:
            raise RemoteProtocolError(_TOO_MANY_RCPTS)
        return RcptTo(
            verb=verb,
            argument=argument,
            address=address,
            params=params,
            notify=notify,
            orcpt=orcpt,
            default_reply=_RECIPIENT_OK,
        )

    def _data(self, verb: str, argument: str) -> Event:
        self._gate(verb)
        if argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: DATA"))
        if self._bdat_error is not None:
            raise RemoteProtocolError(self._bdat_error)
        if self._body == "BINARYMIME":
            raise RemoteProtocolError(Reply(503, "5.5.1 BODY=BINARYMIME needs BDAT, not DATA"))
        return Data(
            verb=verb,
            argument=argument,
            default_reply=_START_DATA,
        )

    def _bdat_line(self, raw: bytes) -> Event | None:
        """A BDAT command line, parsed strictly (RFC 3030 §2) or the session ends."""
        text = raw.decode("ascii", "replace")
        if not self.config.chunking:
            # Not advertised, so no client may send it (RFC 3030 §2): an unknown command.
            return self._reject(text[:40], Reply(502, "5.5.1 command not implemented"))
        m = _BDAT_ARGUMENT.match(text, 5) if raw.isascii() and text[:5].upper() == "BDAT " else None
        if m is None:
            # RFC 3030 §2: the chunk's octets follow whatever the reply; when their count
            # is not certain, nothing after this line can be told from a command.
            self._send(_BDAT_UNTRUSTED)
            rejected = CommandRejected(line=text[:60], reply=_BDAT_UNTRUSTED)
            self._close("bdat-syntax")
            return rejected
        return self._bdat("BDAT", text[5:], int(m.group(1)), last=m.group(2) is not None)

    def _bdat(self, verb: str, argument: str, size: int, *, last: bool) -> Event | None:
        # RFC 3030 §2: the chunk's octets follow the command whatever its fate, so a
        # refused chunk is read and thrown away rather than parsed as commands.
        error: Reply | None = None
        try:
            self._gate(verb)
        except RemoteProtocolError as exc:
            error = exc.reply
        if error is None and self._bdat_error is not None:
            error = self._bdat_error
        limit = self.config.max_message_size
        if error is None and limit is not None and self._size + size > limit:
            error = _MSG_TOO_BIG
        self._bdat_event = Bdat(
            verb=verb,
            argument=argument,
            size=size,
            last=last,
            default_reply=Reply(250, f"2.0.0 {size} octets received"),
        )
        self._bdat_refusal = error
        if error is None and self._bdat_text is None and self._body != "BINARYMIME":
            c = self.config
            self._bdat_text = BdatText(
                max_line_length=c.max_data_line, bare_line_endings=c.bare_line_endings
            )
        text = self._bdat_text if error is None else None
        self._reader = BdatReader(size, keep=error is None, text=text, last=last)
        self.state = State.BDAT
        return None

    def _rset(self, verb: str, argument: str) -> Event:
        if argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: RSET"))
        return Rset(verb=verb, default_reply=_OK)

    def _noop(self, verb: str, argument: str) -> Event:
        return Noop(verb=verb, argument=argument, default_reply=_OK)

    def _quit(self, verb: str, argument: str) -> Event:
        if argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: QUIT"))
        return Quit(
            verb=verb, default_reply=Reply(221, f"2.0.0 {self.config.hostname} closing connection")
        )

    def _vrfy(self, verb: str, argument: str) -> Event:
        if not argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: VRFY address"))
        return Vrfy(
            verb=verb,
            argument=argument,
            default_reply=_CANNOT_VRFY,
        )

    def _expn(self, verb: str, argument: str) -> Event:
        if not argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: EXPN list"))
        return Expn(verb=verb, argument=argument, default_reply=_NO_EXPN)

    def _help(self, verb: str, argument: str) -> Event:
        hello = "LHLO" if self.config.lmtp else "HELO EHLO"
        text = (
            f"2.0.0 commands: {hello} MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP"
            " STARTTLS AUTH"
        )
        return Help(verb=verb, argument=argument, default_reply=Reply(214, text))

    def _starttls(self, verb: str, argument: str) -> Event:
        if not self.config.starttls:
            raise RemoteProtocolError(Reply(502, "5.5.1 STARTTLS not available"))
        if self.tls_active:
            raise RemoteProtocolError(Reply(503, "5.5.1 TLS is already active"))
        if argument:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: STARTTLS"))
        self._gate(verb)
        return StartTLS(verb=verb, default_reply=_READY_TLS)

    def _auth(self, verb: str, argument: str) -> Event | None:
        c = self.config
        if not c.auth_mechanisms:
            raise RemoteProtocolError(Reply(502, "5.5.1 authentication not enabled"))
        self._gate(verb)
        if self.authenticated_as is not None:
            raise RemoteProtocolError(Reply(503, "5.5.1 already authenticated"))
        parts = argument.split(" ")
        if not argument or len(parts) > 2:
            raise RemoteProtocolError(Reply(501, "5.5.4 syntax: AUTH mechanism [initial-response]"))
        mechanism = ascii_upper(parts[0])
        if mechanism not in c.auth_mechanisms:
            raise RemoteProtocolError(Reply(504, "5.5.4 unrecognized authentication type"))
        if not self.tls_active and not c.auth_insecure:
            # RFC 4954 §6
            raise RemoteProtocolError(
                Reply(538, "5.7.11 encryption required for requested authentication mechanism")
            )
        sasl = SaslExchange(mechanism)
        result = sasl.start(parts[1] if len(parts) == 2 else None)
        return self._sasl_result(sasl, result)

    def _sasl_result(
        self, sasl: SaslExchange, result: Reply | tuple[str, str, str]
    ) -> Event | None:
        if isinstance(result, Reply):
            self._sasl = sasl
            self.state = State.AUTH
            self._send(result, enhanced=False)
            return None
        self._sasl = None
        self.state = State.COMMAND
        authzid, login, password = result
        return AuthCredentials(
            verb="AUTH",
            argument=sasl.mechanism,
            mechanism=sasl.mechanism,
            login=login,
            password=password,
            authzid=authzid,
            default_reply=_AUTH_INVALID,
        )

    def _auth_line(self, raw: bytes) -> Event | None:
        sasl = self._sasl
        assert sasl is not None
        if raw is LINE_TOO_LONG:
            self._sasl = None
            self.state = State.COMMAND
            return self._reject("AUTH", Reply(500, "5.5.6 authentication line too long"))
        try:
            result = sasl.step(raw.decode("ascii", "replace").strip())
        except RemoteProtocolError as exc:
            self._sasl = None
            self.state = State.COMMAND
            return self._reject("AUTH", exc.reply)
        return self._sasl_result(sasl, result)

    # ------------------------------------------------------------------ bodies

    def _body_step(self) -> Event | None:
        reader = self._reader
        assert reader is not None
        data, done = reader.feed(self._buf.raw)
        if isinstance(reader, BdatReader):
            if data:
                self._size += len(data)
            if done:
                self._bdat_done()
            if data:
                return MessageData(data=data)
            if done:
                return self._events.popleft() if self._events else None
            return None
        if done:
            self.state = State.COMMAND
            if reader.error is not None:
                self._send(reader.error)
                self._message_done()
                ev: Event = MessageRejected(reply=reader.error)
            else:
                ev = EndOfMessage(
                    size=reader.size,
                    recipients=self.recipients,
                    default_reply=_MESSAGE_OK,
                )
            if data:
                self._events.append(ev)
                return MessageData(data=data)
            return ev
        if data:
            return MessageData(data=data)
        return None

    def _bdat_done(self) -> None:
        self.state = State.COMMAND
        self._reader = None
        event = self._bdat_event
        assert event is not None
        refusal = self._bdat_refusal
        text = self._bdat_text
        if refusal is None and text is not None and text.error is not None:
            # RFC 3030 §3: BDAT text is still text; bare CR/LF or an over-long line
            # fail the chunk where they were seen, and so the transaction.
            refusal = text.error
        if refusal is not None:
            rejected = self._reject(f"BDAT {event.argument}", refusal)
            if self.state is not State.CLOSED and self.in_transaction:
                # A refused chunk ends the transaction; later chunks get 503 until RSET.
                self._bdat_error = Reply(503, "5.5.1 previous BDAT failed; send RSET")
                if refusal is _MSG_TOO_BIG:
                    self._size = 0
            self._events.append(rejected)
            return
        self._events.append(event)

    def _message_replies(
        self, event: EndOfMessage, reply: Reply | Sequence[Reply] | None
    ) -> list[Reply]:
        if reply is None:
            replies = [event.default_reply]
        elif isinstance(reply, Reply):
            replies = [reply]
        else:
            replies = list(reply)
            if not all(isinstance(r, Reply) for r in replies):
                raise LocalProtocolError(f"expected replies, not {reply!r}")
        if self.config.lmtp:
            # RFC 2033 §4.2: one reply for each recipient that got a 250 to RCPT.
            if len(replies) == 1:
                replies = replies * event.recipients
            elif len(replies) != event.recipients:
                raise LocalProtocolError(
                    f"LMTP needs {event.recipients} replies, got {len(replies)}"
                )
        elif len(replies) != 1:
            raise LocalProtocolError("an SMTP message gets exactly one reply")
        return replies

    # ------------------------------------------------------------------ answers

    def _apply(self, event: Event, reply: Reply) -> None:
        positive = reply.code < 400
        if not (positive and isinstance(event, Bdat) and event.last):
            # RFC 3030 §2: BDAT LAST gets one reply, the message's (EndOfMessage's).
            self._send(reply, enhanced=not isinstance(event, Helo))
        if positive:
            self._bad_commands = 0
        elif self._count_error(reply):
            return
        if reply.code == 421:
            self._close("closed")
            return
        if isinstance(event, Helo):
            if positive:
                self._session.hello(event.name, extended=event.extended)
                self._reset_transaction()
        elif isinstance(event, MailFrom):
            if positive:
                self._session.advance("MAIL")
            else:
                self._smtputf8 = False
                self._body = "7BIT"
        elif isinstance(event, RcptTo):
            if positive:
                self._session.advance("RCPT")
        elif isinstance(event, Data):
            if positive:
                c = self.config
                self._reader = DataReader(
                    max_size=c.max_message_size,
                    max_line_length=c.max_data_line,
                    bare_line_endings=c.bare_line_endings,
                )
                self.state = State.DATA
            elif self._buf:
                # RFC 2920 §3.1: DATA ends a pipelined group, so bytes already here are
                # a body sent without waiting for 354; never run them as commands.
                self._send(_BAD_PIPELINING)
                self._close("closed")
        elif isinstance(event, Bdat):
            if positive:
                self._session.advance("BDAT")
                if event.last:
                    self._events.append(
                        EndOfMessage(
                            size=self._size,
                            recipients=self.recipients,
                            default_reply=_MESSAGE_OK,
                        )
                    )
            else:
                self._reset_transaction()
        elif isinstance(event, Rset):
            self._reset_transaction()
        elif isinstance(event, Quit):
            self._close("quit")
        elif isinstance(event, StartTLS):
            if positive:
                self.state = State.STARTTLS
                self._tls_announced = False
        elif isinstance(event, AuthCredentials):
            if reply.code == 235:
                self._session.authenticated(event.login, event.mechanism)
                self._auth_failures = 0
            else:
                self._auth_failures += 1
                if self._auth_failures >= self.config.max_auth_failures:
                    self._send(_TOO_MANY_AUTH)
                    self._close("auth-failures")


def _keywords(c: EngineConfig, tls_active: bool) -> list[str]:
    words = []
    if c.pipelining:
        words.append("PIPELINING")
    words.append(f"SIZE {c.max_message_size}" if c.max_message_size else "SIZE")
    if c.eightbitmime:
        words.append("8BITMIME")
    if c.smtputf8:
        words.append("SMTPUTF8")
    words.append("ENHANCEDSTATUSCODES")
    if c.chunking:
        words.append("CHUNKING")
        if c.binarymime:
            words.append("BINARYMIME")
    if c.dsn:
        words.append("DSN")
    if c.starttls and not tls_active:
        words.append("STARTTLS")
    if c.auth_mechanisms and (tls_active or c.auth_insecure):
        words.append("AUTH " + " ".join(c.auth_mechanisms))
    return words


@functools.lru_cache(maxsize=64)
def _hello_reply(config: EngineConfig, *, extended: bool, tls_active: bool) -> Reply:
    """The default reply to HELO (the name) or EHLO/LHLO (the name and extensions)."""
    if not extended:
        return Reply(250, config.hostname)
    return Reply(250, "\n".join([config.hostname, *_keywords(config, tls_active)]))


_HANDLERS = {
    "HELO": Engine._helo,
    "EHLO": Engine._helo,
    "LHLO": Engine._helo,
    "MAIL": Engine._mail,
    "RCPT": Engine._rcpt,
    "DATA": Engine._data,
    "RSET": Engine._rset,
    "NOOP": Engine._noop,
    "QUIT": Engine._quit,
    "VRFY": Engine._vrfy,
    "EXPN": Engine._expn,
    "HELP": Engine._help,
    "STARTTLS": Engine._starttls,
    "AUTH": Engine._auth,
}

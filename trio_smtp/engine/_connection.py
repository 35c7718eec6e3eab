"""The engine: bytes in, events out, replies to bytes.

Theory of operation: the caller feeds received bytes with :meth:`Engine.receive_data`
(``b""`` for end of file) and pulls events with :meth:`Engine.next_event` until it
returns :data:`NEED_DATA`. A command event must be answered with
:meth:`Engine.respond` before the next event is asked for; the engine answers
malformed or out-of-sequence commands itself. Replies accumulate in an output
buffer; the caller sends :meth:`Engine.data_to_send` whenever ``next_event`` says
:data:`NEED_DATA` (the client's input is exhausted, so the whole pipelined batch is
answered in one write, RFC 2920 §3.1) and before closing or starting TLS.

Who does what: ``_commands.py`` parses command lines (it reads the session, never
changes it); :class:`~._state.SessionState` applies the caller's answer to a command;
``_body.py`` reads bodies; ``_auth.py`` runs AUTH exchanges and counts failed ones;
``_greeting.py`` builds the 220, EHLO and 221 replies. This module moves bytes between
them, keeps the input state (:class:`~._state.State`), acts on answers (a 354 starts a
body, QUIT closes …) and counts the client errors that end a session.

The engine holds no clock and does no I/O: timeouts, hooks and sockets belong to the
caller, which may also end the session with :meth:`Engine.close`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._auth import Authentication
from ._body import MessageBody, message_replies
from ._commands import ChunkStarted, Refused, read_command
from ._config import EngineConfig
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Bdat,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    EventOrSentinel,
    Helo,
    MailFrom,
    MessageData,
    MessageRejected,
    Quit,
    StartTLS,
    TLSUpgrade,
    Xclient,
)
from ._greeting import greeting_reply
from ._proxy import ProxyHeaderError, parse_proxy_header
from ._receivebuffer import ReceiveBuffer
from ._replies import (
    BAD_PIPELINING,
    MESSAGE_OK,
    MSG_TOO_BIG,
    TLS_ON_PLAIN_PORT,
    TOO_MANY_AUTH,
    TOO_MANY_ERRORS,
    Reply,
)
from ._state import TRANSACTION_PHASES, TRANSITIONS, Phase, SessionState, State

#: Codes that count as a client error towards ``max_bad_commands``.
_BAD_CODES: Final = frozenset({500, 501, 502, 503, 504, 555})

# The states read per command: on Python 3.11 a ``State.X`` read costs 15 times a global's.
_COMMAND, _AUTH, _DATA = State.COMMAND, State.AUTH, State.DATA
_BDAT, _CLOSED = State.BDAT, State.CLOSED


class Engine:
    """One SMTP or LMTP server session, as a state machine.

    Args:
        config: The settings (limits, extensions, policy).
        tls_active: True when the connection is already encrypted (implicit TLS).
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        tls_active: bool = False,
        allow_xclient: bool = False,
    ) -> None:
        self.config = config if config is not None else EngineConfig()
        self._buf = ReceiveBuffer()
        self._out: list[bytes] = []
        self._out_size = 0
        # Events already decided, ahead of the input (at most a couple, rarely any): a list,
        # not a deque, which costs 760 bytes on every idle connection.
        self._events: list[Event] = []
        self._pending: Event | None = None
        self._eof = False
        self._body = MessageBody(self.config)
        self._auth = Authentication(max_failures=self.config.max_auth_failures)
        self._bad_commands = 0
        self._tls_announced = False
        self._min_limit = min(self.config.max_command_line, self.config.max_auth_line)
        self._session = SessionState(tls_active=tls_active)
        self._session.allow_xclient(allow_xclient)
        #: The connection state (what input comes next).
        self.state: State = State.PROXY if self.config.proxy_protocol else State.CONNECTED

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
    def allow_xclient(self) -> bool:
        """Whether this client may send XCLIENT (advertised in EHLO only then; others
        get 550 5.7.0). The caller sets it for trusted proxies (``--xclient-from``)."""
        return self._session.xclient_allowed

    @allow_xclient.setter
    def allow_xclient(self, value: bool) -> None:
        self._session.allow_xclient(value)

    @property
    def reading_body(self) -> bool:
        """Whether the engine is reading a DATA body or the octets of a BDAT chunk."""
        return self.state is _DATA or self.state is _BDAT

    @property
    def in_transaction(self) -> bool:
        """Whether a mail transaction is in progress (MAIL accepted, not yet finished)."""
        return self._session.phase in TRANSACTION_PHASES or self.reading_body

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
        elif self.state is not _CLOSED:
            self._buf.raw += data

    def data_to_send(self) -> bytes:
        """Take the bytes waiting to go to the client."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return out

    @property
    def pending_output(self) -> int:
        """How many bytes :meth:`data_to_send` would return now (the caller caps it)."""
        return self._out_size

    def greet(self, reply: Reply | None = None) -> None:
        """Send the greeting (220 by default), or a rejection (then the session closes).

        Args:
            reply: A 220 greeting, or a 4xx/5xx reply to refuse the connection
                (RFC 5321 §3.1: 554).
        """
        if self.state is not State.CONNECTED:
            raise LocalProtocolError(f"cannot greet in state {self.state.value}")
        if reply is None:
            reply = greeting_reply(self.config)
        self._send(reply, enhanced=False)
        if reply.code == 220:
            self.state = _COMMAND
        else:
            self._close("rejected")

    def close(self, reply: Reply | None = None, *, reason: str = "closed") -> None:
        """End the session from the server's side (timeout, shutdown), sending ``reply``.

        Args:
            reply: What the client gets last (typically a 421), or nothing.
            reason: The close reason recorded in :attr:`session` (``"timeout"``,
                ``"shutdown"`` …); the default is ``"closed"``.
        """
        if self.state is _CLOSED:
            return
        if reply is not None:
            self._send(reply)
        self._pending = None
        self._close(reason)

    def tls_started(self) -> None:
        """Report that the TLS handshake after STARTTLS has completed.

        RFC 3207 §4.2: the server forgets everything the client said before TLS.
        """
        if self.state is not State.STARTTLS:
            raise LocalProtocolError(f"no STARTTLS in progress (state {self.state.value})")
        self.state = _COMMAND
        self._session.tls_started()
        self._body.reset()

    def next_event(self) -> EventOrSentinel:
        """The next event, or :data:`NEED_DATA` / :data:`PAUSED`.

        Raises:
            LocalProtocolError: if the previous event still needs :meth:`respond`.
        """
        if self._pending is not None:
            raise LocalProtocolError(f"answer {type(self._pending).__name__} first")
        if self._events:
            return self._emit(self._events.pop(0))
        while True:
            state = self.state
            if state is _COMMAND or state is _AUTH:
                raw = self._buf.raw
                if not raw:  # what next_line would say, without its work
                    return self._starved()
                if raw[:1] == b"\x16" and state is _COMMAND:
                    # A TLS record (ClientHello) where a command should be: the client
                    # wants implicit TLS. No SMTP command starts with 0x16.
                    self._send(TLS_ON_PLAIN_PORT)
                    return self._emit(self._close("closed"))
                line = self._buf.next_line(self._line_limit())
                if line is None:
                    return self._starved()
                event = self._line(line)
            elif state is _DATA or state is _BDAT:
                event = self._body_step()
                if event is None:
                    return self._starved()
            elif state is _CLOSED:
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
                    return self._starved()
            else:  # CONNECTED
                return PAUSED
            if event is not None:
                return self._emit(event)

    def respond(
        self, reply: Reply | Sequence[Reply] | None = None, *, reason: str = "closed"
    ) -> None:
        """Answer the pending event.

        Args:
            reply: ``None`` for the event's default reply; a :class:`Reply`; or for an
                LMTP :class:`EndOfMessage`, one reply per recipient (a single reply is
                repeated for each).
            reason: The close reason recorded in :attr:`session` if the reply ends the
                session (a 421); the default is ``"closed"``.
        """
        event = self._pending
        if event is None:
            raise LocalProtocolError("no event is waiting for a reply")
        if isinstance(event, EndOfMessage):
            # Checked before the event is dropped: a bad call leaves it pending.
            replies = message_replies(event, reply, lmtp=self.config.lmtp)
            self._pending = None
            self._message_done()
            for r in replies:
                self._send(r)
            if any(r.code == 421 for r in replies):
                self._close(reason)
            return
        assert isinstance(event, Command)
        if reply is None:
            reply = event.default_reply
        elif not isinstance(reply, Reply):
            raise LocalProtocolError(f"expected a Reply, not {reply!r}")
        self._pending = None
        self._apply(event, reply, reason)

    # ------------------------------------------------------------------ internals

    def _emit(self, event: Event) -> Event:
        if event.needs_reply:
            self._pending = event
        return event

    def _close(self, reason: str) -> ConnectionClosed:
        self.state = _CLOSED
        self._session.closed(reason)
        self._body.reset()
        self._auth.cancel()
        self._buf.discard(len(self._buf))
        return ConnectionClosed(reason=reason)

    def _starved(self) -> EventOrSentinel:
        """No complete input: wait for more, or end the session if none will come."""
        if self._eof:
            return self._emit(self._close("eof"))
        return NEED_DATA

    def _send(self, reply: Reply, *, enhanced: bool = True) -> None:
        data = reply.to_bytes(enhanced=enhanced)
        self._out.append(data)
        self._out_size += len(data)

    def _line_limit(self) -> int:
        buf = self._buf.raw
        # RFC 4954 §4: an initial response may make AUTH longer than 512 octets. (While the
        # buffer is under both limits no line can break either: the AUTH look can wait.)
        if self.state is _AUTH or (len(buf) > self._min_limit and buf[:5].upper() == b"AUTH "):
            return self.config.max_auth_line
        return self.config.max_command_line

    def _count_error(self, reply: Reply) -> bool:
        """Count a client error; True when it was one too many (421 sent, session over)."""
        if reply.code not in _BAD_CODES:
            return False
        self._bad_commands += 1
        if self._bad_commands < self.config.max_bad_commands:
            return False
        self._send(TOO_MANY_ERRORS)
        self._close("closed")
        return True

    def _reject(self, line: str, reply: Reply) -> Event:
        """Answer a command with an error the engine decided on."""
        self._send(reply)
        self._count_error(reply)
        return CommandRejected(line=line, reply=reply)

    def _message_done(self) -> None:
        self.state = _COMMAND
        self._body.reset()
        self._session.reset_transaction()

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
        if self.state is _AUTH:
            return self._auth_line(raw)
        outcome = read_command(self.config, self._session, raw)
        if isinstance(outcome, Command):
            return outcome
        if isinstance(outcome, Refused):
            rejected = self._reject(outcome.line, outcome.reply)
            if self.state is _CLOSED:
                return rejected
            if outcome.close is not None:
                self._close(outcome.close)
            elif outcome.data:
                self._body_too_early()
            return rejected
        if isinstance(outcome, ChunkStarted):
            binary = self._session.body == "BINARYMIME"
            self._body.start_chunk(outcome.chunk, outcome.refusal, binary=binary)
            self.state = _BDAT
            return None
        return self._auth_step(self._auth.started(outcome.exchange, outcome.result))

    def _auth_line(self, raw: bytes) -> Event | None:
        try:
            result = self._auth.line(raw)
        except RemoteProtocolError as exc:
            self.state = _COMMAND
            return self._reject("AUTH", exc.reply)
        return self._auth_step(result)

    def _auth_step(self, result: Reply | AuthCredentials) -> Event | None:
        if isinstance(result, Reply):
            # A 334 challenge: the next line is a response (RFC 4954 §4).
            self.state = _AUTH
            self._send(result, enhanced=False)
            return None
        self.state = _COMMAND
        return result

    # ------------------------------------------------------------------ bodies

    def _body_step(self) -> Event | None:
        data, end = self._body.feed(self._buf.raw)
        if data and self.state is _BDAT:
            self._session.received(len(data))
        if end is None:
            return MessageData(data=data) if data else None
        self.state = _COMMAND
        if isinstance(end, MessageRejected):
            self._send(end.reply)
            self._message_done()
        elif isinstance(end, CommandRejected):
            # A refused BDAT chunk, read in full and thrown away (RFC 3030 §2).
            self._send(end.reply)
            if not self._count_error(end.reply) and self.in_transaction:
                # It ends the transaction; later chunks get 503 until RSET.
                self._session.chunk_refused(too_big=end.reply is MSG_TOO_BIG)
        if data:
            self._events.append(end)
            return MessageData(data=data)
        return end

    # ------------------------------------------------------------------ answers

    def _apply(self, event: Command, reply: Reply, reason: str) -> None:
        positive = reply.code < 400
        kind = type(event)
        if kind is Helo or (positive and kind is Xclient):
            # A greeting-like reply (HELO/EHLO, a successful XCLIENT): no enhanced code.
            self._send(reply, enhanced=False)
        elif not (positive and kind is Bdat and isinstance(event, Bdat) and event.last):
            # RFC 3030 §2: BDAT LAST gets one reply, the message's (EndOfMessage's).
            self._send(reply)
        if positive:
            self._bad_commands = 0
        elif self._count_error(reply):
            return
        if reply.code == 421:
            self._close(reason)
            return
        transition = TRANSITIONS.get(kind)
        if transition is not None:
            transition(self._session, event, reply.code)
        if kind in _HAS_EFFECTS:
            self._effects(event, positive, reply.code)

    def _effects(self, event: Command, positive: bool, code: int) -> None:
        """What the engine itself does once a command is answered (the session's facts
        moved in the transition of :data:`~._state.TRANSITIONS`)."""
        if isinstance(event, MailFrom):
            if positive:
                # A new transaction: no BDAT text state of an earlier one carries over.
                self._body.reset()
        elif isinstance(event, Data):
            if positive:
                self._body.start_data(recipients=self._session.recipients)
                self.state = _DATA
            else:
                self._body_too_early()
        elif isinstance(event, Bdat):
            if positive and event.last:
                s = self._session
                end = EndOfMessage(size=s.size, recipients=s.recipients, default_reply=MESSAGE_OK)
                self._events.append(end)
        elif isinstance(event, Quit):
            self._close("quit")
        elif isinstance(event, StartTLS):
            if positive:
                self.state = State.STARTTLS
                self._tls_announced = False
        elif isinstance(event, AuthCredentials) and self._auth.answered(code):
            self._send(TOO_MANY_AUTH)
            self._close("auth-failures")

    def _body_too_early(self) -> None:
        """After a refused DATA: RFC 2920 §3.1, DATA ends a pipelined group, so bytes
        already here are a body sent without waiting for 354; never run them as commands."""
        if self._buf:
            self._send(BAD_PIPELINING)
            self._close("closed")


#: Commands whose answer makes the engine act (:meth:`Engine._effects`).
_HAS_EFFECTS: Final = frozenset({MailFrom, Data, Bdat, Quit, StartTLS, AuthCredentials})

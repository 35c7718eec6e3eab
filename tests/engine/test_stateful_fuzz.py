"""A random client against the engine, step by step, checked after every step.

Theory of operation: a hypothesis :class:`RuleBasedStateMachine` plays the client. Each
rule sends something (a plausible or broken command, a DATA body, a BDAT chunk, garbage,
end of file), cut at random points, and the machine then plays the server: it pulls
every event, answers those that need it (with the default or a random reply, as a hook
would), and reads what the engine wrote after *each* event. Alongside it keeps a small
model of the session: whether a mail transaction is open, how many recipients it has.

After every event and every step it checks:

* every line written is a well-formed reply line (RFC 5321 §4.2: code, then "-" or SP
  and text, or the bare code), every multi-line reply keeps one code, and the output
  never ends in the middle of a line;
* each event got exactly the replies it calls for: one per answered command, one per
  command the engine refused itself, one per recipient after an LMTP message, none
  for message data (plus, at most, the 421 of a closing session);
* ``engine.in_transaction`` and ``engine.session.recipients`` agree with the model;
* ``engine.buffered`` stays within the bound of the state it waits in;
* no exception escapes, and a closed session stays closed and silent.
"""

from __future__ import annotations

import base64
import importlib.util
import random
import re
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from trio_smtp.engine import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Bdat,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Engine,
    EngineConfig,
    Event,
    Helo,
    MailFrom,
    MessageData,
    MessageRejected,
    ProxyHeader,
    RcptTo,
    Reply,
    Rset,
    State,
    TLSUpgrade,
    Xclient,
)

#: RFC 5321 §4.2: Reply-line = *( code "-" [text] CRLF ) code [ SP text ] CRLF.
REPLY_LINE: Final = re.compile(rb"(\d{3})(?:([ -])(.*))?")
#: How far a DATA reader may hold back bytes that could start "<CRLF>.<CRLF>".
DATA_HOLD_BACK: Final = 4
V2_MAX: Final = 16 + 2048

CONFIGS: Final = [
    EngineConfig(),
    EngineConfig(lmtp=True, max_recipients=3),
    EngineConfig(
        starttls=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_insecure=True,
        max_message_size=60,
        max_data_line=30,
        max_command_line=80,
        max_auth_line=100,
        max_recipients=2,
        max_bad_commands=5,
        max_auth_failures=2,
    ),
    EngineConfig(proxy_protocol=True, bare_line_endings="reject", max_message_size=200),
    EngineConfig(require_tls=True, starttls=True, auth_required=True, auth_mechanisms=("PLAIN",)),
]

COMMANDS: Final = [
    b"EHLO client.example",
    b"HELO client.example",
    b"LHLO client.example",
    b"EHLO",
    b"MAIL FROM:<ann@example.org>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<ann@example.org> SIZE=20 BODY=8BITMIME",
    b"MAIL FROM:<ann@example.org> BODY=BINARYMIME",
    b"MAIL FROM:<ann@example.org> SIZE=999999999999",
    "MAIL FROM:<ünï@example.org> SMTPUTF8".encode(),
    b"MAIL FROM:ann@example.org",
    b"MAIL TO:<ann@example.org>",
    b"RCPT TO:<bob@example.net>",
    b"RCPT TO:<carl@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carl+40example.net",
    b"RCPT TO:<postmaster>",
    b"RCPT TO:<>",
    b"RCPT TO:<bob@example.net> FOO=BAR",
    b"DATA",
    b"DATA now",
    b"RSET",
    b"NOOP",
    b"NOOP anything at all",
    b"VRFY bob",
    b"EXPN staff",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"AUTH CRAM-MD5",
    b"AUTH PLAIN " + base64.b64encode(b"\x00ann\x00secret"),
    b"AUTH PLAIN not-base64!",
    base64.b64encode(b"ann"),
    b"*",
    b"TURN",
    b"XYZZY",
    b"",
    b"   ",
    b"mail from:<ann@example.org>",
    b"QUIT",
    b"QUIT now",
    b"GET / HTTP/1.1",
    b"XCLIENT ADDR=192.0.2.1 NAME=client.example LOGIN=ann",
    b"XCLIENT NAME=[TEMPUNAVAIL] HELO=[UNAVAILABLE]",
    b"XCLIENT FOO=bar",
    b"BDAT 0005 LAST",
    b"BDAT 5  LAST",
    "ma\u0131l FROM:<ann@example.org>".encode(),
]
ENDINGS: Final = [b"\r\n"] * 6 + [b"\n", b"\r", b"", b"\r\r\n", b"\x00\r\n"]

REPLIES: Final = [
    None,
    None,
    None,
    Reply(250, "2.0.0 fine"),
    Reply(251, "2.1.5 will forward"),
    Reply(450, "4.2.0 busy"),
    Reply(451, "4.3.0 local error"),
    Reply(452, "4.5.3 too many"),
    Reply(550, "5.7.1 no\nnot you\nnot today"),
    Reply(554, "5.6.0 refused"),
    Reply(421, "4.3.2 going away"),
]
AUTH_REPLIES: Final = [
    Reply(235, "2.7.0 welcome"),
    Reply(235, "2.7.0 welcome"),
    Reply(235, "2.7.0 welcome"),
    None,
    Reply(535, "5.7.8 no"),
    Reply(454, "4.7.0 try later"),
]
DATA_REPLIES: Final = [
    None,
    None,
    Reply(354, "go ahead"),
    Reply(451, "4.3.0 later"),
    Reply(554, "no"),
]

BODY_LINES: Final = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".hidden", b"Subject: x", b"MAIL FROM:<e@x>"]),
        st.binary(max_size=40).map(lambda b: b.replace(b"\r\n.\r\n", b"")),
    ),
    max_size=8,
)
LINE_BREAKS: Final = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
CUTS: Final = st.lists(st.integers(min_value=0, max_value=400), max_size=5)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = zip([0, *points], [*points, len(data)], strict=True)
    return [data[a:b] for a, b in bounds if b > a]


def _replies(data: bytes) -> list[list[bytes]]:
    """Parse a complete run of replies; assert every line and reply is well formed."""
    if not data:
        return []
    assert data.endswith(b"\r\n"), f"output stops mid-line: {data[-60:]!r}"
    replies: list[list[bytes]] = []
    pending: list[bytes] = []
    for line in data[:-2].split(b"\r\n"):
        match = REPLY_LINE.fullmatch(line)
        assert match is not None, f"malformed reply line {line!r}"
        assert b"\r" not in line, f"bare CR in reply line {line!r}"
        assert b"\n" not in line, f"bare LF in reply line {line!r}"
        if pending:
            assert line[:3] == pending[0][:3], f"code changes inside a reply: {[*pending, line]}"
        pending.append(line)
        if match.group(2) != b"-":
            replies.append(pending)
            pending = []
    assert not pending, f"multi-line reply never finished: {pending!r}"
    return replies


class EngineSession(RuleBasedStateMachine):
    """One engine session with a random client; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.config = EngineConfig()
        self.engine = Engine(self.config)
        self.rnd = random.Random(0)
        self.closed = False
        self.eof = False
        #: The model: is a transaction open, and how many recipients has it.
        self.in_transaction = False
        self.recipients = 0
        self.messages = 0

    # ------------------------------------------------------------------ playing the server

    @initialize(config=st.sampled_from(CONFIGS), seed=st.integers(0, 2**32 - 1), cuts=CUTS)
    def start(self, config: EngineConfig, seed: int, cuts: list[int]) -> None:
        self.config = config
        # Odd seeds: a client trusted to send XCLIENT.
        self.engine = Engine(config, allow_xclient=bool(seed & 1))
        self.rnd = random.Random(seed)
        if config.proxy_protocol:
            header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"
            for piece in _split(header, cuts):
                self.engine.receive_data(piece)
                event = self.engine.next_event()
                if event is NEED_DATA:
                    continue
                assert isinstance(event, ProxyHeader), event
            assert self.engine.next_event() is PAUSED
        self.engine.greet()
        (greeting,) = _replies(self.engine.data_to_send())
        assert greeting[0].startswith(b"220 ")

    def _answer(self, event: Command | EndOfMessage) -> Reply | list[Reply] | None:
        if isinstance(event, AuthCredentials):
            # The default for AUTH is a refusal: mostly accept, to get past auth_required.
            return self.rnd.choice(AUTH_REPLIES)
        if self.rnd.random() < 0.7:
            return None  # the default reply, as a server without hooks gives
        if isinstance(event, EndOfMessage):
            reply = self.rnd.choice(REPLIES)
            if self.config.lmtp and event.recipients > 1 and self.rnd.random() < 0.5:
                return [self.rnd.choice(REPLIES) or Reply(250, "2.0.0 ok")] * event.recipients
            return reply
        if isinstance(event, Data):
            return self.rnd.choice(DATA_REPLIES)
        return self.rnd.choice(REPLIES)

    def _pump(self) -> None:
        """Pull every event, answer it, and check what it wrote; stop at NEED_DATA."""
        engine = self.engine
        for _ in range(100_000):
            was_closed = self.closed
            event = engine.next_event()
            if event is PAUSED:
                if engine.state is State.STARTTLS:
                    # The TLS handshake is the caller's job; pretend it succeeded.
                    engine.tls_started()
                    self.in_transaction = False
                    self.recipients = 0
                    assert engine.data_to_send() == b""
                    continue
                raise AssertionError(f"paused in state {engine.state}")
            if event is NEED_DATA:
                assert not self.closed
                written = [r for r in _replies(engine.data_to_send()) if r[0][:3] != b"334"]
                assert written == [], f"replies without an event: {written!r}"
                self._check_buffer()
                return
            assert isinstance(event, Event), event
            if isinstance(event, ConnectionClosed):
                written = _replies(engine.data_to_send())
                # Closing may say one last thing (HTTP request, STARTTLS injection: 421).
                assert len(written) <= 1, written
                assert all(r[0][:3] == b"421" for r in written), written
                assert engine.state is State.CLOSED
                assert engine.buffered == 0
                self.closed = True
                if was_closed:
                    assert written == []
                # A closed session stays closed.
                assert isinstance(engine.next_event(), ConnectionClosed)
                return
            assert not was_closed, f"{event!r} after the session closed"
            self._one_event(event)
        raise AssertionError("the engine produced events forever")

    def _one_event(self, event: Event) -> None:
        engine = self.engine
        expected = 0
        answer: Reply | list[Reply] | None = None
        if isinstance(event, Command | EndOfMessage):
            assert engine.awaiting_reply
            answer = self._answer(event)
            engine.respond(answer)
            assert not engine.awaiting_reply
            expected = (
                event.recipients if isinstance(event, EndOfMessage) and self.config.lmtp else 1
            )
            if isinstance(event, Bdat) and event.last:
                # RFC 3030 §2: an accepted BDAT LAST is answered by its EndOfMessage.
                given = answer if isinstance(answer, Reply) else event.default_reply
                if given.code < 400:
                    expected = 0
        elif isinstance(event, CommandRejected | MessageRejected):
            expected = 1
        else:
            assert isinstance(event, MessageData | TLSUpgrade), event
        written = [r for r in _replies(engine.data_to_send()) if r[0][:3] != b"334"]
        if engine.state is State.CLOSED and len(written) == expected + 1:
            # The session ended on this event and said why (too many errors, AUTH
            # failures, a body pipelined after a refused DATA).
            assert written[-1][0][:3] == b"421", written
            written = written[:-1]
        assert len(written) == expected, (event, answer, written)
        self._update_model(event, answer, written)

    def _update_model(
        self, event: Event, answer: Reply | list[Reply] | None, written: list[list[bytes]]
    ) -> None:
        positive = bool(written) and written[0][0][:1] in (b"2", b"3")
        if isinstance(event, Bdat) and event.last and not written:
            positive = True  # accepted; its reply is the EndOfMessage's
        closed = self.engine.state is State.CLOSED
        if isinstance(event, MailFrom) and positive:
            self.in_transaction = True
            self.recipients = 0
        elif isinstance(event, RcptTo) and positive:
            self.recipients += 1
        elif isinstance(event, Helo | Rset | Xclient) and (positive or isinstance(event, Rset)):
            self.in_transaction = False
            self.recipients = 0
        elif isinstance(event, Bdat) and not positive:
            self.in_transaction = False
            self.recipients = 0
        elif isinstance(event, EndOfMessage | MessageRejected):
            self.in_transaction = False
            self.recipients = 0
            self.messages += isinstance(event, EndOfMessage)
        if isinstance(event, Data) and positive and not closed:
            assert self.engine.state is State.DATA
        if not closed:
            assert self.engine.in_transaction == self.in_transaction, (event, written)
            assert self.engine.session.recipients == self.recipients, (event, written)
            assert self.recipients <= self.config.max_recipients

    def _check_buffer(self) -> None:
        engine = self.engine
        state = engine.state
        if state is State.DATA:
            bound = DATA_HOLD_BACK
        elif state is State.BDAT or state is State.CLOSED:
            bound = 0
        else:
            bound = max(self.config.max_command_line, self.config.max_auth_line)
        assert engine.buffered <= bound, (state, engine.buffered)

    def _send(self, data: bytes, cuts: list[int]) -> None:
        for piece in _split(data, cuts):
            self.engine.receive_data(piece)
            if self.closed:
                # Bytes after the end are ignored: no event, no reply.
                assert isinstance(self.engine.next_event(), ConnectionClosed)
                assert self.engine.data_to_send() == b""
                assert self.engine.buffered == 0
            else:
                self._pump()

    # ------------------------------------------------------------------ the client's moves

    @precondition(lambda self: not self.eof)
    @rule(
        command=st.sampled_from(COMMANDS) | st.binary(max_size=30),
        ending=st.sampled_from(ENDINGS),
        cuts=CUTS,
    )
    def command(self, command: bytes, ending: bytes, cuts: list[int]) -> None:
        self._send(command + ending, cuts)

    def _next_step(self, chunking: bool, last: bool, cuts: list[int]) -> None:
        """The next command of a well-behaved client, to get deep into transactions."""
        engine = self.engine
        if engine.state is State.DATA:
            data = b"Subject: hi\r\n\r\nhello\r\n.\r\n"
        elif engine.state is State.AUTH:
            data = base64.b64encode(b"\x00ann\x00secret") + b"\r\n"
        elif engine.session.helo_name is None:
            data = b"LHLO c.example\r\n" if self.config.lmtp else b"EHLO c.example\r\n"
        elif self.config.require_tls and not engine.session.tls_active:
            data = b"STARTTLS\r\n"
        elif (
            self.config.auth_mechanisms
            and engine.session.authenticated_as is None
            and not self.in_transaction
            and (chunking or self.config.auth_required)
        ):
            data = b"AUTH PLAIN\r\n" if last else b"AUTH LOGIN YW5u\r\n"
        elif not self.in_transaction:
            data = b"MAIL FROM:<ann@example.org>\r\n"
        elif self.recipients == 0 or (self.recipients < 3 and not last):
            data = b"RCPT TO:<r%d@example.net>\r\n" % self.recipients
        elif chunking:
            data = b"BDAT 5%s\r\nhello" % (b" LAST" if last else b"")
        else:
            data = b"DATA\r\n"
        self._send(data, cuts)

    # Rules are drawn uniformly: two entry points double the weight of good steps, so
    # that sessions get deep into transactions before garbage ends them.
    @precondition(lambda self: not self.eof)
    @rule(chunking=st.booleans(), last=st.booleans(), cuts=CUTS)
    def next_step(self, chunking: bool, last: bool, cuts: list[int]) -> None:
        self._next_step(chunking, last, cuts)

    @precondition(lambda self: not self.eof)
    @rule(chunking=st.booleans(), last=st.booleans(), cuts=CUTS)
    def another_step(self, chunking: bool, last: bool, cuts: list[int]) -> None:
        self._next_step(chunking, last, cuts)

    @precondition(lambda self: not self.eof)
    @rule(commands=st.lists(st.sampled_from(COMMANDS), min_size=2, max_size=6), cuts=CUTS)
    def pipelined(self, commands: list[bytes], cuts: list[int]) -> None:
        self._send(b"".join(c + b"\r\n" for c in commands), cuts)

    @precondition(lambda self: not self.eof)
    @rule(lines=BODY_LINES, breaks=st.lists(LINE_BREAKS, min_size=8, max_size=8), cuts=CUTS)
    def message_body(self, lines: list[bytes], breaks: list[bytes], cuts: list[int]) -> None:
        body = b"".join(line + brk for line, brk in zip(lines, breaks, strict=False))
        self._send(body + b".\r\n", cuts)

    @precondition(lambda self: not self.eof)
    @rule(size=st.integers(0, 80), last=st.booleans(), extra=st.binary(max_size=5), cuts=CUTS)
    def bdat_chunk(self, size: int, last: bool, extra: bytes, cuts: list[int]) -> None:
        command = b"BDAT %d%s\r\n" % (size, b" LAST" if last else b"")
        self._send(command + self.rnd.randbytes(size) + extra, cuts)

    @precondition(lambda self: not self.eof)
    @rule(length=st.integers(1, 3), cuts=CUTS)
    def long_line(self, length: int, cuts: list[int]) -> None:
        # Around and far past the command-line bound.
        limit = self.config.max_command_line
        size = {1: limit - 2, 2: limit - 1, 3: limit * 40}[length]
        self._send(b"NOOP " + b"x" * size + b"\r\n", cuts)

    @precondition(lambda self: not self.eof)
    @rule(data=st.binary(min_size=1, max_size=300), cuts=CUTS)
    def garbage(self, data: bytes, cuts: list[int]) -> None:
        self._send(data, cuts)

    @precondition(lambda self: not self.eof)
    @rule()
    def end_of_file(self) -> None:
        self.eof = True
        self.engine.receive_data(b"")
        self._pump()
        assert self.closed

    @rule()
    def poll(self) -> None:
        """Ask for an event with no new input: nothing new may happen."""
        if self.closed:
            assert isinstance(self.engine.next_event(), ConnectionClosed)
        else:
            self._pump()

    # ------------------------------------------------------------------ always true

    @invariant()
    def no_event_is_left_unanswered(self) -> None:
        assert not self.engine.awaiting_reply

    @invariant()
    def closed_means_closed(self) -> None:
        assert self.closed == (self.engine.state is State.CLOSED)
        if self.closed:
            assert self.engine.data_to_send() == b""


EngineSession.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_a_random_client_never_breaks_the_engine = EngineSession.TestCase


def test_empty_sasl_challenge_keeps_its_space() -> None:
    """RFC 4954 §8: continue-req = "334" SP [base64] CRLF, even with nothing after the SP.

    Parsers such as Go's net/textproto reject a reply line shorter than four octets.
    """
    engine = Engine(EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True))
    engine.greet()
    engine.receive_data(b"EHLO client.example\r\nAUTH PLAIN\r\n")
    while (event := engine.next_event()) is not NEED_DATA:
        assert isinstance(event, Command)
        engine.respond()
    assert engine.data_to_send().endswith(b"\r\n334 \r\n")


# ---------------------------------------------------------------------- the atheris harness


def _atheris_harness() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_engine.py"
    spec = importlib.util.spec_from_file_location("fuzz_engine", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HARNESS: Final = _atheris_harness()


@pytest.mark.parametrize("name", sorted(HARNESS.SEEDS))
def test_the_fuzz_harness_passes_its_seed_sessions(name: str) -> None:
    """The seeds are real sessions; the harness must accept them, or fuzzing starts broken."""
    HARNESS.one_input(HARNESS.SEEDS[name])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_the_fuzz_harness_finds_nothing_in_random_input(data: bytes) -> None:
    HARNESS.one_input(data)


def test_the_fuzz_harness_catches_a_malformed_reply() -> None:
    """The harness's checks are live: a reply line without a code is a finding."""
    with pytest.raises(AssertionError, match="malformed reply line"):
        HARNESS._check_output(b"250 ok\r\nhello\r\n")
    with pytest.raises(AssertionError, match="never finished"):
        HARNESS._check_output(b"250-ok\r\n")

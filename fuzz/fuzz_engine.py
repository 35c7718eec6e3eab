"""Coverage-guided fuzzing of the sans-IO engine with atheris (libFuzzer).

Run it for a bounded time (the nox ``fuzz`` session does this)::

    python -m pip install atheris
    python fuzz/fuzz_engine.py -max_total_time=60

Any libFuzzer flag works (``-runs=N``, ``-jobs=2``, a corpus directory). Without a
corpus directory the harness uses ``fuzz/corpus/``, seeding it with a few real sessions
first; new inputs libFuzzer finds are kept there (and ignored by git), crashes go to
``fuzz/artifacts/``. Reproduce a crash with ``python fuzz/fuzz_engine.py <crash-file>``.

Theory of operation: the first three octets of an input choose the engine
configuration, the seed of the answers a "server" gives (default replies, refusals,
421s, LMTP reply lists) and how the rest is cut into reads; the rest is what the client
sends, then end of file. The harness plays the server as the Trio layer would (greet,
answer every event, pretend the TLS handshake succeeded) and asserts, after every
read, that every reply line is well formed and the receive buffer stays within its
bound, and at the end that the session is closed. Any exception is a finding: the
engine must turn every input into replies, never raise.

:func:`one_input` does not need atheris: the test suite runs it over :data:`SEEDS`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import sys
from typing import Any, Final

try:
    import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]
except ImportError:  # the harness still imports (and runs its seeds) without atheris
    atheris = None


def _instrumented() -> contextlib.AbstractContextManager[Any]:
    # Only a fuzzing run instruments; imported by the test suite, the engine is as is.
    if atheris is None or __name__ != "__main__":
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["trio_smtp"])  # type: ignore[no-any-return]


with _instrumented():
    from trio_smtp.engine import (
        NEED_DATA,
        PAUSED,
        AuthCredentials,
        Command,
        ConnectionClosed,
        Data,
        EndOfMessage,
        Engine,
        EngineConfig,
        Event,
        Reply,
        State,
    )

HERE: Final = os.path.dirname(os.path.abspath(__file__))
#: RFC 5321 §4.2: code, then "-" or SP and text, or the bare code.
REPLY_LINE: Final = re.compile(rb"\d{3}(?:[ -].*)?")
#: Octets the DATA reader may hold back while it cannot tell if "<CRLF>.<CRLF>" starts.
DATA_HOLD_BACK: Final = 4
#: The longest PROXY v2 header the engine waits for.
PROXY_MAX: Final = 16 + 2048

CONFIGS: Final = (
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
    EngineConfig(chunking=False, pipelining=False, smtputf8=False, dsn=False, max_data_line=None),
)
REPLIES: Final = (
    None,
    None,
    None,
    None,
    Reply(250, "2.0.0 fine"),
    Reply(235, "2.7.0 welcome"),
    Reply(354, "go ahead"),
    Reply(451, "4.3.0 later"),
    Reply(550, "5.7.1 no\nnot you"),
    Reply(421, "4.3.2 going away"),
)


def _check_output(data: bytes) -> None:
    if not data:
        return
    assert data.endswith(b"\r\n"), f"output stops mid-line: {data[-60:]!r}"
    code = b""
    for line in data[:-2].split(b"\r\n"):
        assert REPLY_LINE.fullmatch(line), f"malformed reply line {line!r}"
        # RFC 5321 §4.5.3.1.5: at most 512 octets with the CRLF.
        assert len(line) + 2 <= 512, f"reply line of {len(line) + 2} octets"
        if code:
            assert line[:3] == code, f"code changes inside a reply: {line!r}"
        code = line[:3] if line[3:4] == b"-" else b""
    assert not code, "a multi-line reply never finished"


def _bound(engine: Engine) -> int:
    state = engine.state
    config = engine.config
    if state is State.DATA:
        return DATA_HOLD_BACK
    if state is State.BDAT or state is State.CLOSED:
        return 0
    if state is State.PROXY:
        return PROXY_MAX
    return max(config.max_command_line, config.max_auth_line)


def _answer(event: Event, rnd: random.Random, lmtp: bool) -> Reply | list[Reply] | None:
    reply = rnd.choice(REPLIES)
    if isinstance(event, EndOfMessage) and lmtp and event.recipients > 1 and rnd.random() < 0.3:
        return [reply or Reply(250, "2.0.0 ok")] * event.recipients
    if isinstance(event, AuthCredentials) and reply is None and rnd.random() < 0.5:
        return Reply(235, "2.7.0 welcome")
    if isinstance(event, Data) and reply is not None and reply.code == 250:
        return Reply(354, "go ahead")
    return reply


def _pump(engine: Engine, rnd: random.Random) -> bool:
    """Handle every event until the engine needs data; return whether it closed."""
    lmtp = engine.config.lmtp
    for _ in range(1_000_000):
        event = engine.next_event()
        if event is NEED_DATA:
            break
        if event is PAUSED:
            if engine.state is State.CONNECTED:
                engine.greet()
            elif engine.state is State.STARTTLS:
                engine.tls_started()
            else:
                raise AssertionError(f"paused in state {engine.state}")
            continue
        if isinstance(event, ConnectionClosed):
            _check_output(engine.data_to_send())
            assert engine.state is State.CLOSED
            assert isinstance(engine.next_event(), ConnectionClosed)
            return True
        if isinstance(event, Command | EndOfMessage):
            engine.respond(_answer(event, rnd, lmtp))
        assert not engine.awaiting_reply, event
    else:
        raise AssertionError("the engine produced events forever")
    _check_output(engine.data_to_send())
    assert engine.buffered <= _bound(engine), (engine.state, engine.buffered)
    return False


def one_input(data: bytes) -> None:
    """Run one fuzz input through a fresh engine; raise on any finding."""
    if len(data) < 3:
        return
    config = CONFIGS[data[0] % len(CONFIGS)]
    rnd = random.Random(data[1])
    step = data[2] * 3 or len(data)  # 0: everything in one read
    payload = data[3:]
    # An odd answer seed makes the client one allowed to send XCLIENT.
    engine = Engine(config, allow_xclient=bool(data[1] & 1))
    if not config.proxy_protocol:
        engine.greet()
    closed = False
    for i in range(0, len(payload), step):
        engine.receive_data(payload[i : i + step])
        if _pump(engine, rnd):
            closed = True
            break
    if not closed:
        engine.receive_data(b"")
        assert _pump(engine, rnd), "end of file did not close the session"
    assert engine.data_to_send() == b""


def _session(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


#: Real sessions to start from: (config index, answer seed, read step) + client bytes.
SEEDS: Final = {
    "smtp": b"\x00\x00\x00"
    + _session(
        b"EHLO client.example",
        b"MAIL FROM:<ann@example.org> SIZE=40 BODY=8BITMIME",
        b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS ORCPT=rfc822;bob+40example.net",
        b"DATA",
        b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.",
        b"QUIT",
    ),
    "lmtp-bdat": b"\x01\x07\x02"
    + _session(b"LHLO client.example", b"MAIL FROM:<>", b"RCPT TO:<a@x>", b"RCPT TO:<b@x>")
    + b"BDAT 5\r\nhelloBDAT 0 LAST\r\nRSET\r\n",
    "auth-starttls": b"\x02\x03\x01"
    + _session(
        b"EHLO client.example",
        b"AUTH PLAIN " + base64.b64encode(b"\x00ann\x00secret"),
        b"AUTH LOGIN",
        base64.b64encode(b"ann"),
        base64.b64encode(b"secret"),
        b"STARTTLS",
        b"EHLO again.example",
    ),
    "proxy-v1-smuggling": b"\x03\x05\x00"
    + b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"
    + _session(b"HELO c", b"MAIL FROM:<a@x>", b"RCPT TO:<b@x>", b"DATA")
    + b"hi\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
    "proxy-v2": b"\x03\x01\x05"
    + b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\xc6\x33\x64\x01\x9c\x40\x00\x19"
    + _session(b"EHLO c", b"NOOP"),
    "xclient": b"\x00\x03\x00"
    + _session(
        b"EHLO proxy.example",
        b"XCLIENT NAME=client.example ADDR=IPV6:2001:db8::1 PORT=4242 LOGIN=ann+2Bx",
        b"XCLIENT NAME=[TEMPUNAVAIL] HELO=[UNAVAILABLE] PROTO=ESMTP",
        b"EHLO client.example",
        b"MAIL FROM:<a@x>",
        b"XCLIENT ADDR=192.0.2.1",
        b"BDAT 000003 LAST",
    )
    + b"abc",
    "garbage-and-http": b"\x05\x09\x01" + bytes(range(256)) + b"\r\nGET / HTTP/1.1\r\n",
}


def _main(argv: list[str]) -> None:
    if atheris is None:
        sys.exit("atheris is not installed: python -m pip install atheris")
    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if not paths:
        corpus = os.path.join(HERE, "corpus")
        os.makedirs(corpus, exist_ok=True)
        for name, seed in SEEDS.items():
            path = os.path.join(corpus, f"seed-{name}")
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(seed)
        paths = [corpus]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        artifacts = os.path.join(HERE, "artifacts")
        os.makedirs(artifacts, exist_ok=True)
        flags.append(f"-artifact_prefix={artifacts}{os.sep}")
    atheris.Setup([argv[0], *flags, *paths], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _main(sys.argv)

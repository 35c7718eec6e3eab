"""Property tests: chunking never matters, the engine never raises, memory stays bounded,
and DATA bodies match a line-by-line reference model."""

from __future__ import annotations

import base64
import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_smtp.engine import (
    PAUSED,
    ConnectionClosed,
    EndOfMessage,
    EngineConfig,
    Event,
    MailFrom,
    Reply,
    State,
)

from ._helpers import Answerer, Driver, default_answer, merge_message_data

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIGS = [
    EngineConfig(),
    EngineConfig(lmtp=True),
    EngineConfig(
        starttls=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_insecure=True,
        max_message_size=40,
        max_data_line=20,
        max_command_line=64,
        max_auth_line=128,
        max_recipients=2,
        max_bad_commands=4,
    ),
    EngineConfig(proxy_protocol=True, bare_line_endings="reject"),
    EngineConfig(require_tls=True, starttls=True, auth_required=True, auth_mechanisms=("PLAIN",)),
]

PLAUSIBLE = [
    b"EHLO client.example",
    b"HELO client.example",
    b"LHLO client.example",
    b"MAIL FROM:<a@example.org>",
    b"MAIL FROM:<> BODY=BINARYMIME",
    b"MAIL FROM:<a@b> SIZE=10 RET=FULL ENVID=x+2By",
    "MAIL FROM:<ü@b> SMTPUTF8".encode(),
    b"RCPT TO:<b@example.net>",
    b"RCPT TO:<postmaster> NOTIFY=SUCCESS ORCPT=rfc822;a+40b",
    b"DATA",
    b"BDAT 4",
    b"BDAT 0 LAST",
    b"BDAT 3 LAST",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY bob",
    b"EXPN list",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"AUTH PLAIN " + base64.b64encode(b"\x00user\x00pass"),
    base64.b64encode(b"user"),
    b"*",
    b".",
    b"..",
    b"",
    b"GET / HTTP/1.1",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 25",
]
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\n.\r\n", b"\n.\n"]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def drive(config: EngineConfig, chunks: list[bytes], answer: Answerer = default_answer) -> Driver:
    """Feed chunks like a server would, completing TLS and PROXY steps as they come."""
    driver = Driver(config, answer=answer, greet=not config.proxy_protocol)
    bound = max(config.max_command_line, config.max_auth_line)
    for chunk in chunks:
        if driver.closed is not None:
            break
        if not chunk:
            continue
        driver.feed(chunk)
        while driver.stopped_on is PAUSED:
            if driver.engine.state is State.CONNECTED:
                driver.engine.greet()
            elif driver.engine.state is State.STARTTLS:
                driver.engine.tls_started()
            driver.pump()
        assert driver.engine.buffered <= bound + len(chunk)
    if driver.closed is None:
        driver.eof()
        assert driver.closed is not None
    return driver


# ---------------------------------------------------------------- no input raises


@SETTINGS
@given(
    config=st.sampled_from(CONFIGS),
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_random_bytes_never_raise_and_stay_bounded(
    config: EngineConfig, data: bytes, cuts: list[int]
) -> None:
    driver = drive(config, split(data, cuts))
    assert isinstance(driver.closed, ConnectionClosed)


@st.composite
def plausible_input(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.one_of(
                st.tuples(st.sampled_from(PLAUSIBLE), st.sampled_from(ENDINGS)).map(
                    lambda t: t[0] + t[1]
                ),
                st.binary(max_size=20),
            ),
            max_size=40,
        )
    )
    return b"".join(parts)


@SETTINGS
@given(
    config=st.sampled_from(CONFIGS),
    data=plausible_input(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_plausible_commands_mixed_with_garbage_never_raise(
    config: EngineConfig, data: bytes, cuts: list[int]
) -> None:
    driver = drive(config, split(data, cuts))
    assert isinstance(driver.closed, ConnectionClosed)


REPLIES = [
    None,
    None,
    Reply(250, "2.0.0 fine"),
    Reply(235, "2.7.0 welcome"),
    Reply(354, "go"),
    Reply(451, "4.3.0 later"),
    Reply(550, "no"),
    Reply(554, "5.7.1 refused\nfor policy reasons"),
    Reply(421, "4.3.2 bye"),
]


@SETTINGS
@given(
    config=st.sampled_from(CONFIGS),
    data=plausible_input(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    rnd=st.randoms(use_true_random=False),
)
def test_any_reply_from_the_caller_never_breaks_the_engine(
    config: EngineConfig, data: bytes, cuts: list[int], rnd: random.Random
) -> None:
    def answer(event: Event) -> Reply | None:
        return rnd.choice(REPLIES)

    driver = drive(config, split(data, cuts), answer)
    assert isinstance(driver.closed, ConnectionClosed)
    # Every reply line on the wire is well formed.
    for line in driver.output.split(b"\r\n")[:-1]:
        assert re.fullmatch(rb"[2-5]\d\d([ -].*)?", line), line


# ---------------------------------------------------------------- chunking never matters

ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
ADDRESS = st.builds(lambda a, b: f"{a}@{b}.example", ATOM, ATOM)
BODY_LINE = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from([".", "é"]),
    max_size=30,
)


@st.composite
def valid_session(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid pipelined session and the content of each of its messages."""
    wire = [b"EHLO " + draw(ATOM).encode() + b"\r\n"]
    contents = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        for extra in draw(st.lists(st.sampled_from([b"NOOP", b"RSET", b"VRFY x"]), max_size=2)):
            wire.append(extra + b"\r\n")
        use_data = draw(st.booleans())
        # BDAT chunks here are any octets, so the body is BINARYMIME (no text rules).
        body = b"" if use_data else b" BODY=BINARYMIME"
        wire.append(f"MAIL FROM:<{draw(ADDRESS)}>".encode() + body + b"\r\n")
        for rcpt in draw(st.lists(ADDRESS, min_size=1, max_size=3)):
            wire.append(f"RCPT TO:<{rcpt}>".encode() + b"\r\n")
        if use_data:
            lines = [line.encode() for line in draw(st.lists(BODY_LINE, max_size=8))]
            content = b"".join(line + b"\r\n" for line in lines)
            stuffed = b"".join(
                (b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines
            )
            wire.append(b"DATA\r\n" + stuffed + b".\r\n")
        else:
            chunks = draw(st.lists(st.binary(max_size=40), max_size=4))
            content = b"".join(chunks)
            for chunk in chunks:
                wire.append(b"BDAT %d\r\n" % len(chunk) + chunk)
            wire.append(b"BDAT 0 LAST\r\n")
        contents.append(content)
    if draw(st.booleans()):
        wire.append(b"QUIT\r\n")
    return b"".join(wire), contents


def message_contents(driver: Driver) -> list[bytes]:
    out, current = [], b""
    for item in merge_message_data(driver.events):
        if isinstance(item, bytes):
            current += item
        elif isinstance(item, EndOfMessage):
            assert item.size == len(current)
            out.append(current)
            current = b""
    return out


@SETTINGS
@given(
    session=valid_session(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_any_split_of_a_pipelined_session_gives_the_same_events_and_output(
    session: tuple[bytes, list[bytes]], cuts: list[int]
) -> None:
    data, contents = session
    whole = Driver()
    whole.feed(data)
    assert message_contents(whole) == contents
    assert b"5.5." not in whole.output  # a valid session draws no error
    pieces = Driver()
    pieces.feed_chunks(split(data, cuts))
    assert pieces.output == whole.output
    assert merge_message_data(pieces.events) == merge_message_data(whole.events)
    dribble = Driver()
    dribble.feed_chunks([data[i : i + 1] for i in range(len(data))])
    assert dribble.output == whole.output
    assert merge_message_data(dribble.events) == merge_message_data(whole.events)


# ---------------------------------------------------------------- DATA against a reference model

BODY_ALPHABET = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"xyz", b"\r\n.", b"\x00", b"\xff"]
)


def reference(raw: bytes, *, reject_bare: bool) -> bytes | None:
    """RFC 5321 §4.5.2 and §4.1.1.4 done naively; ``None`` when the message is refused."""
    bare = raw.count(b"\r") != raw.count(b"\r\n") or raw.count(b"\n") != raw.count(b"\r\n")
    if bare and reject_bare:
        return None
    content = raw[1:] if raw.startswith(b".") else raw
    content = content.replace(b"\r\n.", b"\r\n")
    return re.sub(rb"\r\n|\r|\n", b"\r\n", content)


@SETTINGS
@given(
    pieces=st.lists(BODY_ALPHABET, max_size=30),
    reject=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_data_body_matches_the_reference_model(
    pieces: list[bytes], reject: bool, cuts: list[int]
) -> None:
    body = b"".join(pieces) + b"\r\n"
    end = (b"\r\n" + body).find(b"\r\n.\r\n")
    if end >= 0:
        body = body[:end] + b"\r\n"  # keep only what comes before a real terminator
    config = EngineConfig(bare_line_endings="reject" if reject else "normalize", max_data_line=None)
    driver = Driver(config)
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    evil = b"MAIL FROM:<evil@x>\r\n"
    driver.feed_chunks(split(body + b".\r\n" + evil, cuts))
    expected = reference(body, reject_bare=reject)
    ends = [e for e in driver.events if isinstance(e, EndOfMessage)]
    if expected is None:
        assert not ends
        assert b"550 5.6.0 " in driver.output
    else:
        assert len(ends) == 1
        assert driver.content() == expected
    # The command after the terminator runs; nothing from the body ever does.
    mails = [e for e in driver.events if isinstance(e, MailFrom)]
    assert [m.address for m in mails] == ["a@b", "evil@x"]


@SETTINGS
@given(
    pieces=st.lists(BODY_ALPHABET, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_no_body_without_crlf_dot_crlf_can_end_data(pieces: list[bytes], cuts: list[int]) -> None:
    body = b"".join(pieces).replace(b"\r\n.\r\n", b"\r\n..\r\n")
    if (b"\r\n" + body).find(b"\r\n.\r\n") >= 0:
        return  # the generator made a real terminator; covered elsewhere
    driver = Driver()
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    driver.feed_chunks(split(body + b"MAIL FROM:<evil@x>\r\n", cuts))
    assert driver.engine.state is State.DATA
    assert not [e for e in driver.events if isinstance(e, EndOfMessage)]
    assert len([e for e in driver.events if isinstance(e, MailFrom)]) == 1


@SETTINGS
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_bdat_text_is_normalized_the_same_however_it_is_chunked_and_read(
    chunks: list[bytes], cuts: list[int]
) -> None:
    # RFC 3030 §3: a BDAT body that is not BINARYMIME is text: every bare CR or LF
    # becomes CRLF, wherever the chunk and read boundaries fall (a CR ending one chunk
    # and an LF starting the next are one CRLF).
    wire = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n"
    wire += b"".join(b"BDAT %d\r\n" % len(c) + c for c in chunks) + b"BDAT 0 LAST\r\n"
    driver = Driver()
    driver.feed_chunks(split(wire, cuts))
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", b"".join(chunks))
    assert message_contents(driver) == [expected]


@SETTINGS
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30),
    limit=st.integers(min_value=3, max_value=30),
    cuts=st.lists(st.integers(min_value=0, max_value=1300), max_size=10),
    final_break=st.booleans(),
)
def test_bdat_line_limit_agrees_with_a_plain_count_however_chunked(
    lengths: list[int], limit: int, cuts: list[int], final_break: bool
) -> None:
    # RFC 5321 §4.5.3.1.6 for BDAT text: refused exactly when some line (without its
    # CRLF) is longer than limit - 2, wherever the chunks and reads cut the lines.
    body = b"\r\n".join(b"x" * n for n in lengths) + (b"\r\n" if final_break else b"")
    config = EngineConfig(max_data_line=limit)
    pieces = split(body, cuts)
    wire = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n"
    wire += b"".join(b"BDAT %d\r\n" % len(p) + p for p in pieces) + b"BDAT 0 LAST\r\n"
    driver = Driver(config)
    driver.feed_chunks(split(wire, cuts[::-1]))
    too_long = max(lengths) > limit - 2
    assert (b"500 5.5.6 line too long" in driver.output) == too_long
    assert (message_contents(driver) == [body]) == (not too_long)

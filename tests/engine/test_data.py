"""DATA bodies: the terminator, dot-unstuffing, SMTP smuggling, bare line endings, limits."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    EngineConfig,
    MailFrom,
    MessageData,
    MessageRejected,
    Phase,
    Reply,
    State,
)

from ._helpers import Driver, byte_by_byte, merge_message_data

EHLO = b"EHLO client.example\r\n"
TRANSACTION = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
GO_AHEAD = b"354 end data with <CR><LF>.<CR><LF>\r\n"
ACCEPTED = b"250 2.0.0 OK message accepted\r\n"
EVIL = b"MAIL FROM:<evil@example.com>\r\n"


def in_data(config: EngineConfig | None = None) -> Driver:
    """A session that has just been told 354."""
    driver = Driver(config)
    driver.feed(EHLO)
    assert driver.send(TRANSACTION).endswith(GO_AHEAD)
    assert driver.engine.state is State.DATA
    return driver


def messages(driver: Driver) -> list[EndOfMessage]:
    return [e for e in driver.events if isinstance(e, EndOfMessage)]


# ---------------------------------------------------------------- the ordinary case


def test_body_is_delivered_then_end_of_message() -> None:
    driver = in_data()
    assert driver.send(b"Subject: hi\r\n\r\nHello.\r\n.\r\n") == ACCEPTED
    assert driver.content() == b"Subject: hi\r\n\r\nHello.\r\n"
    [end] = messages(driver)
    assert end.size == len(b"Subject: hi\r\n\r\nHello.\r\n")
    assert end.recipients == 1
    assert isinstance(driver.events[-2], MessageData)
    assert driver.engine.state is State.COMMAND
    assert driver.engine.phase is Phase.READY


def test_empty_message() -> None:
    driver = in_data()
    assert driver.send(b".\r\n") == ACCEPTED
    assert driver.content() == b""
    [end] = messages(driver)
    assert end.size == 0


def test_message_of_one_empty_line() -> None:
    driver = in_data()
    assert driver.send(b"\r\n.\r\n") == ACCEPTED
    assert driver.content() == b"\r\n"


def test_body_without_final_crlf_is_impossible_the_crlf_belongs_to_the_content() -> None:
    # RFC 5321 §4.1.1.4: the CRLF before the dot is the last line's end.
    driver = in_data()
    driver.feed(b"no newline at end\r\n.\r\n")
    assert driver.content() == b"no newline at end\r\n"


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"..\r\n", b".\r\n"),
        (b"..leading dot\r\n", b".leading dot\r\n"),
        (b"a\r\n..\r\nb\r\n", b"a\r\n.\r\nb\r\n"),
        (b"a\r\n...\r\n", b"a\r\n..\r\n"),
        (b"a\r\n.b\r\n", b"a\r\nb\r\n"),
        (b"a.\r\nb..c\r\n", b"a.\r\nb..c\r\n"),
        (b"..\r\n..\r\n..\r\n", b".\r\n.\r\n.\r\n"),
    ],
)
def test_dot_unstuffing(wire: bytes, content: bytes) -> None:
    # RFC 5321 §4.5.2: a leading dot is removed from every line that has one.
    driver = in_data()
    assert driver.send(wire + b".\r\n") == ACCEPTED
    assert driver.content() == content
    assert messages(driver)[0].size == len(content)


def test_message_then_more_pipelined_commands() -> None:
    driver = in_data()
    out = driver.send(b"hi\r\n.\r\nMAIL FROM:<next@x>\r\nRSET\r\n")
    assert out == ACCEPTED + b"250 2.1.0 sender OK\r\n250 2.0.0 OK\r\n"


def test_8bit_and_nul_bytes_are_content() -> None:
    driver = in_data()
    body = b"caf\xc3\xa9 \xff\x00\x01\r\n"
    assert driver.send(body + b".\r\n") == ACCEPTED
    assert driver.content() == body


def test_end_of_message_hook_refusal() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(554, "5.7.1 spam") if isinstance(event, EndOfMessage) else None

    driver = Driver(answer=answer)
    driver.feed(EHLO + TRANSACTION)
    assert driver.send(b"buy now\r\n.\r\n") == b"554 5.7.1 spam\r\n"
    assert driver.engine.phase is Phase.READY
    assert driver.send(TRANSACTION).endswith(GO_AHEAD)


def test_end_of_message_421_closes() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(421, "4.3.0 shutting down") if isinstance(event, EndOfMessage) else None

    driver = Driver(answer=answer)
    driver.feed(EHLO + TRANSACTION)
    assert driver.send(b"x\r\n.\r\nNOOP\r\n") == b"421 4.3.0 shutting down\r\n"
    assert driver.closed == ConnectionClosed(reason="closed")


# ---------------------------------------------------------------- SMTP smuggling

SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r.\r",
    b"\r\n.\rX",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n .\r\n",
]


def has_bare_line_ending(data: bytes) -> bool:
    return data.count(b"\r") != data.count(b"\r\n") or data.count(b"\n") != data.count(b"\r\n")


@pytest.mark.parametrize("policy", ["normalize", "reject"])
@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS)
def test_smuggled_end_of_data_cannot_end_the_message(ending: bytes, policy: str) -> None:
    driver = in_data(EngineConfig(bare_line_endings=policy))
    driver.feed(b"Subject: hi\r\n\r\nhello" + ending + EVIL + b"RCPT TO:<victim@x>\r\nDATA\r\n")
    # Still inside the first message: nothing after the fake terminator ran.
    assert driver.engine.state is State.DATA
    assert not messages(driver)
    assert len(driver.of_type(MailFrom)) == 1
    assert driver.output.endswith(GO_AHEAD)
    rejected = policy == "reject" and has_bare_line_ending(ending)
    if not rejected:
        assert EVIL in driver.content()
    out = driver.send(b"real end\r\n.\r\n")
    if rejected:
        assert out == b"550 5.6.0 bare LF or CR in message; use CRLF line endings\r\n"
        assert not messages(driver)
    else:
        assert out == ACCEPTED
        [end] = messages(driver)
        assert end.size == len(driver.content())
        assert driver.content().endswith(b"DATA\r\nreal end\r\n")
    assert len(driver.of_type(MailFrom)) == 1
    assert driver.state() is State.COMMAND


@pytest.mark.parametrize("ending", SMUGGLING_ENDINGS)
def test_smuggled_end_of_data_fed_byte_by_byte(ending: bytes) -> None:
    driver = in_data()
    driver.feed_chunks(byte_by_byte(b"hello" + ending + EVIL + b"more"))
    assert len(driver.of_type(MailFrom)) == 1
    assert b"MAIL FROM:<evil@example.com>\r\nmore" in driver.content()
    assert driver.engine.state is State.DATA
    assert not messages(driver)


def test_normalized_smuggling_content_is_exact() -> None:
    driver = in_data()
    driver.feed(b"a\n.\nMAIL FROM:<e@x>\r\n.\r\n")
    # The dot after a bare LF is content: it is not dot-stuffing.
    assert driver.content() == b"a\r\n.\r\nMAIL FROM:<e@x>\r\n"


def test_crlf_dot_lf_is_content_not_a_terminator() -> None:
    driver = in_data()
    driver.feed(b"a\r\n.\nMAIL FROM:<e@x>\r\n.\r\n")
    # "." after CRLF is removed as dot-stuffing, then the bare LF becomes CRLF.
    assert driver.content() == b"a\r\n\r\nMAIL FROM:<e@x>\r\n"
    assert len(messages(driver)) == 1


# ---------------------------------------------------------------- chunk boundaries

BODY = b"From: a@b\r\n\r\n..stuffed\r\nline\r\n.\r\nNOOP\r\n"


def run_split(chunks: list[bytes]) -> Driver:
    driver = in_data()
    driver.feed_chunks(chunks)
    return driver


def test_terminator_split_at_every_position() -> None:
    whole = run_split([BODY])
    assert whole.content() == b"From: a@b\r\n\r\n.stuffed\r\nline\r\n"
    assert whole.output.endswith(ACCEPTED + b"250 2.0.0 OK\r\n")
    for i in range(len(BODY) + 1):
        for j in range(i, len(BODY) + 1):
            split = run_split([BODY[:i], BODY[i:j], BODY[j:]])
            assert split.content() == whole.content(), (i, j)
            assert split.output == whole.output, (i, j)
            assert merge_message_data(split.events) == merge_message_data(whole.events), (i, j)


def test_body_fed_byte_by_byte() -> None:
    whole = run_split([BODY])
    split = run_split(byte_by_byte(BODY))
    assert split.content() == whole.content()
    assert split.output == whole.output
    assert merge_message_data(split.events) == merge_message_data(whole.events)


def test_nothing_waits_for_the_terminator_except_its_possible_start() -> None:
    driver = in_data()
    driver.feed(b"line one\r\nline two\r\n.")
    # Everything but a possible terminator start ("\r\n.") has been handed on.
    assert driver.content() == b"line one\r\nline two"
    assert driver.engine.buffered == 3
    driver.feed(b"\r\n")
    assert driver.content() == b"line one\r\nline two\r\n"
    assert len(messages(driver)) == 1


# ---------------------------------------------------------------- bare line endings


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"a\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\rb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\n\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\n\r\n", b"a\r\n\r\n"),
    ],
)
def test_bare_line_endings_are_normalized_by_default(wire: bytes, content: bytes) -> None:
    driver = in_data()
    assert driver.send(wire + b".\r\n") == ACCEPTED
    assert driver.content() == content
    assert messages(driver)[0].size == len(content)


def test_bare_lf_split_from_its_cr_across_reads_is_one_crlf() -> None:
    driver = in_data()
    driver.feed_chunks([b"a\r", b"\nb\r", b"\n.\r", b"\n"])
    assert driver.content() == b"a\r\nb\r\n"
    assert len(messages(driver)) == 1


def test_bare_lf_rejected_after_the_final_dot_and_connection_usable() -> None:
    driver = in_data(EngineConfig(bare_line_endings="reject"))
    assert driver.send(b"a\nb\r\n") == b""  # nothing is said before the end
    out = driver.send(b".\r\n")
    assert out == b"550 5.6.0 bare LF or CR in message; use CRLF line endings\r\n"
    assert driver.events[-1] == MessageRejected(
        reply=Reply(550, "5.6.0 bare LF or CR in message; use CRLF line endings")
    )
    assert not messages(driver)
    assert driver.engine.phase is Phase.READY
    # A following transaction works.
    assert driver.send(TRANSACTION).endswith(GO_AHEAD)
    assert driver.send(b"clean\r\n.\r\n") == ACCEPTED
    assert len(messages(driver)) == 1


def test_bare_cr_rejected_under_reject_policy() -> None:
    driver = in_data(EngineConfig(bare_line_endings="reject"))
    assert driver.send(b"a\rb\r\n.\r\n") == (
        b"550 5.6.0 bare LF or CR in message; use CRLF line endings\r\n"
    )


def test_reject_policy_accepts_clean_messages() -> None:
    driver = in_data(EngineConfig(bare_line_endings="reject"))
    assert driver.send(b"a\r\n..b\r\n.\r\n") == ACCEPTED
    assert driver.content() == b"a\r\n.b\r\n"


# ---------------------------------------------------------------- line and size limits


def test_line_of_1000_octets_is_accepted_1001_refused_after_the_dot() -> None:
    # RFC 5321 §4.5.3.1.6: 1000 octets including CRLF.
    driver = in_data()
    assert driver.send(b"x" * 998 + b"\r\n.\r\n") == ACCEPTED
    driver.feed(TRANSACTION)
    assert driver.send(b"x" * 999 + b"\r\n") == b""
    assert driver.send(b"more\r\n.\r\n") == b"500 5.5.6 line too long\r\n"
    assert driver.events[-1] == MessageRejected(reply=Reply(500, "5.5.6 line too long"))
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_long_line_split_across_reads_is_measured_whole() -> None:
    line = b"y" * 999 + b"\r\n"
    for cut in (1, 500, 998, 999, 1000):
        driver = in_data()
        driver.feed_chunks([line[:cut], line[cut:], b".\r\n"])
        assert driver.output.endswith(b"500 5.5.6 line too long\r\n"), cut
    ok = b"y" * 998 + b"\r\n"
    for cut in (1, 500, 998, 999):
        driver = in_data()
        driver.feed_chunks([ok[:cut], ok[cut:], b".\r\n"])
        assert driver.output.endswith(ACCEPTED), cut


def test_data_line_limit_can_be_lifted() -> None:
    driver = in_data(EngineConfig(max_data_line=None))
    assert driver.send(b"z" * 5000 + b"\r\n.\r\n") == ACCEPTED
    assert len(driver.content()) == 5002


def test_message_of_exactly_the_size_limit_is_accepted() -> None:
    driver = in_data(EngineConfig(max_message_size=10))
    assert driver.send(b"12345678\r\n.\r\n") == ACCEPTED


def test_message_over_the_size_limit_is_552_after_the_dot() -> None:
    driver = in_data(EngineConfig(max_message_size=10))
    assert driver.send(b"123456789\r\n") == b""
    assert driver.send(b".\r\n") == (
        b"552 5.3.4 message size exceeds fixed maximum message size\r\n"
    )
    assert isinstance(driver.events[-1], MessageRejected)
    assert not messages(driver)
    assert driver.send(TRANSACTION + b"ok\r\n.\r\n").endswith(GO_AHEAD + ACCEPTED)


def test_oversized_body_is_never_buffered() -> None:
    limit = 1 << 20
    driver = in_data(EngineConfig(max_message_size=limit))
    line = b"x" * 74 + b"\r\n"
    chunk = line * (65536 // len(line)) + b"x" * (65536 % len(line))
    assert len(chunk) == 65536
    fed = 0
    delivered_at_refusal = None
    while fed < 10 * limit:
        driver.feed(chunk)
        fed += len(chunk)
        assert driver.engine.buffered <= 8
        if delivered_at_refusal is None and fed > limit + len(chunk):
            delivered_at_refusal = len(driver.content())
    # Once over the limit, nothing more is handed on either.
    assert delivered_at_refusal is not None
    assert len(driver.content()) == delivered_at_refusal <= limit
    assert driver.send(b"\r\n.\r\n") == (
        b"552 5.3.4 message size exceeds fixed maximum message size\r\n"
    )
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


# ---------------------------------------------------------------- refused DATA, EOF


def refuse_data(event: object) -> Reply | None:
    return Reply(554, "5.7.1 no thanks") if isinstance(event, Data) else None


def test_refused_data_with_a_pipelined_body_closes_with_421() -> None:
    # RFC 2920 §3.1: DATA ends a pipelined group, so what follows it is a body.
    driver = Driver(answer=refuse_data)
    driver.feed(EHLO)
    out = driver.send(TRANSACTION + EVIL + b"RCPT TO:<victim@x>\r\nDATA\r\nspam\r\n.\r\n")
    assert out.endswith(
        b"554 5.7.1 no thanks\r\n421 4.5.0 improper pipelining after refused DATA\r\n"
    )
    assert driver.closed == ConnectionClosed(reason="closed")
    assert len(driver.of_type(MailFrom)) == 1
    assert len(driver.of_type(Data)) == 1
    assert not driver.of_type(CommandRejected)


def test_refused_data_without_pipelined_body_keeps_the_connection() -> None:
    driver = Driver(answer=refuse_data)
    driver.feed(EHLO)
    assert driver.send(TRANSACTION).endswith(b"554 5.7.1 no thanks\r\n")
    assert driver.closed is None
    assert driver.engine.state is State.COMMAND
    assert driver.send(b"RSET\r\n") == b"250 2.0.0 OK\r\n"


def test_data_refused_by_the_engine_never_runs_a_pipelined_body() -> None:
    driver = Driver()
    driver.feed(EHLO)
    out = driver.send(b"MAIL FROM:<a@b>\r\nDATA\r\n" + b"RSET\r\nMAIL FROM:<evil@x>\r\n.\r\n")
    assert out.startswith(b"250 2.1.0 sender OK\r\n503 ")
    assert len(driver.of_type(MailFrom)) == 1


def test_eof_mid_data_closes_without_end_of_message() -> None:
    driver = in_data()
    driver.feed(b"partial body\r\n")
    events = driver.eof()
    assert events == [ConnectionClosed(reason="eof")]
    assert not messages(driver)
    # The final CRLF is held back as a possible terminator start, and is never delivered.
    assert driver.content() == b"partial body"


def test_eof_right_after_a_possible_terminator_start() -> None:
    driver = in_data()
    driver.feed(b"body\r\n.")
    assert driver.eof() == [ConnectionClosed(reason="eof")]
    assert not messages(driver)

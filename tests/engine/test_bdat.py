"""BDAT chunks (RFC 3030): exact octet counts, LAST, refusals that still swallow their octets."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    Bdat,
    CommandRejected,
    ConnectionClosed,
    EndOfMessage,
    EngineConfig,
    MailFrom,
    MessageData,
    Phase,
    Quit,
    RcptTo,
    Reply,
    State,
)

from ._helpers import Driver, byte_by_byte, merge_message_data

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
ACCEPTED = b"250 2.0.0 OK message accepted\r\n"
TOO_BIG = b"552 5.3.4 message size exceeds fixed maximum message size\r\n"


def bdat(chunk: bytes, *, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk


def in_transaction(config: EngineConfig | None = None) -> Driver:
    driver = Driver(config)
    driver.feed(EHLO)
    assert driver.send(ENVELOPE) == b"250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n"
    return driver


def messages(driver: Driver) -> list[EndOfMessage]:
    return [e for e in driver.events if isinstance(e, EndOfMessage)]


def test_single_last_chunk() -> None:
    driver = in_transaction()
    # RFC 3030 §2: BDAT LAST gets one reply, the message's.
    assert driver.send(bdat(b"Subject: x\r\n\r\nhi\r\n", last=True)) == ACCEPTED
    bdat_event = driver.of_type(Bdat)[0]
    assert isinstance(bdat_event, Bdat)
    assert (bdat_event.size, bdat_event.last) == (18, True)
    assert driver.content() == b"Subject: x\r\n\r\nhi\r\n"
    [end] = messages(driver)
    assert (end.size, end.recipients) == (18, 1)
    assert driver.engine.phase is Phase.READY


def test_chunk_octets_are_data_even_when_they_look_like_commands() -> None:
    # No dot-stuffing and no terminator in BDAT: the count alone delimits the chunk.
    chunk = b"A\r\n.\r\nQUIT\r\nMAIL FROM:<evil@x>\r\n..\r\n"
    driver = in_transaction()
    out = driver.send(bdat(chunk, last=True) + b"NOOP\r\n")
    assert out == ACCEPTED + b"250 2.0.0 OK\r\n"
    assert driver.content() == chunk
    assert not driver.of_type(Quit)
    assert len(driver.of_type(MailFrom)) == 1
    assert driver.closed is None


def test_bdat_0_last_ends_a_chunked_message() -> None:
    driver = in_transaction()
    out = driver.send(bdat(b"part one ") + bdat(b"part two") + b"BDAT 0 LAST\r\n")
    assert out == (b"250 2.0.0 9 octets received\r\n250 2.0.0 8 octets received\r\n" + ACCEPTED)
    assert driver.content() == b"part one part two"
    assert messages(driver)[0].size == 17


def test_bdat_0_last_as_the_only_chunk_is_an_empty_message() -> None:
    driver = in_transaction()
    assert driver.send(b"BDAT 0 LAST\r\n") == ACCEPTED
    assert messages(driver)[0].size == 0
    assert driver.content() == b""


def test_last_is_case_insensitive() -> None:
    driver = in_transaction()
    assert driver.send(b"BDAT 2 last\r\nok").endswith(ACCEPTED)


def test_many_chunks() -> None:
    driver = in_transaction()
    # Each piece ends a line, so the 1000-octet text line limit is never reached.
    pieces = [bytes([65 + i % 26]) * (i + 1) + b"\r\n" for i in range(50)]
    wire = b"".join(bdat(p) for p in pieces) + bdat(b"end", last=True)
    driver.feed(wire)
    assert driver.content() == b"".join(pieces) + b"end"
    assert len(driver.of_type(Bdat)) == 51
    assert messages(driver)[0].size == sum(map(len, pieces)) + 3
    assert driver.output.endswith(b"250 2.0.0 52 octets received\r\n" + ACCEPTED)


def test_chunk_split_across_reads() -> None:
    chunk = b"0123456789" * 10
    wire = bdat(chunk, last=True) + b"NOOP\r\n"
    whole = in_transaction()
    whole.feed(wire)
    for cut in range(len(wire) + 1):
        split = in_transaction()
        split.feed_chunks([wire[:cut], wire[cut:]])
        assert split.output == whole.output, cut
        assert merge_message_data(split.events) == merge_message_data(whole.events), cut
    dribble = in_transaction()
    dribble.feed_chunks(byte_by_byte(wire))
    assert dribble.output == whole.output
    assert dribble.content() == chunk


def test_chunk_data_is_delivered_before_the_chunk_is_complete() -> None:
    driver = in_transaction()
    driver.feed(b"BDAT 10\r\n12345")
    assert driver.content() == b"12345"
    assert driver.engine.state is State.BDAT
    assert driver.output.endswith(b"250 2.1.5 recipient OK\r\n")
    driver.feed(b"67890")
    assert driver.output.endswith(b"250 2.0.0 10 octets received\r\n")


UNTRUSTED = b"421 4.5.4 BDAT needs exactly: BDAT chunk-size [LAST]; closing connection\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b"BDAT",
        b"BDAT x",
        b"BDAT -1",
        b"BDAT +5",
        b"BDAT 1 FIRST",
        b"BDAT 1 LAST x",
        b"BDAT 5  LAST",
        b"BDAT  5 LAST",
        b"BDAT 5 LAST ",
        b"BDAT\t5 LAST",
        b"BDAT 5\tLAST",
        b"BDAT 5\r LAST",
        b"BDAT 5\x00",
        b" BDAT 5",
        b"BDAT 5.0",
        b"BDAT 0x10",
        b"BDAT 1_0",
        b"BDAT " + b"9" * 31,
        "BDAT \u0665".encode(),  # ARABIC-INDIC DIGIT FIVE: str.isdigit() says yes
        "BDAT 4 la\u017ft".encode(),  # long s: "la\u017ft".upper() == "LAST"
        b"BDAT 4 LAST\xff",
    ],
)
def test_a_bdat_size_that_cannot_be_trusted_closes_the_connection(line: bytes) -> None:
    # The chunk's octets follow at once: if the count is not read exactly as the
    # client meant it, they would run as commands. Nothing after this line is parsed.
    driver = in_transaction()
    out = driver.send(line + b"\r\nRCPT TO:<victim@x>\r\nBDAT 1 LAST\r\nX")
    assert out == UNTRUSTED
    assert driver.state() is State.CLOSED
    assert driver.engine.session.close_reason == "bdat-syntax"
    assert [type(e) for e in driver.events[-2:]] == [CommandRejected, ConnectionClosed]
    assert not driver.of_type(EndOfMessage)


@pytest.mark.parametrize("digits", [b"48", b"048", b"000000000000000000048", b"0" * 28 + b"48"])
def test_leading_zeros_in_the_chunk_size_are_read_as_the_number(digits: bytes) -> None:
    # RFC 3030 §2: chunk-size = 1*DIGIT. The 48 octets are the chunk, never commands.
    smuggled = b"RCPT TO:<victim@x>\r\nBDAT 7 LAST\r\nSMUG!\r\n"
    smuggled += b"X" * (48 - len(smuggled) - 2) + b"\r\n"
    assert len(smuggled) == 48
    driver = in_transaction()
    out = driver.send(b"BDAT " + digits + b" LAST\r\n" + smuggled)
    assert out == ACCEPTED
    assert driver.content() == smuggled
    assert [e.address for e in driver.of_type(RcptTo)] == ["b@example.net"]
    assert len(driver.of_type(Bdat)) == 1


def test_lower_case_last_is_accepted() -> None:
    driver = in_transaction()
    assert driver.send(b"bdat 2 last\r\nhi") == ACCEPTED


def test_bdat_when_chunking_is_off_is_not_implemented_and_its_octets_swallowed() -> None:
    driver = in_transaction(EngineConfig(chunking=False))
    out = driver.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n")
    assert out == b"502 5.5.1 command not implemented\r\n250 2.0.0 OK\r\n"
    assert driver.engine.phase is Phase.RCPT  # the RSET inside the chunk never ran
    assert not driver.content()


def test_bdat_refused_by_sequencing_still_swallows_its_octets() -> None:
    # RFC 3030 §2: the chunk follows the command whatever the reply.
    driver = Driver()
    driver.feed(EHLO)
    chunk = b"RSET\r\nMAIL FROM:<evil@x>\r\n"
    out = driver.send(bdat(chunk) + b"NOOP\r\n")
    assert out == b"503 5.5.1 need MAIL before BDAT\r\n250 2.0.0 OK\r\n"
    assert not driver.of_type(MailFrom)
    assert not [e for e in driver.events if isinstance(e, MessageData)]
    [rejected] = driver.of_type(CommandRejected)
    assert rejected == CommandRejected(
        line=f"BDAT {len(chunk)}", reply=Reply(503, "5.5.1 need MAIL before BDAT")
    )


def test_bdat_before_rcpt_swallows_its_octets() -> None:
    driver = Driver()
    driver.feed(EHLO + b"MAIL FROM:<a@b>\r\n")
    out = driver.send(bdat(b"QUIT\r\n", last=True) + b"NOOP\r\n")
    assert out == b"503 5.5.1 need RCPT before BDAT (no valid recipients)\r\n250 2.0.0 OK\r\n"
    assert not driver.of_type(Quit)
    assert driver.closed is None


def test_after_a_refused_chunk_later_chunks_are_refused_until_rset() -> None:
    driver = in_transaction(EngineConfig(max_message_size=10))
    out = driver.send(bdat(b"12345") + bdat(b"123456") + bdat(b"x", last=True))
    assert out == (
        b"250 2.0.0 5 octets received\r\n"
        + TOO_BIG
        + b"503 5.5.1 previous BDAT failed; send RSET\r\n"
    )
    assert not messages(driver)
    assert driver.send(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert driver.send(ENVELOPE + bdat(b"fits", last=True)).endswith(ACCEPTED)


def test_size_limit_counts_all_chunks() -> None:
    driver = in_transaction(EngineConfig(max_message_size=10))
    out = driver.send(bdat(b"12345") + bdat(b"12345", last=True))
    assert out == b"250 2.0.0 5 octets received\r\n" + ACCEPTED
    assert messages(driver)[0].size == 10
    driver.feed(ENVELOPE)
    out = driver.send(bdat(b"123456") + bdat(b"12345", last=True))
    assert out == b"250 2.0.0 6 octets received\r\n" + TOO_BIG
    assert len(messages(driver)) == 1


def test_oversized_chunk_is_swallowed_without_buffering() -> None:
    driver = in_transaction(EngineConfig(max_message_size=1000))
    driver.feed(b"BDAT 1000000 LAST\r\n")
    for _ in range(1000000 // 50000):
        driver.feed(b"MAIL FROM:<x@y>\r\n".ljust(50000, b"z"))
        assert driver.engine.buffered == 0
    assert driver.output.endswith(TOO_BIG)
    assert driver.content() == b""
    assert len(driver.of_type(MailFrom)) == 1
    assert driver.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_binarymime_with_data_is_503() -> None:
    driver = Driver()
    driver.feed(EHLO)
    out = driver.send(b"MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    assert out.endswith(b"503 5.5.1 BODY=BINARYMIME needs BDAT, not DATA\r\n")
    assert driver.send(bdat(b"\x00\xff\r", last=True)).endswith(ACCEPTED)
    assert driver.content() == b"\x00\xff\r"


def test_hook_refusing_a_chunk_ends_the_transaction() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(554, "5.6.0 bad chunk") if isinstance(event, Bdat) else None

    driver = Driver(answer=answer)
    driver.feed(EHLO + ENVELOPE)
    assert driver.send(bdat(b"abc", last=True)) == b"554 5.6.0 bad chunk\r\n"
    assert not messages(driver)
    assert driver.engine.phase is Phase.READY


def test_hook_refusing_the_message_after_bdat_last() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(550, "5.7.1 spam") if isinstance(event, EndOfMessage) else None

    driver = Driver(answer=answer)
    driver.feed(EHLO + ENVELOPE)
    assert driver.send(bdat(b"abc", last=True)) == b"550 5.7.1 spam\r\n"
    assert driver.engine.phase is Phase.READY


def test_eof_mid_chunk_closes_without_end_of_message() -> None:
    driver = in_transaction()
    driver.feed(b"BDAT 10 LAST\r\n12345")
    assert [type(e).__name__ for e in driver.eof()] == ["ConnectionClosed"]
    assert driver.closed is not None
    assert driver.closed.reason == "eof"
    assert not messages(driver)


# ---------------------------------------------------------------- text rules (RFC 3030 §3)


def test_bare_lf_and_cr_in_bdat_are_normalized_by_default() -> None:
    driver = in_transaction()
    # A CR ending one chunk and the LF starting the next are one CRLF.
    out = driver.send(bdat(b"a\nb\rc\r") + bdat(b"\nd\r\n.\n", last=True))
    assert out.endswith(ACCEPTED)
    assert driver.content() == b"a\r\nb\r\nc\r\nd\r\n.\r\n"
    assert messages(driver)[0].size == len(driver.content())


def test_a_cr_ending_the_last_chunk_is_a_bare_cr() -> None:
    driver = in_transaction()
    driver.send(bdat(b"a\r") + bdat(b"", last=True))
    assert driver.content() == b"a\r\n"


REJECT = EngineConfig(bare_line_endings="reject")
BARE_REFUSED = b"550 5.6.0 bare LF or CR in message; use CRLF line endings\r\n"


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\r.\r\n", b"a\r\r\n"])
def test_bare_lf_or_cr_in_bdat_is_refused_under_reject(body: bytes) -> None:
    driver = in_transaction(REJECT)
    out = driver.send(bdat(body) + bdat(b"more\r\n", last=True) + b"RSET\r\n")
    assert out == BARE_REFUSED + b"503 5.5.1 previous BDAT failed; send RSET\r\n250 2.0.0 OK\r\n"
    assert not messages(driver)


def test_bdat_line_over_the_limit_is_refused() -> None:
    driver = in_transaction()
    body = b"Subject: x\r\n\r\n" + b"A" * 5014 + b"\r\n"  # a 5,016-octet line
    out = driver.send(bdat(body[:3000]) + bdat(body[3000:], last=True))
    assert out == (
        b"500 5.5.6 line too long\r\n" + b"503 5.5.1 previous BDAT failed; send RSET\r\n"
    )
    assert not messages(driver)


def test_bdat_line_of_exactly_1000_octets_is_fine() -> None:
    driver = in_transaction()
    line = b"A" * 998 + b"\r\n"
    assert driver.send(bdat(line[:500]) + bdat(line[500:], last=True)) == (
        b"250 2.0.0 500 octets received\r\n" + ACCEPTED
    )


def test_binarymime_is_exempt_from_the_text_rules() -> None:
    driver = Driver(REJECT)
    driver.feed(EHLO)
    driver.send(b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.net>\r\n")
    body = b"\x00\n\r" + b"B" * 5000 + b"\r"
    assert driver.send(bdat(body, last=True)) == ACCEPTED
    assert driver.content() == body

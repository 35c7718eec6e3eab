"""BDAT chunks (RFC 3030): exact octet counts, LAST, refusals that still swallow their octets."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    Bdat,
    CommandRejected,
    EndOfMessage,
    EngineConfig,
    MailFrom,
    MessageData,
    Phase,
    Quit,
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
    pieces = [bytes([65 + i % 26]) * (i + 1) for i in range(50)]
    wire = b"".join(bdat(p) for p in pieces) + bdat(b"end", last=True)
    driver.feed(wire)
    assert driver.content() == b"".join(pieces) + b"end"
    assert len(driver.of_type(Bdat)) == 51
    assert messages(driver)[0].size == sum(map(len, pieces)) + 3
    assert driver.output.endswith(b"250 2.0.0 50 octets received\r\n" + ACCEPTED)


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


@pytest.mark.parametrize(
    "line",
    [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1 FIRST", b"BDAT 1 LAST x", b"BDAT " + b"9" * 19],
)
def test_bdat_syntax_errors(line: bytes) -> None:
    driver = in_transaction()
    assert driver.send(line + b"\r\n") == b"501 5.5.4 syntax: BDAT chunk-size [LAST]\r\n"
    assert driver.engine.state is State.COMMAND


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

"""LMTP (RFC 2033): LHLO only, and one reply per accepted recipient after the message."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    EndOfMessage,
    EngineConfig,
    Helo,
    LocalProtocolError,
    RcptTo,
    Reply,
)

from ._helpers import Driver

LMTP = EngineConfig(lmtp=True, hostname="lmtp.example")
LHLO = b"LHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@b>\r\nRCPT TO:<one@x>\r\nRCPT TO:<bad@x>\r\nRCPT TO:<two@x>\r\n"


def refuse_bad(event: object) -> Reply | None:
    if isinstance(event, RcptTo) and event.address.startswith("bad"):
        return Reply(550, "5.1.1 no such user")
    return None


def test_lmtp_greeting() -> None:
    assert Driver(LMTP).output == b"220 lmtp.example LMTP\r\n"


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO"])
def test_helo_and_ehlo_are_refused_in_lmtp(verb: bytes) -> None:
    driver = Driver(LMTP)
    assert driver.send(verb + b" client\r\n") == b"500 5.5.1 this is an LMTP server: use LHLO\r\n"
    assert driver.engine.session.helo_name is None
    assert driver.send(b"MAIL FROM:<a@b>\r\n").startswith(b"503 ")


def test_lhlo_is_answered_like_ehlo() -> None:
    driver = Driver(LMTP)
    out = driver.send(LHLO)
    assert out.startswith(b"250-lmtp.example\r\n250-PIPELINING\r\n")
    assert out.endswith(b"250 DSN\r\n")
    [event] = driver.events
    assert isinstance(event, Helo)
    assert (event.verb, event.extended) == ("LHLO", True)


def test_lhlo_is_refused_in_smtp_mode() -> None:
    assert Driver().send(LHLO) == b"500 5.5.2 command not recognized\r\n"


def test_default_reply_is_repeated_for_each_accepted_recipient() -> None:
    driver = Driver(LMTP, answer=refuse_bad)
    driver.feed(LHLO)
    out = driver.send(ENVELOPE + b"DATA\r\nhello\r\n.\r\n")
    assert out == (
        b"250 2.1.0 sender OK\r\n"
        b"250 2.1.5 recipient OK\r\n"
        b"550 5.1.1 no such user\r\n"
        b"250 2.1.5 recipient OK\r\n"
        b"354 end data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 OK message accepted\r\n"
        b"250 2.0.0 OK message accepted\r\n"
    )
    [end] = [e for e in driver.events if isinstance(e, EndOfMessage)]
    assert end.recipients == 2


def test_one_reply_per_recipient_in_order() -> None:
    def answer(event: object) -> Reply | list[Reply] | None:
        if isinstance(event, EndOfMessage):
            return [Reply(250, "2.1.5 one delivered"), Reply(452, "4.2.2 two is over quota")]
        return refuse_bad(event)

    driver = Driver(LMTP, answer=answer)
    driver.feed(LHLO)
    out = driver.send(ENVELOPE + b"DATA\r\nhello\r\n.\r\nNOOP\r\n")
    assert out.endswith(
        b"354 end data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.1.5 one delivered\r\n"
        b"452 4.2.2 two is over quota\r\n"
        b"250 2.0.0 OK\r\n"
    )


def test_wrong_number_of_replies_is_a_local_error() -> None:
    driver = Driver(LMTP)
    driver.feed(LHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<one@x>\r\nRCPT TO:<two@x>\r\nDATA\r\n")
    engine = driver.engine
    engine.receive_data(b"x\r\n.\r\n")
    while not isinstance(engine.next_event(), EndOfMessage):
        pass
    with pytest.raises(LocalProtocolError, match="2 replies"):
        engine.respond([Reply(250, "a"), Reply(250, "b"), Reply(250, "c")])


def test_lmtp_with_bdat_last_gets_one_reply_per_recipient() -> None:
    driver = Driver(LMTP, answer=refuse_bad)
    driver.feed(LHLO)
    out = driver.send(ENVELOPE + b"BDAT 5 LAST\r\nhello")
    assert out.endswith(
        b"550 5.1.1 no such user\r\n250 2.1.5 recipient OK\r\n"
        b"250 2.0.0 OK message accepted\r\n"
        b"250 2.0.0 OK message accepted\r\n"
    )

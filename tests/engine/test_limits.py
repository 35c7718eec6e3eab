"""Bounds on lines, recipients, errors and memory; hostile input that must close the session."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    CommandRejected,
    ConnectionClosed,
    EndOfMessage,
    EngineConfig,
    RcptTo,
    Reply,
    State,
)

from ._helpers import Driver

EHLO = b"EHLO client.example\r\n"
TOO_LONG = b"500 5.5.6 line too long\r\n"
OK = b"250 2.0.0 OK\r\n"


def test_command_line_of_512_octets_is_accepted() -> None:
    # RFC 5321 §4.5.3.1.4: 512 octets including CRLF.
    line = b"NOOP " + b"x" * 505 + b"\r\n"
    assert len(line) == 512
    assert Driver().send(line) == OK


def test_command_line_of_513_octets_is_500_and_the_connection_stays_usable() -> None:
    line = b"NOOP " + b"x" * 506 + b"\r\n"
    assert len(line) == 513
    driver = Driver()
    assert driver.send(line + b"NOOP\r\n") == TOO_LONG + OK
    assert driver.events[0] == CommandRejected(line="", reply=Reply(500, "5.5.6 line too long"))
    assert driver.closed is None


def test_long_line_fed_in_pieces_is_refused_once_it_ends() -> None:
    driver = Driver()
    for _ in range(10):
        assert driver.send(b"x" * 100) == b""
    assert driver.send(b"\r\nNOOP\r\n") == TOO_LONG + OK


def test_a_megabyte_line_without_lf_never_fills_the_buffer() -> None:
    driver = Driver()
    chunk = b"A" * 65536
    for _ in range(16):
        driver.feed(chunk)
        assert driver.engine.buffered <= 512
    assert driver.output.endswith(b"220 localhost ESMTP trio_smtp\r\n")
    assert driver.send(b"\r\n" + b"NOOP\r\n") == TOO_LONG + OK


def test_a_megabyte_auth_line_never_exceeds_the_auth_limit() -> None:
    driver = Driver()
    driver.feed(b"AUTH PLAIN ")
    for _ in range(16):
        driver.feed(b"A" * 65536)
        assert driver.engine.buffered <= 12288
    assert driver.send(b"\r\n") == TOO_LONG


def test_smaller_configured_command_limit() -> None:
    driver = Driver(EngineConfig(max_command_line=20))
    assert driver.send(b"NOOP 1234567890123\r\n") == OK
    assert driver.send(b"NOOP 12345678901234\r\n") == TOO_LONG


def test_max_recipients_is_452_4_5_3() -> None:
    driver = Driver(EngineConfig(max_recipients=2))
    driver.feed(EHLO + b"MAIL FROM:<a@b>\r\n")
    out = driver.send(b"RCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\nDATA\r\nx\r\n.\r\n")
    assert out == (
        b"250 2.1.5 recipient OK\r\n"
        b"250 2.1.5 recipient OK\r\n"
        b"452 4.5.3 too many recipients\r\n"
        b"354 end data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 OK message accepted\r\n"
    )
    assert len([e for e in driver.events if isinstance(e, RcptTo)]) == 2
    [end] = [e for e in driver.events if isinstance(e, EndOfMessage)]
    assert end.recipients == 2


def test_refused_recipients_do_not_count_towards_the_limit() -> None:
    def answer(event: object) -> Reply | None:
        if isinstance(event, RcptTo) and event.address.startswith("bad"):
            return Reply(550, "5.1.1 no")
        return None

    driver = Driver(EngineConfig(max_recipients=1), answer=answer)
    driver.feed(EHLO + b"MAIL FROM:<a@b>\r\n")
    out = driver.send(b"RCPT TO:<bad@x>\r\nRCPT TO:<ok@x>\r\n")
    assert out == b"550 5.1.1 no\r\n250 2.1.5 recipient OK\r\n"


def test_max_bad_commands_closes_with_421() -> None:
    driver = Driver(EngineConfig(max_bad_commands=3))
    out = driver.send(b"BAD1\r\nBAD2\r\nBAD3\r\nNOOP\r\n")
    assert out == (
        b"500 5.5.2 command not recognized\r\n" * 3
        + b"421 4.7.0 too many errors, closing connection\r\n"
    )
    assert driver.closed == ConnectionClosed(reason="closed")
    assert driver.engine.state is State.CLOSED


def test_a_good_command_resets_the_bad_command_count() -> None:
    driver = Driver(EngineConfig(max_bad_commands=3))
    driver.feed(b"BAD\r\nBAD\r\nNOOP\r\nBAD\r\nBAD\r\n")
    assert driver.closed is None
    driver.feed(b"BAD\r\n")
    assert driver.closed is not None


def test_sequence_and_syntax_errors_count_as_bad_commands() -> None:
    driver = Driver(EngineConfig(max_bad_commands=3))
    out = driver.send(b"MAIL FROM:<a@b>\r\nHELO\r\nRCPT TO:<a@b>\r\n")
    assert out.endswith(b"421 4.7.0 too many errors, closing connection\r\n")


def test_default_bad_command_limit_is_20() -> None:
    driver = Driver()
    driver.feed(b"X\r\n" * 19)
    assert driver.closed is None
    driver.feed(b"X\r\n")
    assert driver.closed == ConnectionClosed(reason="closed")


@pytest.mark.parametrize(
    "line",
    [b"GET / HTTP/1.1", b"POST /submit HTTP/1.0", b"CONNECT mx:25 HTTP/1.1", b"HEAD / HTTP/1.1"],
)
def test_http_request_line_closes_with_421(line: bytes) -> None:
    driver = Driver()
    out = driver.send(line + b"\r\nHost: mx\r\n\r\nMAIL FROM:<a@b>\r\n")
    http = Reply(421, "4.7.0 this is an SMTP server, not an HTTP server")
    assert out == http.to_bytes()
    assert driver.events == [
        CommandRejected(line=line.decode(), reply=http),
        ConnectionClosed(reason="closed"),
    ]


def test_get_without_http_version_is_just_unknown() -> None:
    assert Driver().send(b"GET something\r\n") == b"500 5.5.2 command not recognized\r\n"


def test_eof_in_command_state_closes() -> None:
    driver = Driver()
    driver.feed(b"NOOP\r\nNOO")
    assert driver.eof() == [ConnectionClosed(reason="eof")]
    assert driver.output.endswith(OK)


def test_eof_mid_data_gives_no_end_of_message() -> None:
    driver = Driver()
    driver.feed(EHLO + b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody")
    assert driver.eof() == [ConnectionClosed(reason="eof")]
    assert not [e for e in driver.events if isinstance(e, EndOfMessage)]


def test_eof_inside_auth_closes() -> None:
    config = EngineConfig(auth_mechanisms=("LOGIN",), auth_insecure=True)
    driver = Driver(config)
    driver.feed(EHLO + b"AUTH LOGIN\r\n")
    assert driver.engine.state is State.AUTH
    assert driver.eof() == [ConnectionClosed(reason="eof")]


def test_input_after_close_is_ignored() -> None:
    driver = Driver()
    driver.feed(b"QUIT\r\n")
    driver.engine.receive_data(b"x" * 100000)
    assert driver.engine.buffered == 0


@pytest.mark.parametrize(
    "field",
    [
        "max_command_line",
        "max_auth_line",
        "max_data_line",
        "max_message_size",
        "max_recipients",
        "max_bad_commands",
        "max_auth_failures",
    ],
)
@pytest.mark.parametrize("value", [0, -1, True])
def test_config_refuses_non_positive_limits(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("hostname", ["", "two words", "tab\there", "nul\x00"])
def test_config_refuses_bad_hostnames(hostname: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        EngineConfig(hostname=hostname)


def test_ehlo_advertises_the_size_limit() -> None:
    assert b"250-SIZE 1000\r\n" in Driver(EngineConfig(max_message_size=1000)).send(EHLO)
    assert b"250-SIZE\r\n" in Driver(EngineConfig(max_message_size=None)).send(EHLO)


def test_ehlo_keywords_follow_the_config() -> None:
    config = EngineConfig(
        pipelining=False,
        eightbitmime=False,
        smtputf8=False,
        chunking=False,
        dsn=False,
    )
    assert Driver(config).send(EHLO) == (
        b"250-localhost\r\n250-SIZE 33554432\r\n250 ENHANCEDSTATUSCODES\r\n"
    )
    no_binary = EngineConfig(binarymime=False)
    out = Driver(no_binary).send(EHLO)
    assert b"250-CHUNKING\r\n" in out
    assert b"BINARYMIME" not in out

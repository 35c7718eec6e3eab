"""The engine owns the session's facts; callers read them through ``engine.session``."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Engine,
    EngineConfig,
    Phase,
    ProxyHeader,
    Reply,
    Sentinel,
    SessionState,
)

from ._helpers import Driver, session


def test_sentinels_are_enum_members() -> None:
    assert NEED_DATA is Sentinel.NEED_DATA
    assert PAUSED is Sentinel.PAUSED
    assert set(Sentinel) == {NEED_DATA, PAUSED}
    assert repr(NEED_DATA) == "NEED_DATA"


def test_session_starts_empty() -> None:
    state = Engine().session
    assert isinstance(state, SessionState)
    assert state.phase is Phase.INITIAL
    assert state.helo_name is None
    assert state.esmtp is False
    assert state.tls_active is False
    assert state.authenticated_as is None
    assert state.recipients == 0
    assert state.close_reason is None


def test_session_facts_are_read_only() -> None:
    state = Engine().session
    with pytest.raises(AttributeError):
        state.helo_name = "forged"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        state.authenticated_as = "admin"  # type: ignore[misc]


def test_session_follows_helo_mail_rcpt_and_rset() -> None:
    driver = session(b"EHLO c.example\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n")
    state = driver.engine.session
    assert (state.helo_name, state.esmtp, state.phase) == ("c.example", True, Phase.RCPT)
    assert state.recipients == 2
    driver.feed(b"RSET\r\n")
    assert (state.phase, state.recipients) == (Phase.READY, 0)
    driver.feed(b"HELO other\r\n")
    assert (state.helo_name, state.esmtp) == ("other", False)


def test_refused_helo_keeps_the_previous_name() -> None:
    driver = session(b"EHLO first\r\n")
    driver.answer = lambda event: Reply(550, "no")
    driver.feed(b"EHLO second\r\n")
    assert driver.engine.session.helo_name == "first"


def test_session_is_forgotten_after_starttls() -> None:
    config = EngineConfig(starttls=True, auth_mechanisms=("PLAIN",), auth_insecure=True)
    driver = Driver(config)
    driver.feed(b"EHLO c\r\nSTARTTLS\r\n")
    driver.engine.tls_started()
    state = driver.engine.session
    assert state.tls_active is True
    assert state.helo_name is None
    assert state.phase is Phase.INITIAL


def test_authenticated_as_is_set_only_by_a_235() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True)

    def answer(event: object) -> Reply | None:
        if isinstance(event, AuthCredentials):
            return Reply(235, "2.7.0 ok") if event.password == "good" else None
        return None

    driver = Driver(config, answer=answer)
    driver.feed(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAGJhZA==\r\n")  # alice / bad
    assert driver.engine.session.authenticated_as is None
    driver.feed(b"AUTH PLAIN AGFsaWNlAGdvb2Q=\r\n")  # alice / good
    assert driver.engine.session.authenticated_as == "alice"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"QUIT\r\n", "quit"), (b"", "eof")],
)
def test_close_reason(data: bytes, reason: str) -> None:
    driver = session(b"EHLO c\r\n")
    driver.feed(data)
    assert driver.engine.session.close_reason == reason
    assert driver.closed is not None
    assert driver.closed.reason == reason


def test_server_close_records_the_reason_given() -> None:
    engine = Engine()
    engine.greet()
    engine.close(Reply(421, "4.4.2 idle too long"), reason="timeout")
    assert engine.session.close_reason == "timeout"
    assert engine.data_to_send().endswith(b"421 4.4.2 idle too long\r\n")


def test_a_421_answer_records_the_reason_given() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"EHLO c\r\nNOOP\r\n")
    engine.next_event()
    engine.respond()
    engine.next_event()
    engine.respond(Reply(421, "4.3.2 going down"), reason="server shutdown")
    assert engine.session.close_reason == "server shutdown"
    assert engine.data_to_send().endswith(b"421 4.3.2 going down\r\n")


def test_a_positive_answer_ignores_the_reason() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"NOOP\r\n")
    engine.next_event()
    engine.respond(reason="never")
    assert engine.session.close_reason is None


def test_implicit_tls_is_a_session_fact() -> None:
    assert Engine(tls_active=True).session.tls_active is True
    assert Engine().session.tls_active is False


V2_HEADER = (
    b"\r\n\r\n\x00\r\nQUIT\n"  # signature
    + b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 octets
    + bytes([192, 0, 2, 7, 198, 51, 100, 1])
    + (40000).to_bytes(2, "big")
    + (25).to_bytes(2, "big")
)


@pytest.mark.parametrize("cut", [1, 5, 16, 27, 28, 30])
def test_raw_bytes_from_the_first_one_leave_what_follows_the_header(cut: int) -> None:
    # The Trio layer feeds everything it reads; the engine parses the header once and
    # keeps the pipelined commands behind it for after the greeting.
    data = V2_HEADER + b"EHLO c\r\nNOOP\r\n"
    engine = Engine(EngineConfig(proxy_protocol=True))
    engine.receive_data(data[:cut])
    first = engine.next_event()
    if cut < len(V2_HEADER):
        assert first is NEED_DATA
        engine.receive_data(data[cut:])
        first = engine.next_event()
    else:
        engine.receive_data(data[cut:])
    assert isinstance(first, ProxyHeader)
    assert first.source == ("192.0.2.7", 40000)
    assert engine.next_event() is PAUSED
    assert engine.buffered == len(b"EHLO c\r\nNOOP\r\n")
    engine.greet()
    helo = engine.next_event()
    engine.respond()
    assert engine.session.helo_name == "c"
    assert helo is not NEED_DATA

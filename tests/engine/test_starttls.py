"""STARTTLS (RFC 3207): the upgrade handshake, state reset, and command injection."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    EngineConfig,
    Helo,
    MailFrom,
    Phase,
    Reply,
    StartTLS,
    State,
    TLSUpgrade,
)

from ._helpers import Driver

EHLO = b"EHLO client.example\r\n"
STARTTLS = EngineConfig(starttls=True)
READY_TO_START = b"220 2.0.0 ready to start TLS\r\n"


def ready(config: EngineConfig = STARTTLS) -> Driver:
    driver = Driver(config)
    driver.feed(EHLO)
    return driver


def test_ehlo_offers_starttls_only_when_configured() -> None:
    assert Driver(STARTTLS).send(EHLO).endswith(b"250-DSN\r\n250 STARTTLS\r\n")
    assert b"STARTTLS" not in Driver().send(EHLO)


def test_starttls_then_tls_upgrade_event_then_paused() -> None:
    driver = ready()
    assert driver.send(b"STARTTLS\r\n") == READY_TO_START
    assert isinstance(driver.events[-2], StartTLS)
    assert driver.events[-1] == TLSUpgrade()
    assert driver.stopped_on is PAUSED
    assert driver.engine.state is State.STARTTLS
    # Until the handshake is reported, nothing else happens.
    assert driver.engine.next_event() is PAUSED


def test_starttls_works_before_ehlo() -> None:
    driver = Driver(STARTTLS)
    assert driver.send(b"STARTTLS\r\n") == READY_TO_START
    assert driver.events[-1] == TLSUpgrade()


def test_tls_started_resets_helo_and_transaction_state() -> None:
    # RFC 3207 §4.2: the server discards any knowledge obtained from the client.
    config = EngineConfig(starttls=True, auth_mechanisms=("PLAIN",))
    driver = ready(config)
    driver.feed(b"STARTTLS\r\n")
    driver.engine.tls_started()
    assert driver.engine.session.tls_active
    assert driver.engine.state is State.COMMAND
    assert driver.engine.phase is Phase.INITIAL
    assert driver.engine.session.helo_name is None
    assert driver.engine.next_event() is NEED_DATA
    assert driver.send(b"MAIL FROM:<a@b>\r\n") == b"503 5.5.1 send HELO or EHLO first\r\n"
    ehlo = driver.send(EHLO)
    # No STARTTLS any more; AUTH now offered since the channel is encrypted.
    assert b"STARTTLS" not in ehlo
    assert ehlo.endswith(b"250-DSN\r\n250 AUTH PLAIN\r\n")
    assert driver.send(b"MAIL FROM:<a@b>\r\n") == b"250 2.1.0 sender OK\r\n"


def test_starttls_with_tls_already_active_is_503() -> None:
    driver = Driver(STARTTLS, tls_active=True)
    driver.feed(EHLO)
    assert driver.send(b"STARTTLS\r\n") == b"503 5.5.1 TLS is already active\r\n"
    assert driver.engine.state is State.COMMAND


def test_second_starttls_after_upgrade_is_503() -> None:
    driver = ready()
    driver.feed(b"STARTTLS\r\n")
    driver.engine.tls_started()
    assert driver.send(EHLO + b"STARTTLS\r\n").endswith(b"503 5.5.1 TLS is already active\r\n")


def test_starttls_not_configured_is_502() -> None:
    assert ready(EngineConfig()).send(b"STARTTLS\r\n") == b"502 5.5.1 STARTTLS not available\r\n"


def test_starttls_with_an_argument_is_501() -> None:
    assert ready().send(b"STARTTLS now\r\n") == b"501 5.5.4 syntax: STARTTLS\r\n"


@pytest.mark.parametrize(
    "injected",
    [b"MAIL FROM:<a@b>\r\n", b"NOOP\r\n", b"x", b"\r\n", b"EHLO evil\r\nMAIL FROM:<a@b>\r\n"],
)
def test_commands_injected_after_starttls_close_the_connection(injected: bytes) -> None:
    # RFC 3207 §4 and CVE-2011-0411: bytes sent with STARTTLS are never executed.
    driver = ready()
    out = driver.send(b"STARTTLS\r\n" + injected)
    assert out == READY_TO_START
    assert driver.closed == ConnectionClosed(reason="starttls-injection")
    assert not driver.of_type(MailFrom)
    assert not driver.of_type(TLSUpgrade)
    assert len(driver.of_type(Helo)) == 1
    assert driver.engine.buffered == 0


def test_injection_arriving_before_the_handshake_starts_is_caught() -> None:
    driver = ready()
    driver.engine.receive_data(b"STARTTLS\r\n")
    assert isinstance(driver.engine.next_event(), StartTLS)
    driver.engine.respond()
    # The plaintext "MAIL" arrives before the caller looked at the next event.
    driver.engine.receive_data(b"MAIL FROM:<a@b>\r\n")
    assert driver.engine.next_event() == ConnectionClosed(reason="starttls-injection")


def test_refused_starttls_keeps_the_plain_session() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(454, "4.7.0 TLS not available now") if isinstance(event, StartTLS) else None

    driver = Driver(STARTTLS, answer=answer)
    driver.feed(EHLO)
    out = driver.send(b"STARTTLS\r\nMAIL FROM:<a@b>\r\n")
    assert out == b"454 4.7.0 TLS not available now\r\n250 2.1.0 sender OK\r\n"
    assert not driver.of_type(TLSUpgrade)
    assert driver.engine.state is State.COMMAND
    assert not driver.engine.session.tls_active


def test_implicit_tls_engine_does_not_offer_starttls() -> None:
    assert b"STARTTLS" not in Driver(STARTTLS, tls_active=True).send(EHLO)


def test_tls_started_twice_is_a_local_error() -> None:
    from trio_smtp.engine import LocalProtocolError

    driver = ready()
    driver.feed(b"STARTTLS\r\n")
    driver.engine.tls_started()
    with pytest.raises(LocalProtocolError):
        driver.engine.tls_started()

"""XCLIENT HELO= and PROTO= are the client's greeting, as if it had said it (XCLIENT_README)."""

from __future__ import annotations

from trio_smtp.engine import EngineConfig

from ._helpers import Driver

CONFIG = EngineConfig(hostname="mx.test")


def _trusted() -> Driver:
    driver = Driver(CONFIG)
    driver.engine.allow_xclient = True
    driver.feed(b"EHLO proxy.test\r\n")
    return driver


def test_helo_and_proto_outlast_the_proxys_own_ehlo() -> None:
    driver = _trusted()
    driver.feed(b"XCLIENT HELO=client.example PROTO=SMTP\r\n")
    state = driver.engine.session
    assert (state.helo_name, state.esmtp) == ("client.example", False)
    # The proxy greets again with its own name; the client's stays what the session reports.
    assert driver.send(b"EHLO proxy.test\r\nMAIL FROM:<a@x>\r\n").endswith(
        b"250 2.1.0 sender OK\r\n"
    )
    assert (state.helo_name, state.esmtp) == ("client.example", False)


def test_attributes_not_given_keep_their_value_and_unavailable_clears_it() -> None:
    driver = _trusted()
    driver.feed(b"XCLIENT HELO=client.example PROTO=ESMTP\r\n")
    driver.feed(b"XCLIENT ADDR=192.0.2.7\r\n")
    state = driver.engine.session
    assert (state.helo_name, state.esmtp) == ("client.example", True)
    driver.feed(b"XCLIENT HELO=[UNAVAILABLE] PROTO=[UNAVAILABLE]\r\n")
    assert state.helo_name is None
    driver.feed(b"HELO proxy.test\r\n")
    # No client name to give: not the proxy's either; PROTO unknown: the greeting decides.
    assert (state.helo_name, state.esmtp) == (None, False)


def test_without_helo_the_greeting_after_xclient_names_the_client() -> None:
    driver = _trusted()
    driver.feed(b"XCLIENT ADDR=192.0.2.7\r\n")
    driver.feed(b"EHLO client.example\r\n")
    assert driver.engine.session.helo_name == "client.example"
    assert driver.engine.session.esmtp is True

"""XCLIENT (Postfix XCLIENT_README): parsing, permission, sequencing, the new greeting."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    CommandRejected,
    Engine,
    EngineConfig,
    Helo,
    Phase,
    Reply,
    Xclient,
)

from ._helpers import Driver

CONFIG = EngineConfig(hostname="mx.test", auth_mechanisms=("PLAIN",), auth_insecure=True)
GREETING = b"220 mx.test ESMTP trio_smtp\r\n"
ALL = "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"


def trusted() -> Driver:
    driver = Driver(CONFIG)
    driver.engine.allow_xclient = True
    driver.feed(b"EHLO proxy.test\r\n")
    return driver


def test_advertised_only_to_allowed_clients() -> None:
    plain = Driver(CONFIG)
    assert b"XCLIENT" not in plain.send(b"EHLO c\r\n")
    allowed = Driver(CONFIG)
    allowed.engine.allow_xclient = True
    assert allowed.send(b"EHLO c\r\n").endswith(f"250 XCLIENT {ALL}\r\n".encode())
    assert Engine(CONFIG, allow_xclient=True).allow_xclient is True


def test_refused_from_anyone_else() -> None:
    driver = Driver(CONFIG)
    driver.feed(b"EHLO c\r\n")
    out = driver.send(b"XCLIENT ADDR=192.0.2.1\r\n")
    assert out == b"550 5.7.0 XCLIENT not permitted from this client\r\n"
    assert isinstance(driver.events[-1], CommandRejected)
    assert driver.engine.session.helo_name == "c"


def test_full_attribute_set_is_parsed() -> None:
    driver = trusted()
    out = driver.send(
        b"XCLIENT NAME=client.example ADDR=IPV6:2001:DB8::1 PORT=4242 PROTO=esmtp"
        b" HELO=client.example LOGIN=alice DESTADDR=198.51.100.2 DESTPORT=587\r\n"
    )
    assert out == GREETING
    [event] = driver.of_type(Xclient)
    assert event.name == "client.example"
    assert event.addr == "2001:db8::1"
    assert (event.port, event.proto, event.helo) == (4242, "ESMTP", "client.example")
    assert (event.login, event.destaddr, event.destport) == ("alice", "198.51.100.2", 587)
    assert event.attributes["ADDR"] == "IPV6:2001:DB8::1"


def test_success_starts_the_session_over() -> None:
    driver = trusted()
    driver.feed(b"XCLIENT ADDR=192.0.2.7 LOGIN=bob\r\n")
    state = driver.engine.session
    assert (state.phase, state.helo_name, state.esmtp) == (Phase.INITIAL, None, False)
    assert state.authenticated_as == "bob"
    # XCLIENT_README: the client must greet again.
    assert driver.send(b"MAIL FROM:<a@x>\r\n") == b"503 5.5.1 send HELO or EHLO first\r\n"
    out = driver.send(b"EHLO client.example\r\nMAIL FROM:<a@x>\r\n")
    assert out.endswith(b"250 2.1.0 sender OK\r\n")
    assert driver.of_type(Helo)[-1].name == "client.example"


def test_unavailable_markers() -> None:
    driver = trusted()
    out = driver.send(b"XCLIENT NAME=[TEMPUNAVAIL] ADDR=[unavailable] LOGIN=[UNAVAILABLE]\r\n")
    assert out == GREETING
    [event] = driver.of_type(Xclient)
    assert event.attributes == {
        "NAME": "[TEMPUNAVAIL]",
        "ADDR": "[UNAVAILABLE]",
        "LOGIN": "[UNAVAILABLE]",
    }
    assert (event.name, event.addr, event.login) == (None, None, None)
    assert driver.engine.session.authenticated_as is None


def test_values_are_xtext() -> None:
    driver = trusted()
    assert driver.send(b"XCLIENT LOGIN=al+2Bice+3Dx\r\n") == GREETING
    assert driver.of_type(Xclient)[0].login == "al+ice=x"


def test_login_is_kept_when_not_given() -> None:
    driver = trusted()
    driver.feed(b"AUTH PLAIN AGFsaWNlAHB3\r\n")  # refused by default: no login
    driver.feed(b"XCLIENT LOGIN=carol\r\n")
    driver.feed(b"XCLIENT ADDR=192.0.2.9\r\n")
    assert driver.engine.session.authenticated_as == "carol"


@pytest.mark.parametrize(
    "line",
    [
        b"XCLIENT",
        b"XCLIENT ",
        b"XCLIENT ADDR",
        b"XCLIENT FOO=bar",
        b"XCLIENT ADDR=192.0.2.1  PORT=1",
        b"XCLIENT ADDR=192.0.2.1 ADDR=192.0.2.2",
        b"XCLIENT ADDR=999.0.2.1",
        b"XCLIENT ADDR=[192.0.2.1]",
        b"XCLIENT ADDR=2001:db8::1",
        b"XCLIENT DESTADDR=IPV6:zz",
        b"XCLIENT PORT=65536",
        b"XCLIENT PORT=-1",
        b"XCLIENT DESTPORT=http",
        b"XCLIENT PROTO=LMTP",
        b"XCLIENT NAME=",
        b"XCLIENT LOGIN=",
        b"XCLIENT NAME=a+0D+0Ab",
        b"XCLIENT LOGIN=x+00y",
        b"XCLIENT HELO=" + b"h" * 256,
        "XCLIENT LOG\u0131N=x".encode(),
    ],
)
def test_bad_syntax_is_501(line: bytes) -> None:
    driver = trusted()
    out = driver.send(line + b"\r\n")
    assert out.startswith(b"501 5.5.4 ")
    assert not driver.of_type(Xclient)
    assert driver.engine.session.helo_name == "proxy.test"


def test_not_inside_a_transaction() -> None:
    driver = trusted()
    driver.feed(b"MAIL FROM:<a@x>\r\n")
    out = driver.send(b"XCLIENT ADDR=192.0.2.1\r\n")
    assert out == b"503 5.5.1 XCLIENT is not allowed in a mail transaction\r\n"
    assert driver.engine.phase is Phase.MAIL
    driver.feed(b"RSET\r\n")
    assert driver.send(b"XCLIENT ADDR=192.0.2.1\r\n") == GREETING


def test_allowed_before_ehlo() -> None:
    driver = Driver(CONFIG)
    driver.engine.allow_xclient = True
    assert driver.send(b"XCLIENT ADDR=192.0.2.1\r\n") == GREETING


def test_a_refusal_by_the_caller_changes_nothing() -> None:
    def answer(event: object) -> Reply | None:
        return Reply(550, "5.7.1 not from you") if isinstance(event, Xclient) else None

    driver = Driver(CONFIG, answer=answer)
    driver.engine.allow_xclient = True
    driver.feed(b"EHLO proxy.test\r\n")
    out = driver.send(b"XCLIENT LOGIN=root\r\n")
    assert out == b"550 5.7.1 not from you\r\n"
    assert driver.engine.session.authenticated_as is None
    assert driver.engine.session.helo_name == "proxy.test"


def test_pipelined_after_xclient_is_read_after_the_greeting() -> None:
    driver = trusted()
    out = driver.send(b"XCLIENT ADDR=192.0.2.1\r\nEHLO c\r\nNOOP\r\n")
    assert out.startswith(GREETING + b"250-mx.test\r\n")
    assert out.endswith(b"250 2.0.0 OK\r\n")


def test_xforward_is_still_not_implemented() -> None:
    driver = trusted()
    assert driver.send(b"XFORWARD ADDR=1.2.3.4\r\n") == b"502 5.5.1 command not implemented\r\n"

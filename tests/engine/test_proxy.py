"""PROXY protocol v1 and v2 headers before the greeting (haproxy proxy-protocol.txt)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from trio_smtp.engine import (
    PAUSED,
    ConnectionClosed,
    EngineConfig,
    Helo,
    ProxyHeader,
    State,
)

from ._helpers import GREETING, Driver, byte_by_byte

PROXY = EngineConfig(proxy_protocol=True)
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_ERROR = ConnectionClosed(reason="proxy-error")


def v2(
    *,
    command: int = 1,
    family: int = 0x11,
    addresses: bytes = b"",
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    body = addresses + tlvs
    return SIG + bytes([(version << 4) | command, family]) + struct.pack("!H", len(body)) + body


def v2_ipv4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def v2_ipv6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def proxied(chunks: list[bytes]) -> Driver:
    driver = Driver(PROXY, greet=False)
    driver.feed_chunks(chunks)
    return driver


def headers(driver: Driver) -> list[ProxyHeader]:
    return [e for e in driver.events if isinstance(e, ProxyHeader)]


def test_engine_waits_for_the_header_before_anything() -> None:
    driver = Driver(PROXY, greet=False)
    assert driver.engine.state is State.PROXY
    assert driver.pump() == []
    assert driver.output == b""


def test_v1_tcp4_then_greeting_then_commands() -> None:
    driver = proxied([b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO c\r\n"])
    assert headers(driver) == [
        ProxyHeader(
            version=1,
            local=False,
            source=("192.0.2.1", 56324),
            destination=("198.51.100.2", 25),
        )
    ]
    # The header is read; the caller greets (maybe after a connect hook) when it likes.
    assert driver.stopped_on is PAUSED
    assert driver.engine.state is State.CONNECTED
    assert driver.output == b""
    assert driver.engine.buffered == len(b"EHLO c\r\n")
    driver.engine.greet()
    driver.pump()
    assert driver.output.startswith(GREETING + b"250-localhost\r\n")
    assert isinstance(driver.events[-1], Helo)


def test_v1_tcp6() -> None:
    driver = proxied([b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 587\r\n"])
    assert headers(driver)[0].source == ("2001:db8::1", 1234)
    assert headers(driver)[0].destination == ("2001:db8::2", 587)


@pytest.mark.parametrize(
    "line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n"]
)
def test_v1_unknown_means_local(line: bytes) -> None:
    [header] = headers(proxied([line]))
    assert header == ProxyHeader(version=1, local=True, source=None, destination=None)


def test_v2_ipv4_with_tlvs() -> None:
    data = v2(
        addresses=v2_ipv4("192.0.2.1", "198.51.100.2", 40000, 25),
        tlvs=tlv(0x01, b"smtp") + tlv(0x04, b""),
    )
    driver = proxied([data + b"EHLO c\r\n"])
    assert headers(driver) == [
        ProxyHeader(
            version=2,
            local=False,
            source=("192.0.2.1", 40000),
            destination=("198.51.100.2", 25),
            tlvs={0x01: b"smtp", 0x04: b""},
        )
    ]
    assert driver.engine.buffered == len(b"EHLO c\r\n")


def test_v2_ipv6() -> None:
    data = v2(family=0x21, addresses=v2_ipv6("2001:db8::1", "2001:db8::2", 1, 65535))
    [header] = headers(proxied([data]))
    assert (header.source, header.destination) == (("2001:db8::1", 1), ("2001:db8::2", 65535))
    assert header.tlvs == {}


def test_v2_local_command() -> None:
    [header] = headers(proxied([v2(command=0, family=0x00)]))
    assert header == ProxyHeader(version=2, local=True, source=None, destination=None)


def test_v2_local_command_ignores_addresses() -> None:
    data = v2(command=0, addresses=v2_ipv4("192.0.2.1", "192.0.2.2", 1, 2))
    [header] = headers(proxied([data]))
    assert header.local is True
    assert header.source is None


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO c\r\n",
        v2(addresses=v2_ipv4("192.0.2.1", "198.51.100.2", 1, 2), tlvs=tlv(2, b"x" * 40)),
        v2(family=0x21, addresses=v2_ipv6("::1", "::2", 1, 2)),
    ],
    ids=["v1", "v2-ipv4", "v2-ipv6"],
)
def test_header_split_across_reads(data: bytes) -> None:
    whole = proxied([data])
    assert len(headers(whole)) == 1
    for cut in range(1, len(data)):
        split = proxied([data[:cut], data[cut:]])
        assert headers(split) == headers(whole), cut
        assert split.engine.buffered == whole.engine.buffered, cut
    assert headers(proxied(byte_by_byte(data))) == headers(whole)


MALFORMED = [
    b"GET / HTTP/1.1\r\n",
    b"EHLO client\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    v2(version=1, addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(command=2, addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(family=0x12, addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(family=0x11, addresses=b"\x01\x02\x03\x04"),
    v2(family=0x21, addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2)),
    v2(family=0x41, addresses=b"x" * 16),
    v2(addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=b"\x01\x00"),
    v2(addresses=v2_ipv4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=b"\x01\x00\x05abc"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_header_closes_without_greeting(data: bytes) -> None:
    driver = proxied([data])
    assert driver.events == [PROXY_ERROR]
    assert driver.output == b""
    assert driver.engine.state is State.CLOSED
    assert driver.engine.buffered == 0


def test_v1_header_over_107_octets_is_refused() -> None:
    # proxy-protocol.txt §2.1: at most 107 octets, CRLF included.
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + b" " * 80 + b"\r\n"
    driver = proxied([line])
    assert driver.events == [PROXY_ERROR]
    assert driver.output == b""


def test_v1_header_without_crlf_is_refused_once_too_long() -> None:
    driver = proxied([b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + b"x" * 100])
    assert driver.events == [PROXY_ERROR]


def test_oversized_v2_header_is_refused_before_it_arrives() -> None:
    header_start = SIG + bytes([0x21, 0x11]) + struct.pack("!H", 65535)
    driver = proxied([header_start])
    assert driver.events == [PROXY_ERROR]
    assert driver.output == b""


def test_incomplete_header_then_eof() -> None:
    driver = proxied([b"PROXY TCP4 1.2."])
    assert driver.events == []
    assert driver.eof() == [ConnectionClosed(reason="eof")]
    assert driver.output == b""


def test_greeting_before_the_header_is_a_local_error() -> None:
    from trio_smtp.engine import LocalProtocolError

    driver = Driver(PROXY, greet=False)
    with pytest.raises(LocalProtocolError):
        driver.engine.greet()

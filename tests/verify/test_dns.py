"""The resolver the verifiers use: real UDP to a loopback responder, cache, errors."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_smtp.verify._dns import DnsResolver, DnsTempError, parse_server

from .dns_server import DnsResponder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_dns_server_flag_values_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["resolver.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", ""])
def test_bad_dns_server_values_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[")):
        parse_server(text)


async def test_answers_are_cached_for_their_ttl(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    responder = DnsResponder(
        {
            ("example.test", "TXT"): (['"v=spf1 -all"'], 300),
            ("example.test", "A"): (["192.0.2.1", "192.0.2.2"], 0),
        }
    )
    port = await nursery.start(responder.serve)
    resolver = DnsResolver([("127.0.0.1", port)])
    assert await resolver.query("example.test", "TXT") == ("v=spf1 -all",)
    assert await resolver.query("EXAMPLE.test.", "TXT") == ("v=spf1 -all",)
    assert responder.seen == [("example.test", "TXT")]
    # TTL 0 is never cached.
    assert set(await resolver.query("example.test", "A")) == {"192.0.2.1", "192.0.2.2"}
    await resolver.query("example.test", "A")
    assert responder.seen.count(("example.test", "A")) == 2
    mock_clock.jump(301)
    await resolver.query("example.test", "TXT")
    assert responder.seen.count(("example.test", "TXT")) == 2


async def test_nxdomain_and_no_data_are_empty_servfail_is_temporary(
    nursery: trio.Nursery,
) -> None:
    responder = DnsResponder(
        {("example.test", "TXT"): (['"hello" " world"'], 60), ("broken.test", "TXT"): None}
    )
    port = await nursery.start(responder.serve)
    resolver = DnsResolver([("127.0.0.1", port)])
    assert await resolver.query("example.test", "TXT") == ("hello world",)
    assert await resolver.query("example.test", "MX") == ()
    assert await resolver.query("missing.test", "TXT") == ()
    with pytest.raises(DnsTempError):
        await resolver.query("broken.test", "TXT")
    # A label longer than 63 octets cannot be asked: no such name.
    assert await resolver.query("a" * 64 + ".test", "TXT") == ()


async def test_a_server_that_never_answers_is_a_temporary_error(nursery: trio.Nursery) -> None:
    responder = DnsResponder({}, mute=True)
    port = await nursery.start(responder.serve)
    resolver = DnsResolver([("127.0.0.1", port)], lifetime=0.3)
    with pytest.raises(DnsTempError):
        await resolver.query("example.test", "TXT")
    assert responder.seen  # it was asked, and it read the question

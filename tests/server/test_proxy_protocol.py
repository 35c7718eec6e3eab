"""PROXY protocol: the engine parses the header once and keeps what follows it."""

from __future__ import annotations

from typing import Any

import pytest
from _live_server import running_server

V1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"
V2 = (
    b"\r\n\r\n\x00\r\nQUIT\n"  # signature
    + b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 octets of addresses
    + bytes([192, 0, 2, 7, 198, 51, 100, 1])
    + (40000).to_bytes(2, "big")
    + (25).to_bytes(2, "big")
)


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
async def test_commands_in_the_same_write_as_the_header_are_served(header: bytes) -> None:
    seen: list[Any] = []

    async def ehlo(ctx: Any) -> None:
        seen.append((ctx.session.peer, ctx.session.local, ctx.session.proxy.version))

    async with running_server({"EHLO": ehlo}, config={"proxy_protocol": True}) as live:
        client = await live.connect()
        await client.send(header + b"EHLO client.test\r\nNOOP\r\n")
        assert (await client.reply())[0] == 220
        assert (await client.reply())[0] == 250
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)
    version = 1 if header is V1 else 2
    assert seen == [(("192.0.2.7", 40000), ("198.51.100.1", 25), version)]


async def test_a_bad_header_is_closed_without_a_greeting() -> None:
    async with running_server(config={"proxy_protocol": True}) as live:
        client = await live.connect()
        await client.send(b"PROXY TCP4 nonsense\r\nEHLO x\r\n")
        assert await client.closed()
    assert live.logger.find("Bad PROXY header", "warn")
    assert live.logger.find("(no valid PROXY header)")

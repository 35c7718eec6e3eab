"""``greet_delay``: the wait before the 220, and the refusal of clients that talk first."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing
from _harden_support import TIMEOUT, Lines, cli_server, serving, smtp

from trio_smtp import Server
from trio_smtp._early_talkers import TALKED_FIRST, wait_for_silence


async def test_a_silent_client_waits_exactly_the_delay(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    assert await wait_for_silence(server, 5.0) is None
    assert trio.current_time() - start == 5.0
    await client.aclose()


async def test_a_client_that_talks_first_is_caught(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def talk() -> None:
            await trio.sleep(1.0)
            await client.send_all(b"EHLO bot\r\nMAIL FROM:<spam@x>\r\n")

        nursery.start_soon(talk)
        start = trio.current_time()
        seen = await wait_for_silence(server, 5.0)
    assert seen is not None
    assert seen.sent == len(b"EHLO bot\r\nMAIL FROM:<spam@x>\r\n")
    assert not seen.left
    assert trio.current_time() - start == 1.0  # caught at once, not after the delay


async def test_a_client_that_leaves_is_not_a_talker(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.aclose()
    seen = await wait_for_silence(server, 5.0)
    assert seen is not None
    assert seen.left


async def test_no_delay_means_no_wait(autojump_clock: trio.abc.Clock) -> None:
    _client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    assert await wait_for_silence(server, 0) is None
    assert trio.current_time() == start


def test_the_reply() -> None:
    assert TALKED_FIRST.code == 554
    assert TALKED_FIRST.text == "5.5.1 protocol error: talked before greeting"


# ------------------------------------------------------------------ through the server


@asynccontextmanager
async def memory_connection(
    greet_delay: float,
) -> AsyncIterator[tuple[Any, Server, Lines]]:
    logger = Lines()
    server = Server(
        {"config": {"port": 0, "hostname": "mx.test", "greet_delay": greet_delay}},
        {"logger": logger},
    )
    client, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, server_stream, peer=("192.0.2.1", 40000)))
        yield client, server, logger
        await client.aclose()


async def _read_all(stream: Any) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_server_greets_a_patient_client_after_the_delay(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_connection(3.0) as (client, server, _logger):
        start = trio.current_time()
        greeting = await client.receive_some()
        assert greeting.startswith(b"220 mx.test")
        assert trio.current_time() - start == 3.0
        await client.send_all(b"QUIT\r\n")
        assert (await _read_all(client)).startswith(b"221")
    assert server.early_talkers == 0


async def test_server_refuses_a_client_that_talks_first(autojump_clock: trio.abc.Clock) -> None:
    async with memory_connection(3.0) as (client, server, logger):
        await trio.sleep(1.0)
        await client.send_all(b"EHLO bot\r\nMAIL FROM:<spam@example.net>\r\n")
        answer = await _read_all(client)
    assert answer == b"554 5.5.1 protocol error: talked before greeting\r\n"
    assert server.early_talkers == 1
    assert "Early talker" in logger.text
    assert "(talked before greeting)" in logger.text


async def test_real_socket_early_talker_and_patient_smtplib() -> None:
    # The talker's bytes must arrive within the delay: 2 s leaves room for a loaded machine.
    async with serving({"greet_delay": 2.0}) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.port)
        async with stream:
            await stream.send_all(b"EHLO bot\r\nMAIL FROM:<spam@example.net>\r\n")
            with trio.fail_after(TIMEOUT):
                answer = await _read_all(stream)
        assert answer == b"554 5.5.1 protocol error: talked before greeting\r\n"

        def send(client: Any) -> Any:
            return client.sendmail("ann@client.test", ["bob@mx.test"], b"Subject: x\r\n\r\nhi\r\n")

        assert await smtp(live.port, send) == {}
        assert live.server.early_talkers == 1
    assert len(live.sink.messages) == 1


def test_cli_greet_delay_refuses_an_early_talker() -> None:
    with cli_server("--greet-delay", "2") as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"EHLO bot\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    assert data == b"554 5.5.1 protocol error: talked before greeting\r\n"

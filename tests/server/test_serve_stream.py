"""Server.serve_stream: one session over a stream the server did not accept itself."""

from __future__ import annotations

import socket
from functools import partial

import trio
from _live_server import Client, make_server, memory_connection, running_server

PEER = ("198.51.100.7", 40001)
#: A grace the autojump clock runs out, and a command timeout far past it.
GRACE_CONFIG = {"shutdown_grace": 5, "command_timeout": 3600}


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected real sockets (a Unix socketpair), as Trio streams."""
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def test_a_session_over_a_socketpair_is_served_and_counted() -> None:
    server, sink, logger = make_server()
    client_end, server_end = _socket_pair()
    client = Client(client_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, server_end, peer=PEER))
        assert (await client.reply())[0] == 220
        # Counted like a listened connection, under the address it was given.
        assert server.connections == 1
        assert server.connections_per_address == {"198.51.100.7": 1}
        await client.expect("EHLO client.test", 250)
        assert (await client.transaction(b"hi\r\n")).code == 250
        await client.expect("QUIT", 221)
        assert await client.closed()
        await client.aclose()
        await server.wait_connections(0)
    [mail] = sink.messages
    assert mail.content == b"hi\r\n"
    assert mail.session.peer == PEER
    assert server.connections_per_address == {}
    assert logger.find("peer=198.51.100.7:40001")


async def test_over_max_connections_the_stream_gets_421_and_is_closed() -> None:
    server, _, _ = make_server(config={"max_connections": 1})
    first_client, first_server = _socket_pair()
    second_client, second_server = _socket_pair()
    first = Client(first_client)
    second = Client(second_client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, first_server, peer=PEER))
        assert (await first.reply())[0] == 220
        await server.serve_stream(second_server, peer=("198.51.100.8", 1))
        assert await second.reply() == (421, "4.7.0 too many connections, try again later")
        assert await second.closed()
        await first.expect("QUIT", 221)
        await first.aclose()
        await second.aclose()
    assert server.connections == 0


async def test_shutdown_ends_a_served_stream_gracefully() -> None:
    async with running_server() as live:
        client_end, server_end = _socket_pair()
        client = Client(client_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(live.server.serve_stream, server_end, peer=PEER))
            await client.greet()
            await live.wait_connections(1)
            live.server.shutdown()
            assert await client.reply() == (421, "4.3.2 service shutting down, try again later")
            assert await client.closed()
            await client.aclose()


async def test_a_served_stream_still_in_a_transaction_is_cancelled_when_the_grace_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The grace bounds every session serve() shuts down, a served stream's too: past it
    # the client gets the best-effort 421 and the stream closes (on the code before the
    # fix the session went on until the hour's command timeout, after serve() had ended).
    async with running_server(config=GRACE_CONFIG) as live:
        async with memory_connection(live.server, peer=PEER) as (client, run):
            await client.greet()
            await client.expect("MAIL FROM:<a@x.test>", 250)
            shutdown_at = trio.current_time()
            live.server.shutdown()
            assert await client.reply() == (421, "4.3.2 service shutting down, try again later")
            assert await client.closed()
            # Virtual time: the grace, not the command timeout, ended the session.
            assert trio.current_time() - shutdown_at < 60
            await run.finished.wait()
    assert live.server.connections == 0
    assert live.logger.find("server shutdown")


async def test_a_stream_served_during_the_grace_period_is_told_421_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_server(config=GRACE_CONFIG) as live:
        async with memory_connection(live.server, peer=PEER) as (first, _):
            await first.greet()
            await first.expect("MAIL FROM:<a@x.test>", 250)  # holds the grace open
            live.server.shutdown()
            await trio.testing.wait_all_tasks_blocked()
            async with memory_connection(live.server, peer=("198.51.100.8", 1)) as (late, run):
                # Greeted, then told at once, as an idle session is at shutdown.
                assert (await late.reply()).code == 220
                assert await late.reply() == (421, "4.3.2 service shutting down, try again later")
                assert await late.closed()
                await run.finished.wait()
            # The first session still gets its transaction's grace.
            await first.expect("RCPT TO:<b@y.test>", 250)
            assert await first.reply() == (421, "4.3.2 service shutting down, try again later")

"""Why a connection ended: one fact, kept by the engine, told by the Trio layer.

The ``close`` hook reads ``session.close_reason``, and the "Connection closed" log line
says the same reason; each case goes over a real socket.
"""

from __future__ import annotations

from typing import Any

from _live_server import running_server

from trio_smtp import Reply, Session


def _recording() -> tuple[dict[str, Any], list[str | None]]:
    reasons: list[str | None] = []

    async def close(session: Session) -> None:
        reasons.append(session.close_reason)

    return {"close": close}, reasons


async def test_quit_and_eof_are_the_engines_reasons() -> None:
    events, reasons = _recording()
    async with running_server(events) as live:
        client = await live.connect()
        await client.greet()
        await client.expect("QUIT", 221)
        assert await client.closed()
        await live.wait_connections(0)
        client = await live.connect()
        await client.greet()
        await client.aclose()
        await live.wait_connections(0)
    assert reasons == ["quit", "eof"]
    assert live.logger.find("(quit)")
    assert live.logger.find("(eof)")


async def test_a_hooks_421_is_recorded_as_closed_by_hook() -> None:
    async def noop(ctx: Any) -> None:
        raise Reply(421, "4.3.0 go away")

    events, reasons = _recording()
    async with running_server({**events, "NOOP": noop}) as live:
        client = await live.connect()
        await client.greet()
        assert await client.command("NOOP") == (421, "4.3.0 go away")
        assert await client.closed()
        await live.wait_connections(0)
    assert reasons == ["closed by hook"]
    assert live.logger.find("(closed by hook)")


async def test_an_idle_connection_at_shutdown_is_closed_for_server_shutdown() -> None:
    events, reasons = _recording()
    async with running_server(events) as live:
        client = await live.connect()
        await client.greet()
        live.server.shutdown()
        assert (await client.reply())[0] == 421
        assert await client.closed()
        await live.wait_connections(0)
    assert reasons == ["server shutdown"]
    assert live.logger.find("(server shutdown)")


async def test_a_command_timeout_is_recorded_as_timeout() -> None:
    events, reasons = _recording()
    async with running_server(events, config={"command_timeout": 0.2}) as live:
        client = await live.connect()
        # The greeting only: a client that had to answer it within 0.2 s could lose that
        # race on a loaded machine. Nothing is sent: the server gives up waiting.
        assert (await client.reply())[0] == 220
        assert (await client.reply())[0] == 421
        assert await client.closed()
        await live.wait_connections(0)
    assert reasons == ["timeout"]
    assert live.logger.find("(timeout)")


async def test_the_first_reason_wins() -> None:
    """A client that quits and vanishes before the 221 is sent still ended with QUIT."""
    events, reasons = _recording()
    async with running_server(events) as live:
        client = await live.connect()
        await client.greet()
        await client.send(b"QUIT\r\n")
        await client.aclose()
        await live.wait_connections(0)
    assert reasons == ["quit"]

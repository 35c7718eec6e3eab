"""Unsent output is capped in bytes: a client that pipelines and never reads stops being read."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing

from trio_smtp import Reply
from trio_smtp._connection_task import OUTPUT_CAP
from trio_smtp.engine import Engine
from trio_smtp.testing import SMTPClient, serving

#: A HELP reply of 32 KiB (64 lines of 512 octets): two of them pass the cap, and 16 of
#: them (what a cap counting replies let a connection hold) are 512 KiB.
LINE = "x" * 490
BIG_HELP = Reply(214, "\n".join([LINE] * 64))
PIPELINED: int = 40


def test_the_engine_counts_the_bytes_it_holds_for_the_client() -> None:
    engine = Engine()
    engine.greet()
    greeting = engine.pending_output
    assert greeting == len(engine.data_to_send()) > 0
    assert engine.pending_output == 0
    engine.receive_data(b"NOOP\r\nNOOP\r\n")
    for _ in range(2):
        engine.next_event()
        engine.respond()
    held = engine.pending_output
    assert held == len(engine.data_to_send()) == 2 * len(b"250 2.0.0 OK\r\n")
    assert engine.pending_output == 0


async def _small_window_client(port: int) -> SMTPClient:
    # A small receive buffer, set before connecting, keeps the kernel's share of the
    # unread replies small and fixed (no autotuning): what is left is the server's.
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    await sock.connect(("127.0.0.1", port))
    return SMTPClient(trio.SocketStream(sock))


async def test_a_client_that_never_reads_big_replies_stops_being_read() -> None:
    answered = 0

    async def help_hook(ctx: Any) -> Reply:
        nonlocal answered
        answered += 1
        return BIG_HELP

    async with serving({"events": {"HELP": help_hook}}, faults=False) as srv:
        client = await _small_window_client(srv.port)
        try:
            await client.greet()
            # One segment: the server reads every command at once, and may answer them
            # all without reading again.
            await client.send(b"HELP\r\n" * PIPELINED)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            stalled = answered
            # Blocked on its output, the server reads no more: what it answered is
            # what fits in the kernel's buffers plus its own cap (a cap of 16 replies
            # held 512 KiB here and answered at least 16 before blocking).
            reply_size = len(b"214-2.0.0 " + LINE.encode() + b"\r\n") * 64
            assert stalled < 16
            assert stalled * reply_size < OUTPUT_CAP + reply_size + 256 * 1024
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert answered == stalled
            # Reading lets it go on, to the last command.
            for _ in range(PIPELINED):
                reply = await client.reply()
                assert reply.code == 214
                assert reply.text.count("\n") == 63
            assert answered == PIPELINED
            assert (await client.command("NOOP")).code == 250
        finally:
            await client.aclose()


async def test_a_client_that_never_reads_big_replies_is_closed_at_the_command_timeout() -> None:
    async def help_hook(ctx: Any) -> Reply:
        return BIG_HELP

    # The client answers the greeting with EHLO within it: 2 s, for a loaded machine.
    config: dict[str, Any] = {"command_timeout": 2.0}
    async with serving({"events": {"HELP": help_hook}}, faults=False, **config) as srv:
        client = await _small_window_client(srv.port)
        try:
            await client.greet()
            await client.send(b"HELP\r\n" * PIPELINED)
            await srv.wait_idle(within=30)
        finally:
            await client.aclose()
    assert srv.logger.find("(send timeout)")

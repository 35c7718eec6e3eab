"""Slowloris: many connections that trickle bytes to hold the server's slots forever.

The defence is that ``command_timeout`` runs from the moment the server starts waiting
for a command until a whole line has arrived: bytes dribbled in do not move it, so
every attacker is cut at the timeout with ``421 4.4.2`` however steadily it trickles.
``data_timeout`` does the same for a whole message body.
"""

from __future__ import annotations

import trio
from _abuse_harness import HANG, ordinary_traffic, raise_fd_limit, running_server

from trio_smtp.testing import SMTPClient

#: Short, so that the attackers are cut soon; long enough that the ordinary smtplib
#: senders (threads, in the process that runs every attacker) answer each reply in time
#: on a loaded machine.
COMMAND_TIMEOUT = 2.0
DRIBBLE_EVERY = 0.1


async def _dribbler(port: int, payload: bytes, *, data_phase: bool, cut: list[bytes]) -> None:
    client = await SMTPClient.connect("127.0.0.1", port)
    # Everything up to the first dribbled byte goes in one write, before any reply is
    # read: the command timeout then starts with the first byte already sent, whatever a
    # loaded machine does to this task between the replies.
    setup = [b"EHLO attacker.test"]
    if data_phase:
        setup += [b"MAIL FROM:<slow@attacker.test>", b"RCPT TO:<bob@example.net>", b"DATA"]
    await client.send(b"".join(line + b"\r\n" for line in setup) + payload[:1])
    sent = 1
    assert (await client.reply()).code == 220
    for expected in (250, 250, 250, 354) if data_phase else (250,):
        assert (await client.reply()).code == expected

    async def trickle() -> None:
        nonlocal sent
        # Never a whole line (or a whole body): one byte at a time, forever.
        for byte in (payload * 1000)[1:]:
            await trio.sleep(DRIBBLE_EVERY)
            try:
                await client.send(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        reply = await client.reply()
        cut.append(reply.lines[0])
        assert sent > 1, "cut before it dribbled a byte: the test proves nothing"
        assert reply.code == 421, reply
        assert reply.lines[0].startswith(b"421 4.4.2 timeout"), reply
        assert await client.expect_closed() == b""
        nursery.cancel_scope.cancel()
    await client.aclose()


async def _slowloris(n: int, *, data_phase: bool = False) -> None:
    raise_fd_limit(2 * n + 100)
    config = {"command_timeout": COMMAND_TIMEOUT, "data_timeout": COMMAND_TIMEOUT}
    async with running_server(config) as srv, ordinary_traffic(srv.port, at_least=4) as traffic:
        cut: list[bytes] = []
        # Payload without LF: MAIL commands a byte at a time, or body text with no end.
        payload = b"x" if data_phase else b"NOOP"
        with trio.fail_after(HANG + n * 0.1):  # a hang guard, not a speed check
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(
                        lambda: _dribbler(srv.port, payload, data_phase=data_phase, cut=cut)
                    )
        assert len(cut) == n
    # Every attacker was cut by the command (or data) timeout, however steadily it
    # trickled: the log names the timeout once per attacker and nothing else.
    assert len(srv.logger.matching("(timeout)")) == n
    # Ordinary senders got through the whole attack, none refused or cut.
    traffic.check(at_least=4)
    assert len(srv.sink.messages) == traffic.sent


async def test_slowloris_bounded_attackers_are_all_cut_at_the_command_timeout() -> None:
    await _slowloris(50)


async def test_slowloris_200_attackers_are_all_cut_at_the_command_timeout() -> None:
    await _slowloris(200)


async def test_slowloris_in_data_is_cut_at_the_data_timeout() -> None:
    await _slowloris(20, data_phase=True)

"""Connection floods: more connections at once than the server admits.

Past ``max_connections`` (and ``max_connections_per_ip`` per client address) a new
connection gets ``421 4.7.0`` and is closed at once, before any hook runs. Afterwards
the server must be back where it started: no connection, no leftover task, no memory
kept per refused or finished connection.
"""

from __future__ import annotations

import gc
import smtplib
import tracemalloc

import pytest
import trio
from _abuse_harness import HANG, raise_fd_limit, running_server, send_mail, settle, tasks_living

from trio_smtp.testing import ServerClosed, SMTPClient

MAX_CONNECTIONS = 50


async def _open(port: int, results: list[int], held: list[SMTPClient]) -> None:
    client = await SMTPClient.connect("127.0.0.1", port)
    reply = await client.reply()
    results.append(reply.code)
    if reply.code == 220:
        held.append(client)  # an admitted attacker holds its slot until told otherwise
        return
    assert reply.lines == [b"421 4.7.0 too many connections, try again later"], reply
    assert await client.expect_closed() == b""
    await client.aclose()


async def _flood(port: int, n: int) -> tuple[list[int], list[SMTPClient]]:
    results: list[int] = []
    held: list[SMTPClient] = []
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(_open, port, results, held)
    return results, held


async def test_flood_of_twice_max_connections_refuses_the_excess_and_recovers() -> None:
    raise_fd_limit(4 * MAX_CONNECTIONS + 100)
    connected: list[str] = []
    events = {"connect": lambda session: connected.append(session.id)}
    async with running_server({"max_connections": MAX_CONNECTIONS}, events=events) as srv:
        baseline_tasks = tasks_living()
        tracemalloc.start()
        try:
            memory: list[int] = []
            snapshots: list[tracemalloc.Snapshot] = []
            refusals = 0
            for _round in range(4):
                results, held = await _flood(srv.port, 2 * MAX_CONNECTIONS)
                assert results.count(220) == MAX_CONNECTIONS
                assert results.count(421) == MAX_CONNECTIONS
                assert srv.server.connections == MAX_CONNECTIONS
                # While the slots are full an ordinary sender is turned away too (421 is
                # a temporary refusal: it will retry) ...
                with pytest.raises(smtplib.SMTPConnectError) as refused:
                    await trio.to_thread.run_sync(lambda: send_mail(srv.port))
                assert refused.value.smtp_code == 421
                # ... and gets through as soon as the flood lets go.
                for client in held:
                    await client.aclose()
                await srv.wait_idle()
                await trio.to_thread.run_sync(lambda: send_mail(srv.port))
                await srv.wait_idle()
                await settle(lambda: tasks_living() == baseline_tasks)
                refusals += len(srv.logger.matching("max_connections"))
                srv.logger.lines.clear()  # the test's own record, not the server's memory
                gc.collect()
                memory.append(tracemalloc.get_traced_memory()[0])
                snapshots.append(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        # Only admitted connections reached the connect hook: 50 per round + the sender.
        assert len(connected) == 4 * (MAX_CONNECTIONS + 1)
        assert len(srv.sink.messages) == 4
        # The first round warms caches; later rounds must not keep anything per connection.
        growth = memory[-1] - memory[1]
        top = snapshots[-1].compare_to(snapshots[1], "lineno")[:5]
        assert growth < 32 * 1024, f"memory grew by {growth} bytes over two rounds: {top}"
        assert refusals == 4 * (MAX_CONNECTIONS + 1)  # the attackers and the turned-away sender


async def test_flood_from_one_address_does_not_lock_out_other_addresses() -> None:
    per_ip = 20
    config = {"max_connections_per_ip": per_ip, "command_timeout": 30.0}
    async with running_server(config) as srv:
        baseline_tasks = tasks_living()
        held: list[SMTPClient] = []
        codes: list[bytes] = []

        async def attacker() -> None:
            client = await SMTPClient.connect("127.0.0.1", srv.port)
            try:
                reply = await client.reply()
            except ServerClosed:
                codes.append(b"closed")
                return
            codes.append(reply.lines[0][:9])
            if reply.code == 220:
                held.append(client)
            else:
                assert reply.lines == [b"421 4.7.0 too many connections from your address"]
                assert await client.expect_closed() == b""
                await client.aclose()

        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                for _ in range(2 * per_ip):
                    nursery.start_soon(attacker)
        assert codes.count(b"220 mx.te") == per_ip
        assert codes.count(b"421 4.7.0") == per_ip
        # Another address is not counted against the attacker's quota.
        for _ in range(3):
            await trio.to_thread.run_sync(lambda: send_mail(srv.port, source="127.0.0.2"))
        assert [m.session.peer[0] for m in srv.sink.messages] == ["127.0.0.2"] * 3
        for client in held:
            await client.aclose()
        await srv.wait_idle()
        # The per-address counter was released: the attacker's address is welcome again.
        await trio.to_thread.run_sync(lambda: send_mail(srv.port))
        await srv.wait_idle()
        assert srv.server.connections_per_address == {}
        await settle(lambda: tasks_living() == baseline_tasks)

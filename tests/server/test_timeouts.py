"""Timeouts (RFC 5321 §4.5.3.2): idle, slowloris, slow bodies, slow hooks, clients that never read.

Most tests run one connection task over an in-memory stream with Trio's autojump clock, so
that minutes of protocol time pass in milliseconds; one test checks the same over a real
socket with a short real timeout.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from _live_server import Client, make_server, memory_connection, running_server

from trio_smtp import HookTimeout, Mail
from trio_smtp._connection_task import FAREWELL_TIMEOUT

IDLE = (421, "4.4.2 timeout waiting for a command; closing connection")
SLOW_DATA = (421, "4.4.2 timeout waiting for message data; closing connection")
COMMAND_TIMEOUT = 30.0
DATA_TIMEOUT = 100.0


@pytest.fixture
def socket_clock() -> trio.testing.MockClock:
    """The autojump clock for a test over a real socket: it jumps only after 0.1 s (real
    time) with nothing to do, not at once. Bytes that the kernel has not yet delivered
    (a loaded machine may defer loopback delivery to ksoftirqd) would otherwise let it
    jump to the next timeout while a command is still on its way."""
    return trio.testing.MockClock(autojump_threshold=0.1)


def server(events: dict[str, Any] | None = None, **config: Any) -> Any:
    config.setdefault("command_timeout", COMMAND_TIMEOUT)
    config.setdefault("data_timeout", DATA_TIMEOUT)
    srv, sink, logger = make_server(events, config=config)
    return srv, sink, logger


async def dribble(client: Client, data: bytes, every: float) -> None:
    """Send ``data`` one byte at a time, ``every`` seconds apart."""
    for i in range(len(data)):
        await trio.sleep(every)
        await client.send(data[i : i + 1])


def srv_id(sink: Any) -> str:
    return sink.messages[0].id if sink.messages else "(nothing delivered)"


async def in_data(client: Client) -> None:
    await client.reply()
    await client.expect("EHLO client.test", 250)
    await client.expect("MAIL FROM:<a@x.test>", 250)
    await client.expect("RCPT TO:<b@y.test>", 250)
    await client.expect("DATA", 354)


async def test_idle_client_gets_421_at_command_timeout(autojump_clock: Any) -> None:
    srv, _, logger = server()
    async with memory_connection(srv) as (client, run):
        await client.reply()
        start = trio.current_time()
        assert await client.reply() == IDLE
        assert trio.current_time() - start == pytest.approx(COMMAND_TIMEOUT)
        assert await client.closed()
        await run.finished.wait()
    assert logger.find("(timeout)")


async def test_each_complete_command_restarts_the_command_timeout(autojump_clock: Any) -> None:
    # Three commands each taking most of the timeout: 72 s in all, more than 30 s.
    srv, _, _ = server()
    async with memory_connection(srv) as (client, _run):
        await client.reply()
        start = trio.current_time()
        for _ in range(3):
            await dribble(client, b"NOOP\r\n", every=4.0)
            assert await client.reply() == (250, "2.0.0 OK")
        assert trio.current_time() - start == pytest.approx(72.0)


async def test_slowloris_dribbling_does_not_extend_the_command_timeout(
    autojump_clock: Any,
) -> None:
    # One byte a second of a line that never ends: each byte arrives well inside the
    # timeout, but the whole line must arrive within it.
    srv, _, _ = server()
    async with memory_connection(srv) as (client, run), trio.open_nursery() as nursery:
        await client.reply()
        start = trio.current_time()
        nursery.start_soon(dribble, client, b"MAIL FROM:<" + b"a" * 200, 1.0)
        assert await client.reply() == IDLE
        assert trio.current_time() - start == pytest.approx(COMMAND_TIMEOUT, abs=1.0)
        await run.finished.wait()
        nursery.cancel_scope.cancel()


async def test_partial_line_then_silence_is_cut_from_the_first_wait(autojump_clock: Any) -> None:
    srv, _, _ = server()
    async with memory_connection(srv) as (client, _run):
        await client.reply()
        start = trio.current_time()
        await trio.sleep(COMMAND_TIMEOUT - 5)
        await client.send(b"NO")
        assert await client.reply() == IDLE
        assert trio.current_time() - start == pytest.approx(COMMAND_TIMEOUT)


async def test_slow_body_is_cut_at_data_timeout_and_not_delivered(autojump_clock: Any) -> None:
    done_calls: list[Mail] = []
    srv, _, logger = server({"done": done_calls.append})
    async with memory_connection(srv) as (client, run), trio.open_nursery() as nursery:
        await in_data(client)
        start = trio.current_time()

        async def body() -> None:
            while True:  # a line every 20 s: fine for command_timeout, never ends
                await trio.sleep(20)
                await client.send(b"another line of the body\r\n")

        nursery.start_soon(body)
        assert await client.reply() == SLOW_DATA
        assert trio.current_time() - start == pytest.approx(DATA_TIMEOUT)
        await run.finished.wait()
        nursery.cancel_scope.cancel()
    assert done_calls == []
    assert logger.find("Message dropped")


async def test_body_pauses_longer_than_command_timeout_are_fine(autojump_clock: Any) -> None:
    # data_timeout, not command_timeout, governs the body.
    srv, sink, _ = server()
    async with memory_connection(srv) as (client, _run):
        await in_data(client)
        await client.send(b"first\r\n")
        await trio.sleep(COMMAND_TIMEOUT + 10)
        await client.send(b"second\r\n")
        await trio.sleep(COMMAND_TIMEOUT + 10)
        await client.send(b".\r\n")
        assert await client.reply() == (250, f"2.0.0 OK queued as {srv_id(sink)}")
    assert sink.messages[0].content == b"first\r\nsecond\r\n"


async def test_slow_bdat_chunk_is_cut_at_data_timeout(autojump_clock: Any) -> None:
    srv, sink, _ = server()
    async with memory_connection(srv) as (client, run), trio.open_nursery() as nursery:
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.send(b"BDAT 1000 LAST\r\n")
        start = trio.current_time()
        nursery.start_soon(dribble, client, b"x" * 1000, 10.0)
        assert await client.reply() == SLOW_DATA
        assert trio.current_time() - start == pytest.approx(DATA_TIMEOUT, abs=1.0)
        await run.finished.wait()
        nursery.cancel_scope.cancel()
    assert sink.messages == []


@pytest.mark.parametrize("abandon", ["RSET", "EHLO client.test"])
async def test_data_timeout_of_an_abandoned_bdat_transfer_does_not_outlive_it(
    autojump_clock: Any, abandon: str
) -> None:
    # A chunked transaction reset with RSET (or EHLO) must not leave its data deadline
    # behind for the next message.
    srv, sink, _ = server()
    async with memory_connection(srv) as (client, _run):
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.send(b"BDAT 3\r\n")
        await trio.sleep(1)  # the server waits for the chunk: a data deadline is set
        await client.send(b"abc")
        assert (await client.reply())[0] == 250
        await client.expect(abandon, 250)
        for _ in range(10):  # well past data_timeout, never idle for command_timeout
            await trio.sleep(COMMAND_TIMEOUT / 2)
            await client.expect("NOOP", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.send(b"BDAT 5 LAST\r\n")
        with trio.move_on_after(1) as waiting:  # the server waits for the chunk
            reply = await client.reply()
        assert waiting.cancelled_caught, f"got {reply} while the server should wait"
        await client.send(b"hello")
        assert (await client.reply())[0] == 250
    assert [m.content for m in sink.messages] == [b"hello"]


async def test_hook_timeout_with_the_autojump_clock(autojump_clock: Any) -> None:
    errors: list[BaseException] = []

    async def rcpt(ctx: Any) -> None:
        await trio.sleep_forever()

    async def error(exc: BaseException, mail: Any) -> None:
        # Async: a plain function runs in a worker thread, and the autojump clock
        # jumps while the loop waits for a thread.
        errors.append(exc)

    srv, _, _ = server({"RCPT": rcpt, "error": error})
    hook_timeout = srv.config.hook_timeout
    async with memory_connection(srv) as (client, _run):
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        start = trio.current_time()
        assert (await client.cmd("RCPT TO:<b@y.test>"))[0] == 451
        assert trio.current_time() - start == pytest.approx(hook_timeout)
        # The connection goes on, and its command timeout was not eaten by the hook.
        await client.expect("NOOP", 250)
    [failure] = errors
    assert isinstance(failure, HookTimeout)


async def test_a_client_that_never_reads_is_dropped(autojump_clock: Any) -> None:
    # With a lockstep stream every send waits for the client to read: the greeting
    # can never be delivered, and the task must still end.
    srv, _, logger = server()
    async with memory_connection(srv, lockstep=True) as (_client, run):
        start = trio.current_time()
        await run.finished.wait()
        elapsed = run.ended_at - start if run.ended_at is not None else None
    assert elapsed is not None
    assert elapsed <= COMMAND_TIMEOUT + FAREWELL_TIMEOUT + 1
    # Trio forbids sending again on a stream whose send_all was cancelled: no farewell
    # 421 may be attempted (the lockstep stream asserts on it), and no internal error.
    assert not logger.find("internal error")
    assert logger.find("(send timeout)")


async def test_idle_timeout_over_a_real_socket() -> None:
    async with running_server(config={"command_timeout": 0.5}) as live:
        client = await live.connect()
        await client.reply()
        assert await client.reply() == IDLE
        assert await client.closed()
        await live.wait_idle()
    assert live.logger.find("(timeout)")


async def test_commands_outliving_a_stale_deadline_over_a_real_socket(
    socket_clock: trio.testing.MockClock,
) -> None:
    # Over a plain socket the task moves its I/O deadline only when it must: a command
    # that arrives in time leaves the earlier (stale) deadline armed. When that fires
    # during the next wait, the wait goes on until its own deadline, and the idle
    # timeout still comes exactly command_timeout after the last reply.
    async with running_server(config={"command_timeout": COMMAND_TIMEOUT}) as live:
        client = await live.connect(timeout=10 * COMMAND_TIMEOUT)
        await client.reply()
        for _ in range(4):  # 2.4 timeouts in all: stale deadlines fire on the way
            await trio.sleep(COMMAND_TIMEOUT * 0.6)
            await client.expect("NOOP", 250)
        start = trio.current_time()
        assert await client.reply() == IDLE
        assert trio.current_time() - start == pytest.approx(COMMAND_TIMEOUT)
        assert await client.closed()
        await live.wait_idle()
    assert live.logger.find("(timeout)")


async def test_dribbled_line_after_a_stale_deadline_is_cut_at_its_own_wait(
    socket_clock: trio.testing.MockClock,
) -> None:
    # Slowloris over a real socket, with a stale deadline armed: the partial line gets
    # no extra time (the wait's deadline was set when it started), and none less.
    async with running_server(config={"command_timeout": COMMAND_TIMEOUT}) as live:
        client = await live.connect(timeout=10 * COMMAND_TIMEOUT)
        await client.reply()
        await trio.sleep(COMMAND_TIMEOUT * 0.6)
        await client.expect("NOOP", 250)
        start = trio.current_time()
        await dribble(client, b"NOO", every=COMMAND_TIMEOUT * 0.3)
        assert await client.reply() == IDLE
        assert trio.current_time() - start == pytest.approx(COMMAND_TIMEOUT)
        await live.wait_idle()


async def test_slow_hooks_and_a_slow_error_hook_keep_a_real_socket_connection(
    socket_clock: trio.testing.MockClock,
) -> None:
    # Over a plain socket a hook runs with the I/O deadline pushed past it rather than
    # lifted: a hook that overruns, followed by an error hook that takes nearly all of
    # its own hook_timeout, must still get its 451 and leave the session going.
    hook_timeout = 10.0
    errors: list[BaseException] = []

    async def rcpt(ctx: Any) -> None:
        if ctx.address.startswith("forever"):
            await trio.sleep_forever()
        await trio.sleep(hook_timeout * 0.9)

    async def error(exc: BaseException, mail: Any) -> None:
        errors.append(exc)
        await trio.sleep(hook_timeout * 0.9)

    config = {"command_timeout": 50.0, "data_timeout": 50.0, "hook_timeout": hook_timeout}
    async with running_server({"RCPT": rcpt, "error": error}, config=config) as live:
        client = await live.connect(timeout=10 * hook_timeout)
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        for _ in range(6):  # longer than command_timeout in all
            await client.expect("RCPT TO:<b@y.test>", 250)
        start = trio.current_time()
        assert (await client.command("RCPT TO:<forever@y.test>"))[0] == 451
        assert trio.current_time() - start == pytest.approx(1.9 * hook_timeout)
        await client.expect("NOOP", 250)
    [error_seen] = errors
    assert isinstance(error_seen, HookTimeout)

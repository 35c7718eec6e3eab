"""Graceful shutdown: finish the transaction in progress, then 421 4.3.2, then cancel the rest."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
from _live_server import HANG, Client, make_server, running_server

from trio_smtp import Mail

SHUTTING_DOWN = (421, "4.3.2 service shutting down, try again later")
#: A grace no test outlasts: the transaction in flight must finish by itself, however
#: slowly a loaded machine runs the client (the suite's default grace is 2 s).
LONG_GRACE = {"shutdown_grace": HANG}


async def test_shutdown_mid_data_lets_the_message_finish_then_says_421() -> None:
    async with running_server(config=LONG_GRACE) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        await live.wait_connections(1)
        live.server.shutdown()
        # Listeners close at once (the bound only ends a hang).
        with trio.fail_after(HANG):
            while True:
                try:
                    stream = await trio.open_tcp_stream(live.host, live.port)
                except OSError:
                    break
                await stream.aclose()
                await trio.sleep(0.01)
        await client.send(b"second half\r\n.\r\n")
        code, text = await client.reply()
        assert code == 250
        assert (
            live.sink.messages[0].content
            == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
        )
        assert text == f"2.0.0 OK queued as {live.sink.messages[0].id}"
        assert await client.cmd("NOOP") == SHUTTING_DOWN
        assert await client.closed()
    assert live.logger.find("Server stopped", "log")


async def test_shutdown_lets_a_transaction_before_data_finish() -> None:
    async with running_server(config=LONG_GRACE) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        live.server.shutdown()
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        # The next command is pipelined behind the final dot: it gets the 421.
        await client.send(b"late\r\n.\r\nMAIL FROM:<again@x.test>\r\n")
        assert (await client.reply())[0] == 250
        assert await client.reply() == SHUTTING_DOWN
        assert await client.closed()
    assert [m.content for m in live.sink.messages] == [b"late\r\n"]


async def test_idle_connections_get_421_promptly() -> None:
    async with running_server(config={"shutdown_grace": 30}) as live:
        idle = [await live.connect() for _ in range(3)]
        for client in idle:
            await client.reply()
        await idle[0].expect("EHLO client.test", 250)
        live.server.shutdown()
        # Promptly, not after the 30 s grace: the client's own timeout (10 s) is shorter.
        for client in idle:
            assert await client.reply() == SHUTTING_DOWN
            assert await client.closed()
        await live.wait_idle()


async def test_stuck_connection_is_cancelled_after_the_grace_period() -> None:
    server, sink, logger = make_server(config={"shutdown_grace": 0.3})
    stopped = trio.Event()

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await server.serve(task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(serve)
        client = Client(await trio.open_tcp_stream(host, port))
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(b"half a message that never ends\r\n")
        start = trio.current_time()
        server.shutdown()
        with trio.fail_after(HANG):  # a hang guard
            await stopped.wait()
        elapsed = trio.current_time() - start
        # Best effort: the cancelled connection still says why it closes.
        assert await client.reply() == SHUTTING_DOWN
        assert await client.closed()
        await client.aclose()
    # The stuck connection was given its grace, not cancelled at once. Not a speed check:
    # both ends read Trio's clock, ``start`` before shutdown() sets the deadline to its own
    # now + grace, so no load can make this fail. (The autojump clock cannot measure it
    # over a socket: it would jump while bytes are in flight. test_serve_stream checks the
    # grace's end on the autojump clock over memory streams.)
    assert elapsed >= 0.3
    assert sink.messages == []
    assert server.connections == 0
    assert logger.find("Message dropped")


async def test_done_hook_still_running_at_the_end_of_grace_never_gets_a_250() -> None:
    started = trio.Event()

    async def done(mail: Mail) -> None:
        started.set()
        await trio.sleep_forever()

    async with running_server({"done": done}, config={"shutdown_grace": 0.3}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(b"body\r\n.\r\n")
        await started.wait()
        live.server.shutdown()
        assert await client.reply() == SHUTTING_DOWN
        assert await client.closed()
    assert not live.logger.find("Message accepted")


async def test_shutdown_from_another_thread_stops_serve() -> None:
    server, _, logger = make_server()
    with trio.fail_after(HANG):  # the nursery only exits once serve() has returned
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            await trio.to_thread.run_sync(server.shutdown)
    assert logger.find("Server stopped")


async def test_shutdown_before_serve_makes_serve_return_at_once() -> None:
    server, _, logger = make_server()
    server.shutdown()
    with trio.fail_after(HANG):
        await server.serve()
    assert logger.find("Server stopped")


async def test_cancelling_serve_says_421_and_delivers_nothing() -> None:
    server, sink, _ = make_server()
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)
        idle = Client(await trio.open_tcp_stream(host, port))
        busy = Client(await trio.open_tcp_stream(host, port))
        await idle.reply()
        await busy.reply()
        await busy.expect("EHLO client.test", 250)
        await busy.expect("MAIL FROM:<a@x.test>", 250)
        await busy.expect("RCPT TO:<b@y.test>", 250)
        await busy.expect("DATA", 354)
        await busy.send(b"partial\r\n")
        nursery.cancel_scope.cancel()
    with trio.fail_after(HANG):
        for client in (idle, busy):
            assert await client.reply() == SHUTTING_DOWN
            assert await client.closed()
            await client.aclose()
    assert sink.messages == []


@pytest.mark.parametrize("grace", [0, 0.2])
async def test_serve_returns_once_every_connection_is_gone(grace: float) -> None:
    async with running_server(config={"shutdown_grace": grace}) as live:
        clients = [await live.connect() for _ in range(4)]
        for client in clients:
            await client.reply()
        live.server.shutdown()
    # running_server waited for serve() to return: nothing may be left running.
    assert live.server.connections == 0
    assert live.logger.find("Server shutting down: ", "log")


def test_threaded_server_stop_from_inside_another_trio_run() -> None:
    # ThreadedServer.stop() in a Trio program (a pytest-trio test, an app under test):
    # shutdown() runs in a Trio run that is not the server's.
    from trio_smtp.testing import ThreadedServer

    async def main() -> None:
        before = set(threading.enumerate())
        smtp = ThreadedServer().start()
        [thread] = [t for t in set(threading.enumerate()) - before if t.name == "trio_smtp-test"]
        smtp.stop()
        assert not thread.is_alive()

    trio.run(main)


async def test_the_close_hook_after_the_grace_is_bounded_by_it() -> None:
    # A transaction outlives the grace: the connection is cancelled, and its close
    # hook must not run for hook_timeout (an hour here) inside the shield.
    outcome: list[str] = []

    async def close(session: Any) -> None:
        try:
            await trio.sleep(30)
            outcome.append("ran to the end")
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    config = {"shutdown_grace": 0.2, "hook_timeout": 3600}
    async with running_server({"close": close}, config=config) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        live.server.shutdown()
        assert await client.reply() == SHUTTING_DOWN
    # running_server returned: serve() ended, so the close hook has ended too.
    assert outcome == ["cancelled"]


async def test_wait_connections_follows_the_count() -> None:
    async with running_server() as live:
        await live.server.wait_connections(0)
        first = await live.connect()
        second = await live.connect()
        await live.server.wait_connections(2)
        assert live.server.connections == 2
        await first.reply()
        await first.expect("QUIT", 221)
        await live.server.wait_connections(1)
        await second.reply()
        await second.expect("QUIT", 221)
        await live.server.wait_connections(0)
        assert live.server.connections == 0


# Moved from test_review_regressions.py


async def test_a_server_serves_again_after_shutdown() -> None:
    import smtplib

    import trio

    from trio_smtp import Server
    from trio_smtp.sinks import MemorySink

    sink = MemorySink()
    server = Server({"config": {"port": 0, "hostname": "mx.test"}}, {"sink": sink})
    for round_ in range(2):
        async with trio.open_nursery() as nursery:
            (_, port), *_ = await nursery.start(server.serve)

            def send(port: int = port, n: int = round_) -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=HANG) as s:
                    s.sendmail("a@x.test", ["b@y.test"], f"Subject: {n}\r\n\r\nx\r\n".encode())

            await trio.to_thread.run_sync(send)
            server.shutdown()
    assert [m.message["Subject"] for m in sink.messages] == ["0", "1"]

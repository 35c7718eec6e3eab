"""Hooks that raise, hang or are slow, many at once, while ordinary mail flows.

A failing hook costs its own client a ``451 4.3.0`` and fires ``error``; a hook that
hangs is cut at ``hook_timeout`` with the same 451. Each connection runs its hooks in
its own task, so none of this slows anybody else down, and every such session goes on
after the 451.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from _abuse_harness import HANG, running_server, send_mail

from trio_smtp import Mail, Reply
from trio_smtp.sinks import MemorySink
from trio_smtp.testing import SMTPTestServer

#: Short, so that hung hooks are cut soon; long enough that every other hook (a plain one
#: runs in a worker thread, beside twenty busy connections) finishes within it on a loaded
#: machine.
HOOK_TIMEOUT = 3.0
HOOK_FAILED = b"451 4.3.0 local error in processing; try again later"


class Hooks:
    """RCPT, MAIL and done hooks whose behaviour the address picks."""

    def __init__(self, *, slow_together: int = 0) -> None:
        self.errors: list[tuple[BaseException, Mail | None]] = []
        self.sink = MemorySink()
        #: Hooks hanging right now, how many ever started to, and how many were hanging
        #: at each ordinary delivery.
        self.hanging = 0
        self.hung = 0
        self.hanging_at_delivery: list[int] = []
        self.hanging_changed = trio.Event()
        #: "slow" hooks wait until this many are running at once (0: a plain 0.3 s sleep).
        self.slow_together = slow_together
        self.slow_running = 0
        self.all_slow_running = trio.Event()

    def _hanging(self, delta: int) -> None:
        self.hanging += delta
        self.hung += delta > 0
        self.hanging_changed.set()
        self.hanging_changed = trio.Event()

    async def wait_hanging(self, n: int) -> None:
        """Wait until ``n`` hooks hang at the same time."""
        with trio.fail_after(HANG):
            while self.hanging < n:
                await self.hanging_changed.wait()

    async def wait_hung(self, n: int) -> None:
        """Wait until ``n`` hooks have started to hang (some may have been cut since)."""
        with trio.fail_after(HANG):
            while self.hung < n:
                await self.hanging_changed.wait()

    def mail(self, ctx: Any) -> None:  # a plain (sync) hook
        if ctx.address.startswith("raise@"):
            raise ValueError("sync hook failure")

    async def rcpt(self, ctx: Any) -> None:
        user = ctx.address.split("@")[0]
        if user == "raise":
            raise RuntimeError("async hook failure")
        if user == "hang":
            self._hanging(+1)
            try:
                await trio.sleep_forever()
            finally:
                self._hanging(-1)
        if user == "slow" and self.slow_together:
            # Proves concurrency by construction: serialized hooks never fill the room,
            # and the first one would be cut at hook_timeout instead of answering 250.
            self.slow_running += 1
            if self.slow_running == self.slow_together:
                self.all_slow_running.set()
            await self.all_slow_running.wait()
        elif user == "slow":
            await trio.sleep(0.3)
        if user == "reply":
            raise Reply(550, "5.1.1 no such user here")

    async def done(self, mail: Mail) -> None:
        if mail.mail_from.startswith("hang@"):
            self._hanging(+1)
            try:
                await trio.sleep_forever()
            finally:
                self._hanging(-1)
        self.hanging_at_delivery.append(self.hanging)
        await self.sink.deliver(mail)

    def error(self, error: BaseException, mail: Mail | None) -> None:
        self.errors.append((error, mail))

    def events(self) -> dict[str, Any]:
        return {"MAIL": self.mail, "RCPT": self.rcpt, "done": self.done, "error": self.error}


async def _send_ordinary(srv: SMTPTestServer, n: int) -> None:
    for i in range(n):
        await trio.to_thread.run_sync(functools.partial(send_mail, srv.port, subject=f"p{i}"))


async def _hung_rcpt(srv: SMTPTestServer, cut: list[bytes]) -> None:
    client = await srv.connect(timeout=HANG)  # its RCPT waits for the hook_timeout
    await client.greet()
    assert (await client.command(b"MAIL FROM:<ann@example.org>")).code == 250
    reply = await client.command(b"RCPT TO:<hang@example.net>")
    cut.append(reply.lines[0])
    assert reply.lines == [HOOK_FAILED]
    # The session goes on: the next recipient is fine and the message goes through.
    assert (await client.command(b"RCPT TO:<bob@example.net>")).code == 250
    assert (await client.command(b"DATA")).code == 354
    assert (await client.command(b"Subject: after a hung hook\r\n\r\nok\r\n.")).code == 250


async def test_twenty_hung_hooks_get_451_at_the_timeout_and_slow_nobody_else() -> None:
    hooks = Hooks()
    # Long enough that all twenty reach their hook and then ordinary mail (one smtplib
    # session) goes through while they all hang, even on a loaded 2-core machine: what is
    # checked is that order, not a duration.
    config = {"hook_timeout": 10.0}
    async with running_server(config, events=hooks.events()) as srv:
        await _send_ordinary(srv, 2)
        cut: list[bytes] = []
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(_hung_rcpt, srv, cut)
            await hooks.wait_hanging(20)
            await _send_ordinary(srv, 1)
            assert not cut, "ordinary mail was only served once the hung hooks ended"
    assert cut == [HOOK_FAILED] * 20
    # The ordinary message was delivered while all twenty hooks hung.
    assert hooks.hanging_at_delivery[:3] == [0, 0, 20]
    timeouts = [e for e, _ in hooks.errors if "did not finish within" in str(e)]
    assert len(timeouts) == len(hooks.errors) == 20
    assert all(mail is not None and mail.mail_from == "ann@example.org" for _, mail in hooks.errors)
    subjects = [m.message["Subject"] for m in hooks.sink.messages]
    assert subjects.count("after a hung hook") == 20
    assert len(subjects) == 23


async def test_raising_hooks_get_451_and_the_error_event_while_others_are_served() -> None:
    hooks = Hooks()
    # No hook hangs here: a hang-sized hook_timeout, so that no plain hook (a worker
    # thread, among twenty connections' worth) is ever cut on a loaded machine.
    async with running_server({"hook_timeout": HANG}, events=hooks.events()) as srv:

        async def raiser() -> None:
            client = await srv.connect()
            await client.greet()
            for _ in range(5):
                # A plain hook that raises on MAIL ...
                reply = await client.command(b"MAIL FROM:<raise@example.org>")
                assert reply.lines == [HOOK_FAILED]
                assert (await client.command(b"MAIL FROM:<ann@example.org>")).code == 250
                # ... an async one on RCPT, and a Reply raised on purpose, which is no error.
                assert (await client.command(b"RCPT TO:<raise@example.net>")).lines == [HOOK_FAILED]
                reply = await client.command(b"RCPT TO:<reply@example.net>")
                assert reply.lines == [b"550 5.1.1 no such user here"]
                assert (await client.command(b"RSET")).code == 250

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(raiser)
            await _send_ordinary(srv, 5)
    kinds = sorted({type(e).__name__ for e, _ in hooks.errors})
    assert kinds == ["RuntimeError", "ValueError"]
    assert len(hooks.errors) == 20 * 5 * 2
    # 451 is a transient reply: it is not counted towards max_bad_commands, so nobody
    # was disconnected for it (each raiser got through all its rounds above).
    assert len(hooks.sink.messages) == 5


async def test_slow_hooks_run_concurrently_not_one_after_another() -> None:
    n = 50
    hooks = Hooks(slow_together=n)
    # Every "slow" hook waits until all n are running at once: serialized hooks would
    # each be cut at hook_timeout with a 451 instead of answering 250.
    async with running_server({"hook_timeout": 30.0}, events=hooks.events()) as srv:
        answered: list[int] = []

        async def slow() -> None:
            client = await srv.connect()
            await client.greet()
            assert (await client.command(b"MAIL FROM:<ann@example.org>")).code == 250
            answered.append((await client.command(b"RCPT TO:<slow@example.net>")).code)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(slow)
            await _send_ordinary(srv, 3)
    assert answered == [250] * n
    assert hooks.slow_running == n
    assert hooks.errors == []


async def test_hung_done_hooks_get_451_after_the_dot_and_nothing_is_acknowledged() -> None:
    hooks = Hooks()
    async with running_server({"hook_timeout": HOOK_TIMEOUT}, events=hooks.events()) as srv:
        replies: list[bytes] = []

        async def hung_done() -> None:
            client = await srv.connect()
            await client.greet()
            for line in (b"MAIL FROM:<hang@example.org>", b"RCPT TO:<bob@example.net>"):
                assert (await client.command(line)).code == 250
            assert (await client.command(b"DATA")).code == 354
            reply = await client.command(b"Subject: never stored\r\n\r\nx\r\n.")
            replies.append(reply.lines[0])
            assert (await client.command(b"NOOP")).code == 250

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(hung_done)
            # Started, not all at once: on a loaded machine the first may be cut (after
            # HOOK_TIMEOUT) before the last client has sent its dot.
            await hooks.wait_hung(20)
            await _send_ordinary(srv, 5)
    assert replies == [HOOK_FAILED] * 20
    assert [m.mail_from for m in hooks.sink.messages] == ["ann@example.org"] * 5
    assert len(hooks.errors) == 20
    assert all(
        mail is not None and mail.mail_from == "hang@example.org" for _, mail in hooks.errors
    )


async def test_a_data_factory_that_raises_refuses_its_connection_not_the_server() -> None:
    """``schema["data"]`` runs per connection; when it fails, only that client hears 421."""
    calls = 0

    def flaky_state() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("cannot build per-connection state")
        return {"n": calls}

    config = {"hook_timeout": HOOK_TIMEOUT}
    async with running_server(config, data=flaky_state, internal_errors=True) as srv:
        codes: list[bytes] = []

        async def connect() -> None:
            client = await srv.connect()
            reply = await client.reply()
            codes.append(reply.lines[0])
            if reply.code == 220:
                assert (await client.command(b"QUIT")).code == 221
            else:
                assert await client.expect_closed() == b""

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(connect)
        assert codes.count(b"421 4.3.0 local error in processing; try again later") == 10
        assert sorted(code[:4] for code in codes) == [b"220 "] * 10 + [b"421 "] * 10
        await srv.wait_idle()
        assert srv.server.connections_per_address == {}
    assert len(srv.logger.matching("cannot build per-connection state")) == 10

"""The brakes on password guessing, driven directly (the clock is Trio's autojump clock).

The same rules over real sockets are in ``test_auth_guessing.py``.
"""

from __future__ import annotations

import base64
import threading
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trio_smtp import Server
from trio_smtp._auth_guard import AuthGuard, LocalFailureBudget

#: A bound on waits that only a bug makes long (a hang guard, not a timing check).
HANG_GUARD = 60.0


async def test_delay_grows_with_each_failure_up_to_a_cap(autojump_clock: trio.abc.Clock) -> None:
    guard = AuthGuard(
        LocalFailureBudget(100, window=3600.0), failure_delay=1.0, max_failure_delay=5.0
    )
    waited = []
    for _ in range(7):
        start = trio.current_time()
        await guard.failed("192.0.2.1")
        waited.append(round(trio.current_time() - start, 6))
    assert waited == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]
    # Another address starts from the beginning.
    start = trio.current_time()
    await guard.failed("192.0.2.2")
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_no_delay_when_switched_off(autojump_clock: trio.abc.Clock) -> None:
    guard = AuthGuard(LocalFailureBudget(100), failure_delay=0.0)
    start = trio.current_time()
    for _ in range(5):
        await guard.failed("192.0.2.1")
    assert trio.current_time() == start


async def test_budget_blocks_after_the_limit_and_refills_over_the_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    budget = LocalFailureBudget(10, window=60.0)
    for n in range(1, 11):
        assert not budget.exhausted("192.0.2.9")
        assert budget.record_failure("192.0.2.9") == n
    assert budget.exhausted("192.0.2.9")
    assert not budget.exhausted("192.0.2.10")
    await trio.sleep(5.9)
    assert budget.exhausted("192.0.2.9")
    await trio.sleep(0.2)  # 6 s: one failure's worth has drained (10 per minute)
    assert not budget.exhausted("192.0.2.9")
    budget.record_failure("192.0.2.9")
    assert budget.exhausted("192.0.2.9")
    await trio.sleep(60.0)
    assert not budget.exhausted("192.0.2.9")


async def test_budget_memory_is_bounded(autojump_clock: trio.abc.Clock) -> None:
    budget = LocalFailureBudget(3, max_addresses=100)
    for i in range(1000):
        budget.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(budget._buckets) <= 100
    # The most recent offenders are the ones kept.
    assert budget.record_failure("10.0.3.231") == 2


async def test_password_checks_have_their_own_threads() -> None:
    """A flood of slow checks runs ``threads`` at a time and leaves Trio's pool free.

    No timing: the test waits (in a thread) until two checks are really inside the
    authenticator, and the checks wait for the test; the bounds are hang guards only.
    """
    release = threading.Event()
    both_running = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_check(_mechanism: str, _login: str, _password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            if running == 2:
                both_running.set()
        assert release.wait(HANG_GUARD)
        with lock:
            running -= 1
        return False

    guard = AuthGuard(LocalFailureBudget(), threads=2)
    async with trio.open_nursery() as nursery:
        for _ in range(60):  # more than Trio's default limiter (40 threads)
            nursery.start_soon(guard.verify, slow_check, "PLAIN", "u", "p")
        # Two checks are inside the authenticator (however slowly their threads start),
        # and this wait is itself a thread of Trio's default pool: it is not full.
        with trio.fail_after(HANG_GUARD):
            assert await trio.to_thread.run_sync(both_running.wait, HANG_GUARD)
            # Storage work in Trio's default thread pool is not stuck behind the checks.
            assert await trio.to_thread.run_sync(lambda: "stored") == "stored"
        await trio.testing.wait_all_tasks_blocked()
        assert guard.limiter.borrowed_tokens == 2
        with lock:
            assert running == 2
        release.set()
    assert most == 2
    assert running == 0


# ------------------------------------------------------------------ through a connection


class _Quiet:
    def __getattr__(self, _level: str) -> Any:
        return lambda _message: None


async def test_each_failed_auth_is_answered_later_than_the_last(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Over a connection (memory streams): 535 after 1 s, then 2 s; 235 without delay."""

    async def auth(ctx: Any) -> bool:
        # An async hook: no thread, so the autojump clock never jumps past a check.
        return (ctx.login, ctx.password) == ("alice", "pw")

    server = Server(
        {
            "config": {"port": 0, "hostname": "mx.test", "auth_insecure": True},
            "events": {"AUTH": auth},
        },
        {"logger": _Quiet()},
    )
    client, server_stream = trio.testing.memory_stream_pair()
    buffer = b""

    async def reply() -> bytes:
        nonlocal buffer
        while b"\r\n" not in buffer:
            buffer += await client.receive_some()
        line, _, buffer = buffer.partition(b"\r\n")
        return line

    async def command(line: str) -> tuple[bytes, float]:
        await client.send_all(line.encode() + b"\r\n")
        start = trio.current_time()
        while True:
            answer = await reply()
            if answer[3:4] != b"-":
                return answer, trio.current_time() - start

    def plain(login: str, password: str) -> str:
        return "AUTH PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, server_stream, peer=("192.0.2.1", 40000)))
        assert (await reply()).startswith(b"220")
        await command("EHLO client.test")
        first, waited_first = await command(plain("alice", "wrong"))
        second, waited_second = await command(plain("alice", "wrong again"))
        third, waited_third = await command(plain("alice", "pw"))
        await client.send_all(b"QUIT\r\n")
        await client.aclose()
    assert first.startswith(b"535 5.7.8")
    assert second.startswith(b"535 5.7.8")
    assert third.startswith(b"235")
    # The delay follows the address's failures (the bucket drains 10 per minute).
    assert waited_first == pytest.approx(1.0, abs=0.01)
    assert waited_second == pytest.approx(2.0, abs=0.01)
    assert waited_third < 0.01

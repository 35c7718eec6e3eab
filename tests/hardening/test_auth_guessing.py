"""Password guessing over real sockets: a budget per address, own threads, authzid.

Attacks: (1) thousands of guesses per second from one address by reconnecting, since
the only limit was per connection; (2) slow password checks (PBKDF2) from many
connections filling Trio's thread pool, so that storing an ordinary message waited
behind them; (3) ``AUTH PLAIN admin\\0alice\\0pw`` authenticating as alice while
claiming to act for admin, the authzid silently ignored.
"""

from __future__ import annotations

import base64
import smtplib
import threading
from pathlib import Path
from typing import Any

import trio
from _harden_support import CLIENT_THREADS, TIMEOUT, serving, smtp

from trio_smtp import Reply
from trio_smtp.sinks import MaildirSink


def plain(login: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


class Recorder:
    """An authenticator (``alice``/``pw``) that counts how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, _mechanism: str, login: str, password: str) -> bool:
        self.calls += 1
        return (login, password) == ("alice", "pw")


async def _auth(port: int, *attempts: str) -> list[tuple[int, bytes]]:
    def use(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.ehlo()
        return [client.docmd("AUTH", f"PLAIN {attempt}") for attempt in attempts]

    return await smtp(port, use)


async def test_failures_from_one_address_are_counted_across_connections() -> None:
    check = Recorder()
    config = {"auth_insecure": True, "max_auth_failures_per_ip": 4, "auth_failure_delay": 0}
    async with serving(config, deps={"authenticator": check}) as live:
        first = await _auth(live.port, plain("alice", "guess1"), plain("alice", "guess2"))
        second = await _auth(live.port, plain("bob", "guess3"), plain("carol", "guess4"))
        # The budget is spent: even the right password is not checked now.
        third = await _auth(live.port, plain("alice", "pw"), plain("alice", "guess5"))
    assert [code for code, _ in first + second] == [535] * 4
    assert [code for code, _ in third] == [454, 454]
    assert third[0][1].startswith(b"4.7.0 ")
    assert check.calls == 4
    assert "too many failed authentication attempts" in live.logger.text


async def test_a_success_is_still_possible_within_the_budget() -> None:
    check = Recorder()
    config = {"auth_insecure": True, "max_auth_failures_per_ip": 3, "auth_failure_delay": 0}
    async with serving(config, deps={"authenticator": check}) as live:
        replies = await _auth(live.port, plain("alice", "nope"), plain("alice", "pw"))
    assert [code for code, _ in replies] == [535, 235]


async def test_password_checks_do_not_hold_up_storage(tmp_path: Path) -> None:
    """60 checks stuck in flight; a message is still stored in the Maildir (a thread)."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow_check(_mechanism: str, _login: str, _password: str) -> bool:
        started.release()
        release.wait(TIMEOUT * 3)
        return False

    config = {
        "auth_insecure": True,
        "auth_failure_delay": 0,
        "max_auth_failures_per_ip": 1000,
        "max_connections_per_ip": 100,
        "hook_timeout": TIMEOUT * 3,
    }
    deps = {"authenticator": slow_check, "sink": MaildirSink(tmp_path / "Maildir")}
    async with serving(config, deps=deps) as live:
        streams: list[trio.SocketStream] = []
        try:
            for _ in range(60):  # more than Trio's default thread limiter (40)
                stream = await trio.open_tcp_stream("127.0.0.1", live.port)
                streams.append(stream)
                await stream.send_all(f"EHLO x\r\nAUTH PLAIN {plain('bob', 'guess')}\r\n".encode())
            # Checks are running (waited for in a thread outside Trio's default pool).
            await trio.to_thread.run_sync(started.acquire, limiter=CLIENT_THREADS)

            def send(client: smtplib.SMTP) -> dict[str, Any]:
                return client.sendmail(
                    "ann@client.test", ["bob@mx.test"], b"Subject: x\r\n\r\nhi\r\n"
                )

            with trio.fail_after(TIMEOUT):
                assert await smtp(live.port, send) == {}
        finally:
            release.set()
            for stream in streams:
                await stream.aclose()
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1


async def test_plain_authzid_other_than_the_login_is_refused() -> None:
    check = Recorder()
    config = {"auth_insecure": True, "auth_failure_delay": 0}
    async with serving(config, deps={"authenticator": check}) as live:
        replies = await _auth(
            live.port,
            plain("alice", "pw", authzid="admin"),
            plain("alice", "pw", authzid="alice"),  # the same identity is fine
        )
    assert replies[0] == (535, b"5.7.8 authorization identity not permitted")
    assert replies[1][0] == 235
    assert check.calls == 1  # the refused one was not even checked


async def test_an_auth_hook_may_allow_an_authzid() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def auth(ctx: Any) -> bool | Reply | None:
        seen.append((ctx.login, ctx.authzid))
        if ctx.authzid == "shared-mailbox" and ctx.login == "alice":
            return bool(ctx.password == "pw")
        return None  # the default: the authenticator, and authzid refused

    check = Recorder()
    config = {"auth_insecure": True, "auth_failure_delay": 0}
    async with serving(config, events={"AUTH": auth}, deps={"authenticator": check}) as live:
        allowed = await _auth(live.port, plain("alice", "pw", authzid="shared-mailbox"))
        refused = await _auth(live.port, plain("alice", "pw", authzid="admin"))
    assert allowed[0][0] == 235
    assert refused[0] == (535, b"5.7.8 authorization identity not permitted")
    assert seen == [("alice", "shared-mailbox"), ("alice", "admin")]

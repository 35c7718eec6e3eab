"""Regressions for bugs found in the final library review."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from _live_server import running_server

from trio_smtp.engine import NEED_DATA, CommandRejected, Engine


def test_size_with_a_non_ascii_digit_is_a_501_not_a_crash() -> None:
    # "²".isdigit() is True but int("²") raises: the engine must answer, not raise.
    engine = Engine()
    engine.greet()
    engine.receive_data("EHLO x\r\nMAIL FROM:<a@b.test> SIZE=\u00b2\r\n".encode())
    engine.next_event()
    engine.respond()
    event = engine.next_event()
    assert isinstance(event, CommandRejected)
    assert event.reply.code == 501
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send().endswith(b"501 5.5.4 bad SIZE value\r\n")


async def test_an_authenticator_that_raises_gets_451_and_the_error_event() -> None:
    errors: list[BaseException] = []

    def authenticator(mechanism: str, login: str, password: str) -> bool:
        raise ConnectionError("user database unreachable")

    def error(exc: BaseException, mail: Any) -> None:
        errors.append(exc)

    async with running_server(
        {"error": error},
        config={"auth_insecure": True},
        deps={"authenticator": authenticator},
    ) as live:
        client = await live.connect()
        assert (await client.reply())[0] == 220
        token = base64.b64encode(b"\0bob\0secret-pw").decode()
        await client.send(f"EHLO c.test\r\nAUTH PLAIN {token}\r\n".encode())
        assert (await client.reply())[0] == 250
        code, text = await client.reply()
        assert (code, text) == (451, "4.3.0 local error in processing; try again later")
        # The session goes on, as after a failing hook.
        await client.send(b"NOOP\r\n")
        assert (await client.reply())[0] == 250
    assert [type(e) for e in errors] == [ConnectionError]
    assert not live.logger.find("internal error")
    assert not any("secret-pw" in m for m in live.logger.messages())


def test_workers_with_a_bad_auth_file_exit_2_instead_of_restarting_forever(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "users"
    auth.write_text("no colon here\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_smtp",
            "--port",
            "0",
            "--workers",
            "2",
            "--auth-file",
            str(auth),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "expected user:password" in result.stderr
    assert "Supervisor" not in result.stderr


async def test_a_hanging_authenticator_gets_451_at_hook_timeout() -> None:
    import threading

    import trio

    release = threading.Event()
    errors: list[BaseException] = []

    def authenticator(mechanism: str, login: str, password: str) -> bool:
        release.wait(10)  # a user database that never answers
        return True

    try:
        async with running_server(
            {"error": lambda exc, mail: errors.append(exc)},
            config={"auth_insecure": True, "hook_timeout": 0.3},
            deps={"authenticator": authenticator},
        ) as live:
            client = await live.connect()
            assert (await client.reply())[0] == 220
            token = base64.b64encode(b"\0bob\0pw").decode()
            await client.send(f"EHLO c.test\r\nAUTH PLAIN {token}\r\n".encode())
            assert (await client.reply())[0] == 250
            with trio.fail_after(5):
                assert (await client.reply())[0] == 451
            await client.send(b"NOOP\r\n")
            assert (await client.reply())[0] == 250
    finally:
        release.set()
    assert [type(e).__name__ for e in errors] == ["HookTimeout"]


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
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                    s.sendmail("a@x.test", ["b@y.test"], f"Subject: {n}\r\n\r\nx\r\n".encode())

            await trio.to_thread.run_sync(send)
            server.shutdown()
    assert [m.message["Subject"] for m in sink.messages] == ["0", "1"]


def test_auth_mechanisms_are_checked_and_upper_cased() -> None:
    import pytest

    from trio_smtp import ServerConfig

    assert ServerConfig(auth_mechanisms=["plain", "Login"]).auth_mechanisms == ("PLAIN", "LOGIN")
    with pytest.raises(ValueError, match="unsupported mechanism 'CRAM-MD5'"):
        ServerConfig(auth_mechanisms=("CRAM-MD5",))

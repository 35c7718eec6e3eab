"""Every hook failure is logged at ERROR with the hook's name (issue 12).

With the traceback where there is one (a hook that raised, lifecycle hooks included), and
with the time it was given when it overran; over a real socket, into a recording logger.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

import trio

from trio_smtp import Server
from trio_smtp.testing import RecordingLogger


async def _session(events: dict[str, Callable[..., Any]], **config: Any) -> RecordingLogger:
    """One client: EHLO, MAIL, RCPT, QUIT; the server's log once the connection closed."""
    logger = RecordingLogger()
    server = Server(
        {"events": events, "config": {"port": 0, "hostname": "mx.test", **config}},
        {"logger": logger},
    )
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)

        def client() -> None:
            with smtplib.SMTP(host, port, timeout=60) as smtp:
                smtp.ehlo()
                smtp.mail("a@x.test")
                smtp.rcpt("b@y.test")

        await trio.to_thread.run_sync(client)
        await server.wait_connections(0)
        server.shutdown()
    return logger


def _errors(logger: RecordingLogger) -> list[str]:
    return [message for level, message in logger.lines if level == "error"]


async def test_a_failing_close_hook_is_logged_with_its_name_and_traceback() -> None:
    def close(session: object) -> None:
        {"present": 1}["gone"]  # a bug in the application's hook

    [line] = _errors(await _session({"close": close}))
    first, *rest = line.split("\n")
    assert first.startswith("Hook 'close' failed: id=")
    assert first.endswith("KeyError('gone')")
    assert rest[0] == "    Traceback (most recent call last):"
    assert any("in close" in part for part in rest)


async def test_a_failing_error_hook_is_logged_with_its_name_and_traceback() -> None:
    def rcpt(ctx: object) -> None:
        raise RuntimeError("rcpt broke")

    def error(exc: BaseException, mail: object) -> None:
        raise ValueError("error hook broke too")

    rcpt_line, error_line = _errors(await _session({"RCPT": rcpt, "error": error}))
    assert rcpt_line.startswith("Hook 'RCPT' failed: id=")
    assert error_line.startswith("Hook 'error' failed: id=")
    assert "ValueError('error hook broke too')" in error_line.split("\n")[0]
    assert "Traceback (most recent call last):" in error_line
    assert "in error" in error_line


async def test_a_command_hook_that_overruns_is_logged_with_its_name_and_limit() -> None:
    async def rcpt(ctx: object) -> None:
        await trio.sleep_forever()

    [line] = _errors(await _session({"RCPT": rcpt}, hook_timeout=0.2))
    assert line.startswith("Hook 'RCPT' failed: id=")
    assert "did not finish within 0.2 s" in line
    assert "Traceback" not in line  # a timeout has no traceback worth printing


async def test_a_lifecycle_hook_that_overruns_is_logged_with_its_name_and_limit() -> None:
    async def close(session: object) -> None:
        await trio.sleep_forever()

    [line] = _errors(await _session({"close": close}, hook_timeout=0.2))
    assert line.startswith("Hook 'close' failed: id=")
    assert "did not finish within 0.2 s" in line


async def test_a_hook_that_returns_no_reply_is_logged_with_its_name() -> None:
    def rcpt(ctx: object) -> int:
        return 42

    [line] = _errors(await _session({"RCPT": rcpt}))
    assert line.startswith("Hook 'RCPT' failed: id=")
    assert "returned 42, not a Reply" in line

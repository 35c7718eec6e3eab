"""The message log line's Subject is parsed only when the record will be written.

Parsing the header block of every message costs about a fifth of a small message's CPU
(issue 15); a logger set to drop the record (the built-in ``Logger`` above ``info``, or a
``logging.Logger`` that is not enabled for it) must not pay for it.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from _live_server import running_server

from trio_smtp import Logger, _message_log
from trio_smtp._logger import StdlibLogger

MESSAGE = b"Subject: cost check\r\n\r\nhello\r\n.\r\n"


async def _one_message(logger: Any) -> None:
    async with running_server({"done": _discard}, config={}, deps={"logger": logger}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(MESSAGE)
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)


async def _discard(mail: Any) -> None:
    pass


@pytest.fixture
def subjects_read(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    real = _message_log.read_subject

    async def counting(mail: Any) -> str | None:
        calls.append(mail)
        return await real(mail)

    monkeypatch.setattr(_message_log, "read_subject", counting)
    return calls


async def test_a_logger_that_drops_info_costs_no_subject_parsing(
    subjects_read: list[object],
) -> None:
    out = io.StringIO()
    await _one_message(Logger(level="warn", stream=out))
    assert subjects_read == []
    assert "Message accepted" not in out.getvalue()


async def test_a_logger_that_writes_info_gets_the_subject(subjects_read: list[object]) -> None:
    out = io.StringIO()
    await _one_message(Logger(level="info", stream=out))
    assert len(subjects_read) == 1
    assert 'subject="cost check"' in out.getvalue()


async def test_a_stdlib_logger_not_enabled_for_info_costs_nothing(
    subjects_read: list[object],
) -> None:
    std = logging.getLogger("trio_smtp.test.message_log_cost")
    std.setLevel(logging.WARNING)
    await _one_message(StdlibLogger(std))
    assert subjects_read == []

"""fail / delay / tempfail_rate on both kinds of test server, and the log of what happened."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
import trio

from trio_smtp import Reply
from trio_smtp.testing import SMTPServerFactory, SMTPTestServer, ThreadedServer, serving

MESSAGE = b"Subject: hi\r\n\r\nhi\r\n"


def _send(port: int, to: list[str], sender: str = "app@example.org") -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        return smtp.sendmail(sender, to, MESSAGE)


async def test_fail_rcpt_times_and_match_on_the_trio_server(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("RCPT", 451, "4.3.0 later", times=2, match="ann@example.com")
    to = ["ann@example.com", "bob@example.com"]
    for _ in range(2):
        refused = await trio.to_thread.run_sync(_send, smtp_server.port, to)
        assert refused == {"ann@example.com": (451, b"4.3.0 later")}
    assert await trio.to_thread.run_sync(_send, smtp_server.port, to) == {}
    await smtp_server.wait_for(3)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bob@example.com"]] * 2 + [to]
    rcpt_log = [line for line in smtp_server.log if line.startswith("RCPT ann")]
    assert rcpt_log == ["RCPT ann@example.com -> 451 4.3.0 later"] * 2 + ["RCPT ann@example.com"]
    assert len(smtp_server.messages_to("ANN@example.com")) == 1


async def test_the_log_is_every_event_in_order(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("MAIL", 421, "4.7.0 go away")
    with pytest.raises(smtplib.SMTPSenderRefused):
        await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"])
    assert [line.split(" ", 1)[0] for line in smtp_server.log] == ["connect", "EHLO", "MAIL"]
    assert smtp_server.log[-1] == "MAIL app@example.org -> 421 4.7.0 go away"


@pytest.mark.parametrize("event", ["connect", "MAIL", "DATA", "done"])
async def test_fail_any_answering_event(smtp_server: SMTPTestServer, event: str) -> None:
    smtp_server.fail(event, 554, "5.7.1 injected")
    with pytest.raises(smtplib.SMTPException) as info:
        await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"])
    assert "5.7.1 injected" in str(info.value)
    assert smtp_server.messages == []  # a failed done stores nothing
    assert any(line.endswith("-> 554 5.7.1 injected") for line in smtp_server.log)
    # times=1: the next attempt goes through.
    assert await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"]) == {}


async def test_failures_wrap_the_tests_own_hooks(smtp_server_factory: SMTPServerFactory) -> None:
    seen: list[str] = []

    def rcpt(ctx: Any) -> None:  # a plain hook stays plain
        seen.append(ctx.address)
        if ctx.address.startswith("nobody@"):
            raise Reply(550, "5.1.1 no such user")

    server = await smtp_server_factory({"events": {"RCPT TO": rcpt}})
    server.fail("RCPT", 452, "4.2.2 full", match="@full.example")
    to = ["ann@example.com", "nobody@example.com", "x@full.example"]
    refused = await trio.to_thread.run_sync(_send, server.port, to)
    assert refused == {
        "nobody@example.com": (550, b"5.1.1 no such user"),
        "x@full.example": (452, b"4.2.2 full"),
    }
    # The injected failure answered before the test's hook ran.
    assert seen == ["ann@example.com", "nobody@example.com"]


async def test_delay_past_the_hook_timeout_is_a_451(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(hook_timeout=0.2)
    server.delay("RCPT", 3600)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await trio.to_thread.run_sync(_send, server.port, ["ann@example.com"])
    assert info.value.recipients["ann@example.com"][0] == 451
    assert "RCPT ann@example.com -> delayed 3600 s" in server.log


async def test_delay_then_answer(smtp_server: SMTPTestServer) -> None:
    smtp_server.delay("MAIL", 0.01, times=2)
    for _ in range(3):
        await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"])
    mails = [line for line in smtp_server.log if line.startswith("MAIL")]
    assert mails == ["MAIL app@example.org -> delayed 0.01 s"] * 2 + ["MAIL app@example.org"]
    assert len(smtp_server.messages) == 3


def _tempfail_pattern(seed: int) -> list[bool]:
    with ThreadedServer() as server:
        server.tempfail_rate(0.5, seed=seed)
        failed = []
        for n in range(12):
            try:
                _send(server.port, [f"u{n}@example.com"])
            except smtplib.SMTPSenderRefused as exc:
                assert exc.smtp_code == 451, exc  # noqa: PT017 - inside a loop of sends
                failed.append(True)
            else:
                failed.append(False)
        server.wait_for(failed.count(False))
        return failed


def test_tempfail_rate_is_seeded() -> None:
    first = _tempfail_pattern(seed=3)
    assert first == _tempfail_pattern(seed=3)
    assert True in first
    assert False in first
    assert first != _tempfail_pattern(seed=4)


def test_threaded_server_injects_failures_too() -> None:
    with ThreadedServer() as server:
        server.fail("RCPT", 550, "5.1.1 unknown", match="bob@example.com")
        refused = _send(server.port, ["ann@example.com", "bob@example.com"])
        assert refused == {"bob@example.com": (550, b"5.1.1 unknown")}
        server.wait_for(1)
        assert "RCPT bob@example.com -> 550 5.1.1 unknown" in server.log
        server.reset()
        assert server.log == []
        assert server.messages == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.fail("LUNCH", 451), "cannot inject a failure on event 'LUNCH'"),
        (lambda s: s.fail("RCPT", 250), "4xx or 5xx code, not 250"),
        (lambda s: s.fail("RCPT", 451, times=0), "times must be at least 1, not 0"),
        (lambda s: s.delay("RCPT", -1), "cannot be negative: -1"),
        (lambda s: s.tempfail_rate(1.5), "between 0 and 1, not 1.5"),
        (lambda s: s.tempfail_rate(0.5, code=550), "needs a 4xx code, not 550"),
    ],
)
async def test_bad_injections_name_the_bad_value(call: Any, message: str) -> None:
    async with serving() as server:
        with pytest.raises(ValueError, match=message):
            call(server)


@pytest.mark.parametrize("event", ["connect", "EHLO", "MAIL", "RCPT", "DATA", "done"])
async def test_drop_closes_the_connection_without_a_reply(
    smtp_server: SMTPTestServer, event: str
) -> None:
    smtp_server.drop(event)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"])
    assert smtp_server.messages == []  # a dropped done stores nothing
    assert [line for line in smtp_server.log if line.endswith("-> dropped")]
    await smtp_server.wait_idle()
    # times=1: the retry goes through.
    assert await trio.to_thread.run_sync(_send, smtp_server.port, ["ann@example.com"]) == {}
    await smtp_server.wait_for(1)


async def test_drop_reads_as_end_of_file_on_the_wire(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop("RCPT", match="bob@example.com")
    client = await smtp_server.connect()
    await client.greet()
    await client.expect("MAIL FROM:<a@example.org>", 250)
    await client.expect("RCPT TO:<ann@example.com>", 250)
    await client.send("RCPT TO:<bob@example.com>\r\n")
    assert await client.read_to_eof() == b""
    assert smtp_server.log[-1] == "RCPT bob@example.com -> dropped"


def test_drop_on_the_threaded_server_with_a_plain_hook() -> None:
    seen: list[str] = []

    def rcpt(ctx: Any) -> None:  # runs in a worker thread; so does the drop
        seen.append(ctx.address)

    with ThreadedServer({"events": {"RCPT": rcpt}}) as server:
        server.drop("RCPT", times=2)
        for _ in range(2):
            with pytest.raises(smtplib.SMTPServerDisconnected):
                _send(server.port, ["ann@example.com"])
        assert _send(server.port, ["ann@example.com"]) == {}
        server.wait_for(1)
    assert seen == ["ann@example.com"]  # the dropped ones never reached the hook

"""Every hook over real sockets: sync and async, default, returned and raised replies, failures."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import pytest
import trio
from _live_server import (
    CLIENT_TIMEOUT,
    HANG,
    Client,
    auth_plain,
    make_server,
    memory_connection,
    running_server,
)

from trio_smtp import HookReturnError, HookTimeout, Mail, Reply, Session

HOOK_FAILED = (451, "4.3.0 local error in processing; try again later")
EHLO = "EHLO client.test"
MAIL = "MAIL FROM:<a@x.test>"
RCPT = "RCPT TO:<b@y.test>"

#: event -> (commands that lead up to it, the command, its default reply code)
COMMANDS: dict[str, tuple[list[str], str, int]] = {
    "HELO": ([], "HELO client.test", 250),
    "EHLO": ([], EHLO, 250),
    "MAIL": ([EHLO], MAIL, 250),
    "RCPT": ([EHLO, MAIL], RCPT, 250),
    "DATA": ([EHLO, MAIL, RCPT], "DATA", 354),
    "RSET": ([EHLO, MAIL], "RSET", 250),
    "NOOP": ([], "NOOP", 250),
    "VRFY": ([], "VRFY bob", 252),
    "EXPN": ([], "EXPN staff", 502),
    "HELP": ([], "HELP", 214),
    "QUIT": ([], "QUIT", 221),
}
#: Commands after which the session goes on (QUIT ends it whatever its reply).
CONTINUING = [name for name in COMMANDS if name != "QUIT"]


def recording_hook(calls: list[Any], result: Any, *, is_async: bool, raise_it: bool = False) -> Any:
    """A hook that records its context and returns or raises ``result``."""

    def sync_hook(ctx: Any) -> Any:
        calls.append(ctx)
        if raise_it:
            raise result
        return result

    async def async_hook(ctx: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return sync_hook(ctx)

    return async_hook if is_async else sync_hook


def other_command(event: str) -> str:
    """A harmless command that does not fire the hook of ``event``."""
    return "HELP" if event == "NOOP" else "NOOP"


async def run_up_to(client: Client, event: str) -> str:
    """Greeting and the lead-up commands; returns the command line for ``event``."""
    assert (await client.reply())[0] == 220
    prelude, line, _ = COMMANDS[event]
    for command in prelude:
        code, text = await client.cmd(command)
        assert code < 400, (command, code, text)
    return line


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("event", list(COMMANDS))
async def test_hook_returning_none_gives_the_default_reply(event: str, is_async: bool) -> None:
    calls: list[Any] = []
    async with running_server({event: recording_hook(calls, None, is_async=is_async)}) as live:
        client = await live.connect()
        line = await run_up_to(client, event)
        code, _ = await client.cmd(line)
        assert code == COMMANDS[event][2]
    [ctx] = calls
    assert ctx.command == event


@pytest.mark.parametrize("raise_it", [False, True], ids=["return", "raise"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("event", CONTINUING)
async def test_hook_reply_is_sent_and_the_session_goes_on(
    event: str, is_async: bool, raise_it: bool
) -> None:
    reply = Reply(550, f"5.7.1 refused by the {event} hook")
    calls: list[Any] = []
    hook = recording_hook(calls, reply, is_async=is_async, raise_it=raise_it)
    async with running_server({event: hook}) as live:
        client = await live.connect()
        line = await run_up_to(client, event)
        assert await client.cmd(line) == (550, f"5.7.1 refused by the {event} hook")
        # The refusal was not fatal: the connection still answers commands.
        assert (await client.cmd(other_command(event)))[0] < 400
    assert [ctx.command for ctx in calls] == [event]


@pytest.mark.parametrize("raise_it", [False, True], ids=["return", "raise"])
async def test_quit_hook_reply_is_sent_then_the_connection_closes(raise_it: bool) -> None:
    hook = recording_hook([], Reply(221, "2.0.0 see you soon"), is_async=True, raise_it=raise_it)
    async with running_server({"QUIT": hook}) as live:
        client = await live.connect()
        await client.reply()
        assert await client.cmd("QUIT") == (221, "2.0.0 see you soon")
        assert await client.closed()


async def test_refused_mail_and_rcpt_leave_no_trace_in_the_transaction() -> None:
    async def rcpt(ctx: Any) -> Reply | None:
        if ctx.address.startswith("unknown"):
            raise Reply(550, "5.1.1 no such user")
        return None

    async with running_server({"RCPT": rcpt}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.expect("RCPT TO:<unknown@y.test>", 550)
        await client.expect("RCPT TO:<known@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        assert (await client.reply())[0] == 250
    [mail] = live.sink.messages
    assert mail.rcpt_tos == ["known@y.test"]


async def test_mail_hook_refusal_means_rcpt_needs_a_new_mail() -> None:
    async with running_server({"MAIL": lambda ctx: Reply(553, "5.1.8 bad sender")}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 553)
        assert (await client.cmd(RCPT))[0] == 503


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("event", list(COMMANDS))
async def test_hook_raising_gives_451_fires_error_and_the_session_goes_on(
    event: str, is_async: bool
) -> None:
    boom = RuntimeError(f"{event} hook exploded")
    errors: list[tuple[BaseException, Mail | None]] = []

    def error(exc: BaseException, mail: Mail | None) -> None:
        errors.append((exc, mail))

    hook = recording_hook([], boom, is_async=is_async, raise_it=True)
    async with running_server({event: hook, "error": error}) as live:
        client = await live.connect()
        line = await run_up_to(client, event)
        assert await client.cmd(line) == HOOK_FAILED
        if event == "QUIT":
            assert await client.closed()
        else:
            assert (await client.cmd(other_command(event)))[0] < 400
    assert errors[0][0] is boom
    mail = errors[0][1]
    if event in ("RCPT", "DATA"):
        # The transaction in progress is handed to the error hook.
        assert mail is not None
        assert mail.mail_from == "a@x.test"
    elif event in ("HELO", "EHLO", "NOOP", "VRFY", "EXPN", "HELP", "QUIT"):
        assert mail is None
    # The traceback goes to the log, never to the wire.
    assert live.logger.find(f"{event} hook exploded", "error")


async def test_a_hook_failure_in_one_connection_does_not_touch_another() -> None:
    async def rcpt(ctx: Any) -> None:
        if ctx.address == "crash@y.test":
            raise ZeroDivisionError

    async with running_server({"RCPT": rcpt}) as live:
        first, second = await live.connect(), await live.connect()
        for client in (first, second):
            await client.reply()
            await client.expect(EHLO, 250)
        await first.expect(MAIL, 250)
        assert await first.cmd("RCPT TO:<crash@y.test>") == HOOK_FAILED
        code, text = await second.transaction(b"hi\r\n")
        assert (code, text) == (250, f"2.0.0 OK queued as {live.sink.messages[0].id}")
        # The failed RCPT left the first transaction as it was: MAIL done, no recipient.
        assert (await first.cmd("DATA"))[0] == 503
        await first.expect(RCPT, 250)
        await first.expect("DATA", 354)
        await first.send(b"hello\r\n.\r\n")
        assert (await first.reply())[0] == 250
    assert sorted(m.content for m in live.sink.messages) == [b"hello\r\n", b"hi\r\n"]


@pytest.mark.parametrize("return_value", [42, "OK", (250, "fine")])
async def test_hook_returning_something_else_than_a_reply_is_a_hook_failure(
    return_value: object,
) -> None:
    errors: list[BaseException] = []
    events = {"NOOP": lambda ctx: return_value, "error": lambda exc, mail: errors.append(exc)}
    async with running_server(events) as live:
        client = await live.connect()
        await client.reply()
        assert await client.cmd("NOOP") == HOOK_FAILED
    [error] = errors
    assert isinstance(error, HookReturnError)
    assert repr(return_value) in str(error)


async def test_hook_returning_true_or_false() -> None:
    async with running_server({"RCPT": lambda ctx: ctx.address == "yes@y.test"}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd("RCPT TO:<no@y.test>") == (550, "5.7.1 rejected")
        assert await client.cmd("RCPT TO:<yes@y.test>") == (250, "2.1.5 recipient OK")


async def test_hook_replying_421_closes_the_connection() -> None:
    async with running_server({"RCPT": lambda ctx: Reply(421, "4.7.0 go away")}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd(RCPT) == (421, "4.7.0 go away")
        assert await client.closed()
        await live.wait_idle()
    assert not live.sink.messages


# ---------------------------------------------------------------- timeouts and the error hook


async def test_hook_overrunning_hook_timeout_gives_451_and_the_session_goes_on() -> None:
    # Real sockets: a real (short) timeout. The autojump version is in test_timeouts.py.
    slow = {"yes": True}
    errors: list[BaseException] = []

    async def rcpt(ctx: Any) -> None:
        if slow["yes"]:
            slow["yes"] = False
            await trio.sleep_forever()

    events = {"RCPT": rcpt, "error": lambda exc, mail: errors.append(exc)}
    async with running_server(events, config={"hook_timeout": 0.3}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd(RCPT) == HOOK_FAILED
        assert await client.cmd(RCPT) == (250, "2.1.5 recipient OK")
    [error] = errors
    assert isinstance(error, HookTimeout)
    assert (error.event, error.seconds) == ("RCPT", 0.3)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_error_hook_failing_is_logged_and_not_fatal(is_async: bool) -> None:
    def bad_error(exc: BaseException, mail: Mail | None) -> None:
        raise ValueError("the error hook broke too")

    async def bad_error_async(exc: BaseException, mail: Mail | None) -> None:
        await trio.lowlevel.checkpoint()
        bad_error(exc, mail)

    events = {
        "NOOP": recording_hook([], KeyError("x"), is_async=True, raise_it=True),
        "error": bad_error_async if is_async else bad_error,
    }
    async with running_server(events) as live:
        client = await live.connect()
        await client.reply()
        assert await client.cmd("NOOP") == HOOK_FAILED
        assert (await client.cmd("HELP"))[0] == 214
        assert await client.cmd("NOOP") == HOOK_FAILED
    logged = live.logger.find("the error hook broke too", "error")
    assert len(logged) == 2
    assert all("'error'" in line for line in logged)


# ---------------------------------------------------------------- connect, done, close


@pytest.mark.parametrize("raise_it", [False, True], ids=["return", "raise"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_connect_rejecting_sends_its_reply_instead_of_the_greeting(
    is_async: bool, raise_it: bool
) -> None:
    sessions: list[Session] = []
    closes: list[Session] = []
    hook = recording_hook(
        sessions, Reply(554, "5.7.1 you are not welcome"), is_async=is_async, raise_it=raise_it
    )
    async with running_server({"connect": hook, "close": closes.append}) as live:
        client = await live.connect()
        assert await client.reply() == (554, "5.7.1 you are not welcome")
        assert await client.closed()
        await live.wait_idle()
    [session] = sessions
    assert session.peer[0] == "127.0.0.1"
    assert session.helo_name is None
    assert closes == [session]


async def test_connect_returning_false_refuses_with_554() -> None:
    async with running_server({"connect": lambda session: False}) as live:
        client = await live.connect()
        assert await client.reply() == (554, "5.7.1 connection refused")
        assert await client.closed()


async def test_connect_returning_a_220_replaces_the_greeting() -> None:
    async with running_server({"connect": lambda session: Reply(220, "mx.test hi there")}) as live:
        client = await live.connect()
        assert await client.reply() == (220, "mx.test hi there")
        await client.expect(EHLO, 250)


async def test_connect_raising_gives_421_and_fires_error() -> None:
    errors: list[BaseException] = []

    def connect(session: Session) -> None:
        raise OSError("database down")

    events = {"connect": connect, "error": lambda exc, mail: errors.append(exc)}
    async with running_server(events) as live:
        client = await live.connect()
        assert await client.reply() == (421, "4.3.0 local error in processing; try again later")
        assert await client.closed()
    assert [str(e) for e in errors] == ["database down"]


@pytest.mark.parametrize("raise_it", [False, True], ids=["return", "raise"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_done_reply_goes_to_the_client(is_async: bool, raise_it: bool) -> None:
    mails: list[Mail] = []
    hook = recording_hook(
        mails, Reply(554, "5.6.0 rejected by content filter"), is_async=is_async, raise_it=raise_it
    )
    async with running_server({"done": hook}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        reply = await client.transaction(b"Subject: spam\r\n\r\nbuy now\r\n")
        assert reply == (554, "5.6.0 rejected by content filter")
        # The transaction is over: a new one can start at once.
        await client.expect(MAIL, 250)
    [mail] = mails
    assert mail.content == b"Subject: spam\r\n\r\nbuy now\r\n"
    assert mail.rcpt_tos == ["b@y.test"]
    assert not live.sink.messages  # the done hook replaces the sink
    assert live.logger.find(f"Message refused: id={mail.id}")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_done_returning_none_accepts_with_the_queue_id(is_async: bool) -> None:
    mails: list[Mail] = []
    async with running_server({"done": recording_hook(mails, None, is_async=is_async)}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        code, text = await client.transaction(b"x\r\n")
    [mail] = mails
    assert (code, text) == (250, f"2.0.0 OK queued as {mail.id}")
    assert mail.session.messages == 1


async def test_done_raising_gives_451_and_fires_error_with_the_mail() -> None:
    errors: list[tuple[BaseException, Mail | None]] = []

    def done(mail: Mail) -> None:
        raise RuntimeError("disk full")

    events = {"done": done, "error": lambda exc, mail: errors.append((exc, mail))}
    async with running_server(events) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        assert await client.transaction(b"x\r\n") == HOOK_FAILED
        await client.expect("NOOP", 250)
    [(error, mail)] = errors
    assert str(error) == "disk full"
    assert mail is not None
    assert mail.content == b"x\r\n"


async def test_done_runs_before_the_reply_to_the_final_dot(autojump_clock: Any) -> None:
    entered = trio.Event()
    release = trio.Event()
    stored: list[bytes] = []

    async def done(mail: Mail) -> None:
        entered.set()
        await release.wait()
        stored.append(mail.content)

    server, _, _ = make_server({"done": done})
    async with memory_connection(server) as (client, _run):
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.expect(RCPT, 250)
        await client.expect("DATA", 354)
        await client.send(b"body\r\n.\r\n")
        await entered.wait()
        # Wait (on the autojump clock) for less than hook_timeout: no reply may come.
        with trio.move_on_after(server.config.hook_timeout / 2) as waited:
            await client.reply()
        assert waited.cancelled_caught, "the reply went out before done() returned"
        release.set()
        assert (await client.reply())[0] == 250
        assert stored == [b"body\r\n"]


async def test_close_fires_once_per_connection_however_it_ends() -> None:
    closes: list[Session] = []
    connects: list[Session] = []

    async def close(session: Session) -> None:
        await trio.lowlevel.checkpoint()
        closes.append(session)

    events = {"connect": connects.append, "close": close}
    async with running_server(events) as live:
        polite = await live.connect()
        await polite.reply()
        await polite.expect("QUIT", 221)
        assert await polite.closed()

        rude = await live.connect()
        await rude.reply()
        await rude.expect(EHLO, 250)
        await rude.aclose()

        mid_data = await live.connect()
        await mid_data.reply()
        await mid_data.expect(EHLO, 250)
        await mid_data.expect(MAIL, 250)
        await mid_data.expect(RCPT, 250)
        await mid_data.expect("DATA", 354)
        await mid_data.send(b"half a mess")
        await mid_data.aclose()

        idle = await live.connect()  # still open when the server shuts down
        await idle.reply()
        await live.wait_until(lambda: len(closes) == 3)
    assert len(closes) == 4
    assert len({s.id for s in closes}) == 4
    assert {s.id for s in closes} == {s.id for s in connects}


async def test_close_hook_failure_is_logged() -> None:
    def close(session: Session) -> None:
        raise RuntimeError("close broke")

    async with running_server({"close": close}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("QUIT", 221)
        await live.wait_idle()
    assert live.logger.find("close broke", "error")


@pytest.mark.parametrize("with_done", [False, True], ids=["sink", "done-hook"])
async def test_client_disconnecting_mid_data_delivers_nothing(with_done: bool) -> None:
    done_calls: list[Mail] = []
    events: dict[str, Any] = {"done": done_calls.append} if with_done else {}
    async with running_server(events) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.expect(RCPT, 250)
        await client.expect("DATA", 354)
        await client.send(b"Subject: half\r\n\r\nthe first half\r\n")
        await client.aclose()
        await live.wait_idle()
    assert done_calls == []
    assert live.sink.messages == []
    assert live.logger.find("Message dropped")
    assert not live.logger.find("Message accepted")


async def test_smtpjs_alias_event_names() -> None:
    seen: list[tuple[str, str]] = []

    def record(ctx: Any) -> None:
        seen.append((ctx.command, ctx.address))

    async with running_server({"MAIL FROM": record, "RCPT TO": record}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        assert (await client.transaction(b"x\r\n", rcpts=("b@y.test", "c@y.test")))[0] == 250
    assert seen == [("MAIL", "a@x.test"), ("RCPT", "b@y.test"), ("RCPT", "c@y.test")]


# ---------------------------------------------------------------- BDAT and AUTH


async def test_bdat_hook_sees_each_chunk_and_a_refusal_swallows_the_octets() -> None:
    chunks: list[tuple[int | None, bool | None]] = []

    def bdat(ctx: Any) -> Reply | None:
        chunks.append((ctx.size, ctx.last))
        if ctx.size == 12:
            return Reply(554, "5.7.1 not this chunk")
        return None

    async with running_server({"BDAT": bdat}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.expect(RCPT, 250)
        # The refused chunk's octets look like commands: they must be read as data.
        await client.send(b"BDAT 12\r\nQUIT\r\nRSET\r\n")
        assert await client.reply() == (554, "5.7.1 not this chunk")
        await client.expect("NOOP", 250)
        await client.expect("RSET", 250)
        await client.expect(MAIL, 250)
        await client.expect(RCPT, 250)
        await client.send(b"BDAT 6\r\nhello ")
        assert await client.reply() == (250, "2.0.0 6 octets received")
        await client.send(b"BDAT 5 LAST\r\nworld")
        assert (await client.reply())[0] == 250
    assert chunks == [(12, False), (6, False), (5, True)]
    [mail] = live.sink.messages
    assert mail.content == b"hello world"


async def test_bdat_last_gets_exactly_one_reply() -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.expect(RCPT, 250)
        await client.send(b"BDAT 5 LAST\r\nhello")
        code, text = await client.reply()
        assert (code, text) == (250, f"2.0.0 OK queued as {live.sink.messages[0].id}")
        assert await client.cmd("NOOP") == (250, "2.0.0 OK")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (True, (235, "2.7.0 authentication successful")),
        (False, (535, "5.7.8 authentication credentials invalid")),
        (Reply(454, "4.7.0 try again later"), (454, "4.7.0 try again later")),
        (RuntimeError("ldap down"), HOOK_FAILED),
    ],
    ids=["true", "false", "reply", "raises"],
)
async def test_auth_hook_decides(result: object, expected: tuple[int, str]) -> None:
    seen: list[tuple[str | None, str | None, str | None]] = []

    async def auth(ctx: Any) -> object:
        await trio.lowlevel.checkpoint()
        seen.append((ctx.mechanism, ctx.login, ctx.password))
        if isinstance(result, RuntimeError):
            raise result
        return result

    async with running_server({"AUTH": auth}, config={"auth_insecure": True}) as live:
        client = await live.connect()
        await client.reply()
        ehlo = await client.expect(EHLO, 250)
        assert "AUTH PLAIN LOGIN" in ehlo.splitlines()
        assert await client.cmd("AUTH PLAIN " + auth_plain("alice", "s3cret!pw")) == expected
    assert seen == [("PLAIN", "alice", "s3cret!pw")]
    # AUTH secrets never reach a log line.
    assert not [m for m in live.logger.messages() if "s3cret" in m]


async def test_auth_falls_back_to_the_authenticator_when_the_hook_returns_none() -> None:
    def authenticator(mechanism: str, login: str, password: str) -> bool:
        return (login, password) == ("bob", "hunter2")

    async with running_server(
        {"AUTH": lambda ctx: None},
        config={"auth_insecure": True},
        deps={"authenticator": authenticator},
    ) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        assert (await client.cmd("AUTH PLAIN " + auth_plain("bob", "wrong")))[0] == 535
        assert (await client.cmd("AUTH PLAIN " + auth_plain("bob", "hunter2")))[0] == 235
        await client.expect(MAIL, 250)
    assert live.logger.find("Authenticated:")


# ---------------------------------------------------------------------- sync hooks run in threads


async def test_a_blocking_sync_hook_does_not_stall_another_client() -> None:
    # A plain-function hook blocks on a threading.Event: on the event loop it would
    # stop every connection; in a worker thread another client is served meanwhile.
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def rcpt(ctx: Any) -> None:
        entered.set()
        release.wait(HANG)  # released by the test; the bound only ends a broken run
        order.append("hook returned")

    async with running_server({"RCPT": rcpt}) as live:
        first = await live.connect()
        await first.reply()
        await first.expect(EHLO, 250)
        await first.expect(MAIL, 250)
        await first.send(RCPT + "\r\n")
        assert await trio.to_thread.run_sync(entered.wait, CLIENT_TIMEOUT)
        second = await live.connect()
        assert (await second.reply())[0] == 220
        await second.expect("NOOP", 250)
        order.append("other client served")
        release.set()
        assert (await first.reply())[0] == 250
    assert order == ["other client served", "hook returned"]


async def test_a_sync_hook_that_overruns_hook_timeout_gets_451_and_is_abandoned() -> None:
    release = threading.Event()
    errors: list[BaseException] = []

    def rcpt(ctx: Any) -> None:
        release.wait(CLIENT_TIMEOUT)

    async def error(exc: BaseException, mail: Any) -> None:
        errors.append(exc)

    events = {"RCPT": rcpt, "error": error}
    async with running_server(events, config={"hook_timeout": 0.2}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd(RCPT) == HOOK_FAILED
        await client.expect("NOOP", 250)  # the connection goes on
        release.set()
    [timeout] = errors
    assert isinstance(timeout, HookTimeout)
    assert timeout.event == "RCPT"


async def test_a_plain_function_returning_an_awaitable_has_it_awaited() -> None:
    async def refuse(ctx: Any) -> Reply:
        return Reply(550, "5.1.1 no such user")

    async with running_server({"RCPT": lambda ctx: refuse(ctx)}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd(RCPT) == (550, "5.1.1 no such user")


# ---------------------------------------------------------------------- what hooks raise


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
async def test_a_hook_raising_systemexit_or_keyboardinterrupt_is_a_hook_failure(
    exc_type: type[BaseException], kind: str
) -> None:
    errors: list[BaseException] = []

    def sync_rcpt(ctx: Any) -> None:
        raise exc_type(3)

    async def async_rcpt(ctx: Any) -> None:
        raise exc_type(3)

    async def error(exc: BaseException, mail: Any) -> None:
        errors.append(exc)

    rcpt = sync_rcpt if kind == "sync" else async_rcpt
    async with running_server({"RCPT": rcpt, "error": error}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        assert await client.cmd(RCPT) == HOOK_FAILED
        await client.expect("NOOP", 250)
        # The server is still serving: a new connection is greeted.
        other = await live.connect()
        assert (await other.reply())[0] == 220
        await other.expect("QUIT", 221)
    assert [type(e) for e in errors] == [exc_type]


SPAM = Reply(550, "5.7.1 looks like spam")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_module_level_reply_raised_by_a_hook_keeps_no_mail_alive(kind: str) -> None:
    # ``raise SPAM`` attaches the raising frames (and the mail in them) to the shared
    # exception; each raise chains the last. The server must not keep them.
    seen: list[weakref.ref[Mail]] = []

    def sync_done(mail: Mail) -> None:
        seen.append(weakref.ref(mail))
        raise SPAM

    async def async_done(mail: Mail) -> None:
        seen.append(weakref.ref(mail))
        raise SPAM

    done = sync_done if kind == "sync" else async_done
    async with running_server({"done": done}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        for i in range(3):
            body = f"Subject: {i}\r\n\r\n".encode() + b"x" * 70 + b"\r\n"
            code, _ = await client.transaction(body)
            assert code == 550
        await client.expect("QUIT", 221)
        await live.server.wait_connections(0)
    gc.collect()
    assert len(seen) == 3
    assert [ref() for ref in seen] == [None, None, None]


async def test_a_hook_reply_longer_than_a_wire_line_is_split_into_512_octet_lines() -> None:
    # RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, code and CRLF included.
    long_text = " ".join(f"word{i}" for i in range(20_000))  # about 150 KB

    async def rcpt(ctx: Any) -> None:
        raise Reply(550, "5.7.1 " + long_text)

    async with running_server({"RCPT": rcpt}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect(MAIL, 250)
        await client.send(RCPT + "\r\n")
        lines = []
        while True:
            line = await client.line()
            lines.append(line)
            if line[3:4] == b" ":
                break
        assert len(lines) > 100
        assert max(len(line) + 2 for line in lines) <= 512
        assert all(line.startswith((b"550-5.7.1 ", b"550 5.7.1 ")) for line in lines)
        words = b" ".join(line[10:] for line in lines).split()
        assert words == long_text.encode().split()
        await client.expect("NOOP", 250)  # the session goes on

"""The public API: schema and config validation, Reply and codes, loggers, the hook context."""

from __future__ import annotations

import datetime
import io
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from _live_server import HANG, Client, ListLogger, auth_plain, running_server

import trio_smtp
from trio_smtp import REPLY_CODES, Logger, Mail, Reply, Schema, Server, ServerConfig
from trio_smtp._logger import LEVELS, as_logger, timestamp
from trio_smtp.sinks import MemorySink, PrintSink

LOG_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z\] \[(DEBUG|INFO|LOG|WARN|ERROR|FATAL)\] - (.*)$"
)


def hook(ctx: Any) -> None:
    return None


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("schema", "error", "culprit"),
    [
        ({"event": {}}, ValueError, "'event'"),
        ({"events": {"RCTP": hook}}, ValueError, "'RCTP'"),
        ({"events": {"rcpt": hook}}, ValueError, "'rcpt'"),
        ({"events": {"RCPT": "reject"}}, TypeError, "'RCPT'"),
        ({"events": {"MAIL": hook, "MAIL FROM": hook}}, ValueError, "'MAIL'"),
        ({"events": ["RCPT"]}, TypeError, "['RCPT']"),
        ({"data": {"count": 0}}, TypeError, "{'count': 0}"),
        ({"config": {"prot": 25}}, ValueError, "'prot'"),
        ({"config": {"port": -1}}, ValueError, "-1"),
        ({"config": {"port": "25"}}, ValueError, "'25'"),
        ({"config": {"port": 70000}}, ValueError, "70000"),
        ({"config": {"max_recipients": 0}}, ValueError, "max_recipients"),
        ({"config": {"max_connections": -5}}, ValueError, "-5"),
        ({"config": {"command_timeout": 0}}, ValueError, "command_timeout"),
        ({"config": {"hook_timeout": "60"}}, ValueError, "'60'"),
        ({"config": {"shutdown_grace": -1}}, ValueError, "shutdown_grace"),
        ({"config": {"bare_lf": "strip"}}, ValueError, "'strip'"),
        ({"config": {"proxy_from": ["not-a-net"]}}, ValueError, "'not-a-net'"),
        ({"config": {"host": []}}, ValueError, "host"),
        ({"config": {"tls_cert": "cert.pem"}}, ValueError, "tls_key"),
        ({"config": {"log_level": "loud"}}, ValueError, "'loud'"),
        ("RCPT", TypeError, "'RCPT'"),
    ],
)
def test_bad_schema_is_refused_naming_the_culprit(
    schema: Any, error: type[Exception], culprit: str
) -> None:
    with pytest.raises(error) as excinfo:
        Server(schema)
    assert culprit in str(excinfo.value)


@pytest.mark.parametrize(
    ("dependencies", "error", "culprit"),
    [
        (["logger"], TypeError, "['logger']"),
        ({"logger": object()}, TypeError, "lacks the methods"),
        ({"sink": "maildir"}, TypeError, "'maildir'"),
        ({"authenticator": "users.txt"}, TypeError, "'users.txt'"),
    ],
)
def test_bad_dependencies_are_refused_naming_the_culprit(
    dependencies: Any, error: type[Exception], culprit: str
) -> None:
    with pytest.raises(error) as excinfo:
        Server(None, dependencies)
    assert culprit in str(excinfo.value)


def test_missing_files_are_refused_at_construction_naming_them(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises((OSError, ValueError), match=re.escape(repr(missing))):
        Server({"config": {"tls_cert": missing, "tls_key": missing}})
    users = str(tmp_path / "users")
    with pytest.raises((OSError, ValueError), match=re.escape(users)):
        Server({"config": {"auth_file": users}})


def test_defaults() -> None:
    server = Server()
    assert server.config.host == ("127.0.0.1",)
    assert server.config.port == 1337
    assert isinstance(server.sink, PrintSink)
    assert isinstance(server.logger, Logger)
    assert server.hooks == {}
    assert repr(server) == "<Server not serving>"


def test_typed_schema_objects_work_and_are_validated_too() -> None:
    server = Server(Schema(events={"RCPT TO": hook}, config=ServerConfig(port=0)))
    assert server.hooks == {"RCPT": hook}
    with pytest.raises(ValueError, match="'RCTP'"):
        Server(Schema(events={"RCTP": hook}))


def test_aliases_resolve_to_the_command_name() -> None:
    server = Server({"events": {"MAIL FROM": hook, "RCPT TO": hook, "connect": hook}})
    assert set(server.hooks) == {"MAIL", "RCPT", "connect"}


def test_public_names_import() -> None:
    for name in trio_smtp.__all__:
        assert getattr(trio_smtp, name) is not None


# ---------------------------------------------------------------- Reply and the codes


@pytest.mark.parametrize("code", [99, 199, 600, True, "250", 250.0])
def test_reply_code_must_be_a_reply_code(code: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(code))):
        Reply(code, "text")


@pytest.mark.parametrize("text", ["a\rb", "tab\there", "nul\x00", "del\x7f"])
def test_reply_text_must_not_hold_control_characters(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        Reply(550, text)


def test_reply_value_semantics() -> None:
    reply = Reply(550, "5.1.1 no such user")
    assert isinstance(reply, Exception)
    assert str(reply) == "550 5.1.1 no such user"
    assert repr(reply) == "Reply(550, '5.1.1 no such user')"
    assert reply == Reply(550, "5.1.1 no such user")
    assert reply != Reply(550, "5.1.1 other")
    assert len({reply, Reply(550, "5.1.1 no such user")}) == 1
    assert not reply.is_positive
    assert Reply(354, "go ahead").is_positive
    assert Reply(451, "4.3.0 x").is_transient
    with pytest.raises(TypeError):
        Reply(250, 42)  # type: ignore[arg-type]


def test_seed_reply_codes_are_all_there() -> None:
    seed = [220, 221, 250, 251, 252, 354, 421, 450, 451, 452, 500, 501, 502, 503, 504]
    seed += [521, 541, 550, 551, 552, 553, 554, 555]
    for code in seed:
        assert REPLY_CODES[code]
    assert REPLY_CODES[250] == "Requested mail action okay, completed"


async def test_multiline_and_plain_replies_on_the_wire() -> None:
    events = {
        "VRFY": lambda ctx: Reply(250, "first line\nsecond line"),
        "EXPN": lambda ctx: Reply(550, "no enhanced code given"),
    }
    async with running_server(events) as live:
        client = await live.connect()
        await client.reply()
        await client.send(b"VRFY x\r\nEXPN y\r\n")
        lines = [await client.line() for _ in range(3)]
    # RFC 5321 §4.2.1 continuation lines; RFC 2034 §3 an enhanced code on each line.
    assert lines == [
        b"250-2.0.0 first line",
        b"250 2.0.0 second line",
        b"550 5.0.0 no enhanced code given",
    ]


# ---------------------------------------------------------------- loggers


def test_default_logger_format_and_levels() -> None:
    stream = io.StringIO()
    logger = Logger(level="debug", stream=stream)
    for level in LEVELS:
        getattr(logger, level)(f"a {level} message")
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(LEVELS)
    now = datetime.datetime.now(datetime.UTC)
    for line, level in zip(lines, LEVELS, strict=True):
        match = LOG_LINE.match(line)
        assert match, line
        when = datetime.datetime.fromisoformat(match[1]).replace(tzinfo=datetime.UTC)
        assert abs((now - when).total_seconds()) < 60
        assert (match[2], match[3]) == (level.upper(), f"a {level} message")


def test_timestamp_is_javascript_iso_format() -> None:
    moment = datetime.datetime(2026, 11, 28, 14, 39, 8, 611999, tzinfo=datetime.UTC)
    assert timestamp(moment) == "2026-11-28T14:39:08.611Z"


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", LEVELS),
        ("info", ("info", "log", "warn", "error", "fatal")),
        ("warn", ("warn", "error", "fatal")),
        ("FATAL", ("fatal",)),
    ],
)
def test_logger_level_filters(level: str, shown: tuple[str, ...]) -> None:
    stream = io.StringIO()
    logger = Logger(level=level, stream=stream)
    for name in LEVELS:
        getattr(logger, name)(name)
    assert [line.rsplit(" - ", 1)[1] for line in stream.getvalue().splitlines()] == list(shown)


def test_logger_writes_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    Logger().warn("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert LOG_LINE.match(captured.err.rstrip("\n"))


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="'verbose'"):
        Logger(level="verbose")


async def test_server_logs_start_connections_and_messages_in_smtpjs_format() -> None:
    stream = io.StringIO()
    logger = Logger(level="info", stream=stream)
    async with trio.open_nursery() as nursery:
        server = Server(
            {
                "events": {"RCPT": lambda ctx: ctx.address != "no@y.test"},
                "config": {"port": 0, "hostname": "mx.test"},
            },
            {"logger": logger, "sink": MemorySink()},
        )
        [(host, port)] = await nursery.start(server.serve)
        client = Client(await trio.open_tcp_stream(host, port))
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.transaction(b"ok\r\n")
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<no@y.test>", 550)
        await client.expect("RSET", 250)
        await client.expect("QUIT", 221)
        await client.aclose()
        with trio.fail_after(HANG):
            await server.wait_connections(0)  # the connection's last lines are logged
        server.shutdown()
    lines = stream.getvalue().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    messages = [LOG_LINE.match(line)[3] for line in lines]  # type: ignore[index]
    assert re.match(rf"^\[[^]]+\] \[LOG\] - Server start on ip: {host} port: {port}$", lines[0])
    opened = [m for m in messages if m.startswith("Connection opened: id=")]
    closed = [m for m in messages if m.startswith("Connection closed: id=")]
    accepted = [m for m in messages if m.startswith("Message accepted: id=")]
    assert len(opened) == len(closed) == len(accepted) == 1
    session_id = opened[0].split("id=")[1].split()[0]
    assert f"id={session_id} " in closed[0]
    assert f"id={session_id}." in accepted[0]


async def test_stdlib_logging_logger_receives_the_lines() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    std = logging.getLogger("trio_smtp.tests.api")
    std.setLevel(logging.DEBUG)
    std.propagate = False
    handler = Collect()
    std.addHandler(handler)
    try:
        async with trio.open_nursery() as nursery:
            server = Server(
                {"config": {"port": 0, "hostname": "mx.test", "max_connections": 1}},
                {"logger": std, "sink": MemorySink()},
            )
            [(host, port)] = await nursery.start(server.serve)
            first = await trio.open_tcp_stream(host, port)
            await first.receive_some(100)
            second = await trio.open_tcp_stream(host, port)  # refused: a warning
            await second.receive_some(100)
            await first.aclose()
            await second.aclose()
            server.shutdown()
    finally:
        std.removeHandler(handler)
    by_message = {r.getMessage(): r.levelno for r in records}
    assert by_message[f"Server start on ip: {host} port: {port}"] == logging.INFO
    assert any(
        m.startswith("Connection refused:") and level == logging.WARNING
        for m, level in by_message.items()
    )
    assert any(m.startswith("Connection opened:") for m in by_message)


def test_stdlib_adapter_maps_every_level() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    std = logging.getLogger("trio_smtp.tests.levels")
    std.setLevel(logging.DEBUG)
    std.propagate = False
    std.addHandler(Collect())
    adapter = as_logger(std)
    for name in LEVELS:
        getattr(adapter, name)(name)
    assert [(r.getMessage(), r.levelno) for r in records] == [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("log", logging.INFO),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
        ("fatal", logging.CRITICAL),
    ]


# ---------------------------------------------------------------- the hook context


async def test_context_carries_command_session_transaction_data_and_deps() -> None:
    seen: dict[str, Any] = {}
    database = object()

    def capture(ctx: Any) -> None:
        seen[ctx.command] = ctx

    events = {name: capture for name in ("EHLO", "MAIL", "RCPT", "DATA", "NOOP")}
    async with running_server(events, data=dict, deps={"db": database}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME", 250)
        await client.expect("RCPT TO:<b@y.test> NOTIFY=NEVER", 250)
        await client.expect("DATA", 354)
        await client.send(b"x\r\n.\r\n")
        await client.reply()
        await client.expect("NOOP", 250)

    ehlo, mail, rcpt, data, noop = (seen[n] for n in ("EHLO", "MAIL", "RCPT", "DATA", "NOOP"))
    assert (ehlo.argument, ehlo.address, ehlo.mail) == ("client.test", None, None)
    assert (mail.address, mail.params) == ("a@x.test", {"SIZE": "100", "BODY": "8BITMIME"})
    assert mail.argument == "FROM:<a@x.test> SIZE=100 BODY=8BITMIME"
    assert mail.mail.mail_from == "a@x.test"
    assert (rcpt.address, rcpt.params) == ("b@y.test", {"NOTIFY": "NEVER"})
    assert rcpt.mail is mail.mail
    assert rcpt.mail.rcpt_tos == ["b@y.test"]  # filled in once the hook accepted it
    assert data.mail.rcpt_tos == ["b@y.test"]
    assert noop.mail is None  # the transaction is over
    session = rcpt.session
    assert session is ehlo.session
    assert session.helo_name == "client.test"
    assert session.esmtp
    assert session.peer[0] == "127.0.0.1"
    assert session.local == (live.host, live.port)
    assert session.id in live.logger.find("Connection opened")[0]
    for ctx in (ehlo, mail, rcpt, data, noop):
        assert ctx.logger is live.logger
        assert ctx.deps["db"] is database
        assert ctx.deps["sink"] is live.sink
        assert ctx.data is ehlo.data  # one per connection


async def test_data_factory_runs_once_per_connection() -> None:
    made: list[list[str]] = []

    def factory() -> list[str]:
        state: list[str] = []
        made.append(state)
        return state

    def record(ctx: Any) -> None:
        ctx.data.append(ctx.command)

    async with running_server({"HELO": record, "NOOP": record}, data=factory) as live:
        for n in range(3):
            client = await live.connect()
            await client.reply()
            await client.expect("HELO client.test", 250)
            for _ in range(n):
                await client.expect("NOOP", 250)
            await client.expect("QUIT", 221)
        await live.wait_idle()
    assert made == [["HELO"], ["HELO", "NOOP"], ["HELO", "NOOP", "NOOP"]]


async def test_auth_secrets_stay_out_of_reprs_and_logs() -> None:
    contexts: list[Any] = []

    def auth(ctx: Any) -> bool:
        contexts.append(ctx)
        return True

    logger = ListLogger()
    async with running_server(
        {"AUTH": auth, "done": lambda mail: None},
        config={"auth_insecure": True, "log_level": "debug"},
        deps={"logger": logger},
    ) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("AUTH PLAIN " + auth_plain("carol", "pa55-w0rd-xyz"), 235)
        await client.expect("MAIL FROM:<a@x.test> AUTH=<>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
    [ctx] = contexts
    assert ctx.password == "pa55-w0rd-xyz"
    assert "pa55" not in repr(ctx)
    assert "pa55" not in repr(ctx.session)
    assert ctx.session.authenticated_as == "carol"
    assert not [line for line in logger.messages() if "pa55" in line]
    assert not [line for line in logger.messages() if auth_plain("carol", "pa55-w0rd-xyz") in line]


def test_mail_repr_is_short() -> None:
    from trio_smtp import Session

    mail = Mail(id="Q1", session=Session(id="S1", peer=("192.0.2.1", 1)), content=b"x" * 10_000)
    assert repr(mail) == "<Mail Q1 from='' to=[] size=10000>"


# Moved from test_review_regressions.py


def test_auth_mechanisms_are_checked_and_upper_cased() -> None:
    import pytest

    from trio_smtp import ServerConfig

    assert ServerConfig(auth_mechanisms=["plain", "Login"]).auth_mechanisms == ("PLAIN", "LOGIN")
    with pytest.raises(ValueError, match="unsupported mechanism 'CRAM-MD5'"):
        ServerConfig(auth_mechanisms=("CRAM-MD5",))

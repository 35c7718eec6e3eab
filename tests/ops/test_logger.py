"""The logger: escaping, the JSON format, bound fields, and the one message record."""

from __future__ import annotations

import io
import json
import logging
import socket

import pytest
import trio

from trio_smtp._logger import Logger, LoggerLike, announce, bind, emit, escape
from trio_smtp._mail import Mail
from trio_smtp._message_log import LoggedSink, describe, read_subject
from trio_smtp._session import Session
from trio_smtp.engine import Reply
from trio_smtp.sinks import MaildirSink, RelaySink


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("tab\there", "tab\\there"),
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("nul\x00esc\x1b[2J", "nul\\x00esc\\x1b[2J"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b2J nel\x85", "csi\\x9b2J nel\\x85"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("rlo\u202e zwsp\u200b bom\ufeff", "rlo\\u202e zwsp\\u200b bom\\ufeff"),
        ("surrogate\udcff", "surrogate\\udcff"),
        ("plain café ✓ 日本", "plain café ✓ 日本"),
    ],
)
def test_escape_shows_every_non_printable_character(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(raw).isprintable()


def test_text_lines_are_escaped_and_tracebacks_indented() -> None:
    out = io.StringIO()
    logger = Logger(stream=out)
    try:
        raise KeyError("missing\n[2026-01-01T00:00:00.000Z] [FATAL] - forged")
    except KeyError as exc:
        emit(logger, "error", "Hook 'RCPT' failed: id=S1\x9b2J", exc=exc)
    lines = out.getvalue().rstrip("\n").split("\n")
    assert lines[0].endswith("[ERROR] - Hook 'RCPT' failed: id=S1\\x9b2J")
    assert lines[1] == "    Traceback (most recent call last):"
    assert any("KeyError" in line for line in lines)
    assert all(line.startswith("    ") for line in lines[1:])


def test_json_records_carry_bound_and_given_fields() -> None:
    out = io.StringIO()
    logger = Logger(stream=out, format="json", level="debug")

    async def connection(session: str) -> None:
        bind(session=session, peer="192.0.2.1:4000")
        await trio.lowlevel.checkpoint()
        logger.info(f"line of {session}\u2028", result="accepted")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection, "A")
            nursery.start_soon(connection, "B")
        logger.log("no connection here")

    trio.run(main)
    records = [json.loads(line) for line in out.getvalue().rstrip("\n").split("\n")]
    assert out.getvalue().isascii()
    by_session = {r.get("session"): r for r in records}
    assert by_session["A"]["msg"] == "line of A\u2028"
    assert by_session["B"]["peer"] == "192.0.2.1:4000"
    assert by_session["A"]["result"] == "accepted"
    assert by_session[None]["msg"] == "no connection here"  # fields never leak across tasks


def test_announce_ignores_the_level() -> None:
    out = io.StringIO()
    logger = Logger(stream=out, level="fatal")
    logger.log("hidden")
    announce(logger, "Server start on ip: 127.0.0.1 port: 1")
    assert out.getvalue().endswith("[LOG] - Server start on ip: 127.0.0.1 port: 1\n")
    assert "hidden" not in out.getvalue()


def test_stdlib_logger_gets_escaped_text_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    std = logging.getLogger("trio_smtp.test")
    with caplog.at_level(logging.INFO, logger="trio_smtp.test"):
        emit(std_adapter(std), "info", "evil\x1b[2J", message_id="M1")
    [record] = caplog.records
    assert record.getMessage() == "evil\\x1b[2J"
    assert record.smtp_message_id == "M1"  # type: ignore[attr-defined]


def std_adapter(logger: logging.Logger) -> LoggerLike:
    from trio_smtp._logger import as_logger

    return as_logger(logger)


def _mail(content: bytes = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n") -> Mail:
    session = Session(id="S1", peer=("192.0.2.1", 4000), local=("127.0.0.1", 25))
    mail = Mail(id="S1.1", session=session, mail_from="a@x.test")
    mail.content = content
    return mail


async def test_describe_is_one_format_with_the_subject() -> None:
    mail = _mail()
    subject = await read_subject(mail)
    text, fields = describe(mail, "accepted", subject=subject, path="/m/new/1")
    assert text == (
        'Message accepted: id=S1.1 from=<a@x.test> to= size=40 subject="café" path=/m/new/1'
    )
    assert fields["subject"] == "café"
    assert fields["result"] == "accepted"


async def test_relay_failure_is_logged_at_error_with_the_upstream() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        out = io.StringIO()
        sink = LoggedSink(
            RelaySink("127.0.0.1", port),
            Logger(stream=out),
            where=("upstream", f"127.0.0.1:{port}"),
        )
        with pytest.raises(Reply) as refused:
            await sink.deliver(_mail())
    assert refused.value.code == 451
    [line] = out.getvalue().splitlines()
    assert "[ERROR] - Message failed: id=S1.1" in line
    assert f"upstream=127.0.0.1:{port}" in line
    assert "reason=Connection refused" in line


async def test_maildir_delivery_is_logged_with_the_file_written(tmp_path: object) -> None:
    out = io.StringIO()
    path = f"{tmp_path}/Maildir"
    sink = LoggedSink(MaildirSink(path), Logger(stream=out), where=("path", path))
    await sink.deliver(_mail())
    [line] = out.getvalue().splitlines()
    written = line.split(" path=", 1)[1]
    assert written.startswith(f"{path}/new/")
    assert (await trio.Path(written).read_bytes()).endswith(b"body\r\n")


async def test_a_failing_hook_is_logged_at_error_with_its_name_and_traceback() -> None:
    import smtplib

    from trio_smtp import Server

    def rcpt(ctx: object) -> None:
        {"present": 1}["missing"]  # a bug in the application's hook

    out = io.StringIO()
    server = Server(
        {"events": {"RCPT": rcpt}, "config": {"port": 0, "hostname": "mx.test"}},
        {"logger": Logger(stream=out)},
    )
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)

        def client() -> int:
            with smtplib.SMTP(host, port, timeout=60) as smtp:
                smtp.ehlo()
                smtp.mail("a@x.test")
                return smtp.rcpt("b@y.test")[0]

        assert await trio.to_thread.run_sync(client) == 451
        await server.wait_connections(0)
        server.shutdown()
    text = out.getvalue()
    [line] = [ln for ln in text.splitlines() if "[ERROR]" in ln]
    assert "Hook 'RCPT' failed: id=" in line
    assert "KeyError('missing')" in line
    assert "    Traceback (most recent call last):" in text
    assert "in rcpt\n" in text or "in rcpt" in text

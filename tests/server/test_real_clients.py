"""Real SMTP clients (swaks, curl) sending through a real server into the sink."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from _live_server import Live, ipv6_available, running_server
from conftest import require_tool

from trio_smtp import Reply


async def run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


def swaks(live: Live, *args: str) -> list[str]:
    return [
        require_tool("swaks"),
        "--server",
        live.host,
        "--port",
        str(live.port),
        "--helo",
        "swaks.client.test",
        "--from",
        "alice@x.test",
        *args,
    ]


def curl(url: str, *args: str) -> list[str]:
    return [require_tool("curl"), "--silent", "--show-error", "--max-time", "20", url, *args]


@pytest.mark.needs_tool("swaks")
async def test_swaks_sends_a_message_to_two_recipients() -> None:
    async with running_server() as live:
        result = await run(
            swaks(
                live,
                "--to",
                "bob@y.test,carol@y.test",
                "--header",
                "Subject: hello from swaks",
                "--body",
                "swaks body line",
            )
        )
        assert result.returncode == 0, result.stdout.decode()
    [mail] = live.sink.messages
    assert mail.mail_from == "alice@x.test"
    assert mail.rcpt_tos == ["bob@y.test", "carol@y.test"]
    assert mail.message["Subject"] == "hello from swaks"
    assert b"swaks body line" in mail.content
    assert mail.session.helo_name == "swaks.client.test"
    # swaks saw our reply with the queue id.
    assert f"OK queued as {mail.id}".encode() in result.stdout


def sent_body(transcript: bytes) -> list[bytes]:
    """The DATA lines swaks shows it sent (``" -> "`` lines after 354, before ``.``)."""
    lines = transcript.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(b"<-  354"))
    body: list[bytes] = []
    for line in lines[start + 1 :]:
        assert line.startswith(b" -> ")
        if line == b" -> .":
            return body
        body.append(line[4:])
    raise AssertionError("no final dot in the transcript")


@pytest.mark.needs_tool("swaks")
async def test_swaks_pipelining_with_dot_stuffed_data(tmp_path: Path) -> None:
    data = tmp_path / "message.eml"
    data.write_bytes(b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n")
    async with running_server() as live:
        result = await run(swaks(live, "--pipeline", "--to", "bob@y.test", "--data", f"@{data}"))
        assert result.returncode == 0, result.stdout.decode()
    wire = sent_body(result.stdout)
    assert wire[2:5] == [b"..", b"...two", b"..leading"]  # swaks dot-stuffed them
    [mail] = live.sink.messages
    # What arrives is what swaks sent, unstuffed, CRLF for each line.
    assert mail.content == b"".join(
        (line[1:] if line[:1] == b"." else line) + b"\r\n" for line in wire
    )
    assert mail.content.startswith(b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nend\r\n")


@pytest.mark.needs_tool("swaks")
async def test_swaks_sees_a_refused_recipient() -> None:
    def rcpt(ctx: Any) -> None:
        raise Reply(550, "5.1.1 no such user here")

    async with running_server({"RCPT": rcpt}) as live:
        result = await run(swaks(live, "--to", "nobody@y.test"))
    assert result.returncode != 0
    assert b"550 5.1.1 no such user here" in result.stdout
    assert live.sink.messages == []


@pytest.mark.needs_tool("curl")
async def test_curl_uploads_a_message_exactly(tmp_path: Path) -> None:
    content = (
        b"From: alice@x.test\r\n"
        b"To: bob@y.test\r\n"
        b"Subject: from curl\r\n"
        b"\r\n"
        b".starts with a dot\r\n"
        b".\r\n"
        b"caf\xc3\xa9\r\n"
    )
    message = tmp_path / "message.eml"
    message.write_bytes(content)
    async with running_server() as live:
        result = await run(
            curl(
                f"smtp://{live.host}:{live.port}/curl.client.test",
                "--mail-from",
                "alice@x.test",
                "--mail-rcpt",
                "bob@y.test",
                "--mail-rcpt",
                "carol@y.test",
                "--upload-file",
                str(message),
            )
        )
        assert result.returncode == 0, result.stderr.decode()
    [mail] = live.sink.messages
    assert mail.content == content
    assert mail.rcpt_tos == ["bob@y.test", "carol@y.test"]
    assert mail.session.helo_name == "curl.client.test"


@pytest.mark.needs_tool("curl")
@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback here")
async def test_curl_over_ipv6(tmp_path: Path) -> None:
    message = tmp_path / "message.eml"
    message.write_bytes(b"Subject: v6\r\n\r\nover ::1\r\n")
    async with running_server(config={"host": "::1"}) as live:
        result = await run(
            curl(
                f"smtp://[::1]:{live.port}/",
                "--mail-from",
                "alice@x.test",
                "--mail-rcpt",
                "bob@y.test",
                "--upload-file",
                str(message),
            )
        )
        assert result.returncode == 0, result.stderr.decode()
    [mail] = live.sink.messages
    assert mail.session.peer[0] == "::1"
    assert mail.content == b"Subject: v6\r\n\r\nover ::1\r\n"


@pytest.mark.needs_tool("curl")
async def test_curl_reports_a_done_hook_refusal(tmp_path: Path) -> None:
    message = tmp_path / "message.eml"
    message.write_bytes(b"Subject: spam\r\n\r\nbuy\r\n")

    def done(mail: Any) -> Reply:
        return Reply(554, "5.7.1 looks like spam")

    async with running_server({"done": done}) as live:
        result = await run(
            curl(
                f"smtp://{live.host}:{live.port}/",
                "--verbose",
                "--mail-from",
                "alice@x.test",
                "--mail-rcpt",
                "bob@y.test",
                "--upload-file",
                str(message),
            )
        )
    assert result.returncode == 8  # curl: "weird server reply", its code for a refusal here
    assert b"< 554 5.7.1 looks like spam" in result.stderr
    assert live.sink.messages == []

"""Delivery sinks and the trace headers they write."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import errno
import io
import mailbox
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from aiosmtpd.controller import Controller

from trio_smtp._mail import Mail, Recipient
from trio_smtp._received import received_header, return_path_header
from trio_smtp._session import Session, TLSInfo
from trio_smtp.engine import Reply
from trio_smtp.sinks import (
    MaildirSink,
    MboxSink,
    MemorySink,
    PrintSink,
    RelaySink,
    Sink,
)

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hi Bob,\r\n"
    b"see you.\r\n"
)


def make_mail(
    content: bytes = MESSAGE,
    *,
    sender: str = "alice@example.com",
    rcpts: tuple[str, ...] = ("bob@example.org",),
    helo: str | None = "client.example",
    peer: tuple[str, int] = ("192.0.2.7", 40000),
    tls: TLSInfo | None = None,
    authenticated_as: str | None = None,
    smtputf8: bool = False,
    body_type: str = "7BIT",
    mail_params: dict[str, str | None] | None = None,
    rcpt_params: dict[str, str | None] | None = None,
    mail_id: str = "Q1A2B3",
) -> Mail:
    session = Session(
        id="S9",
        peer=peer,
        hostname="mx.example.org",
        helo_name=helo,
        esmtp=True,
        tls=tls,
        authenticated_as=authenticated_as,
    )
    return Mail(
        id=mail_id,
        session=session,
        mail_from=sender,
        mail_params=mail_params or {},
        recipients=[Recipient(address=r, params=dict(rcpt_params or {})) for r in rcpts],
        content=content,
        body_type=body_type,
        smtputf8=smtputf8,
    )


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# --- Received and Return-Path ---------------------------------------------------------------


def test_received_header_names_client_server_protocol_id_and_recipient() -> None:
    header = received_header(make_mail())
    assert header.endswith(b"\r\n")
    text = header.decode("ascii")
    # Continuation lines are folded with CRLF + TAB; nothing else breaks a line.
    assert re.fullmatch(r"Received: [^\r\n]+(\r\n\t[^\r\n]+)*\r\n", text)
    unfolded = text.replace("\r\n\t", " ").strip()
    m = re.fullmatch(
        r"Received: from client\.example \(\[192\.0\.2\.7\]\) by mx\.example\.org "
        r"with ESMTP id Q1A2B3 for <bob@example\.org>; (.+)",
        unfolded,
    )
    assert m is not None, unfolded
    stamped = email.utils.parsedate_to_datetime(m.group(1))
    assert stamped.utcoffset() is not None
    assert abs((stamped - make_mail().received_at).total_seconds()) < 60


def test_received_header_shows_tls_but_not_the_login() -> None:
    tls = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256)
    mail = make_mail(tls=tls, authenticated_as="alice-secret-login")
    text = received_header(mail).decode()
    assert "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))" in text
    # RFC 3848: the protocol keyword records TLS and authentication ...
    assert " with ESMTPSA id " in text
    # ... while the login itself would travel with the message to every recipient.
    assert "alice-secret-login" not in text


def test_received_header_cannot_be_used_to_inject_header_lines() -> None:
    mail = make_mail(
        helo="evil.example\r\nX-Injected: yes\r\n\r\nbody",
        rcpts=("bob@example.org\r\nX-Also: yes",),
    )
    header = received_header(mail)
    assert re.fullmatch(rb"Received: [^\r\n]+(\r\n\t[^\r\n]+)*\r\n", header)
    msg = parse(header + MESSAGE)
    assert msg["X-Injected"] is None
    assert msg["X-Also"] is None
    assert msg["Subject"] == "hello"
    # The HELO name cannot open a comment or start the date early either.
    weird = received_header(make_mail(helo="a (b); c")).decode()
    assert weird.startswith("Received: from a??b???c ([192.0.2.7])")


def test_received_header_names_a_recipient_only_when_there_is_one() -> None:
    mail = make_mail(rcpts=("bob@example.org", "carol@example.org"))
    assert b" for " not in received_header(mail)
    named = received_header(mail, for_recipient="carol@example.org")
    assert b"for <carol@example.org>;" in named
    assert b"bob@" not in named


def test_received_header_uses_address_literals_without_helo_or_dns() -> None:
    text = received_header(make_mail(helo=None, peer=("::1", 4000))).decode()
    assert text.startswith("Received: from [IPv6:::1] ([IPv6:::1])")
    mapped = received_header(make_mail(peer=("::ffff:192.0.2.8", 1))).decode()
    assert "([192.0.2.8])" in mapped


def test_received_header_keeps_every_line_under_998_octets() -> None:
    mail = make_mail(helo="h" * 5000, rcpts=("r" * 5000 + "@example.org",), mail_id="i" * 500)
    header = received_header(mail)
    lines = header.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) < 998 for line in lines)
    # An address too long to be a path is left out, not written truncated.
    assert b" for " not in header


def test_received_header_of_smtputf8_message_keeps_utf8_and_says_so() -> None:
    mail = make_mail(helo="bücher.example", rcpts=("jörg@bücher.example",), smtputf8=True)
    text = received_header(mail).decode("utf-8")
    assert "from bücher.example (" in text
    assert "with UTF8SMTP id" in text  # RFC 6531 §3.7.3
    assert "for <jörg@bücher.example>;" in text
    # Without SMTPUTF8 the header must stay ASCII (RFC 5322 §2.2).
    plain = received_header(make_mail(helo="bücher.example"))
    assert plain.isascii()
    assert b"from b?cher.example (" in plain


def test_return_path_header() -> None:
    assert return_path_header(make_mail()) == b"Return-Path: <alice@example.com>\r\n"
    assert return_path_header(make_mail(sender="")) == b"Return-Path: <>\r\n"
    assert return_path_header(make_mail(sender="a\r\nX: y@example.com")) == (
        b"Return-Path: <a??X: y@example.com>\r\n"
    )


def test_every_sink_satisfies_the_protocol(tmp_path: Path) -> None:
    sinks = [
        MaildirSink(tmp_path / "md"),
        MboxSink(tmp_path / "mbox"),
        MemorySink(),
        PrintSink(),
        RelaySink("127.0.0.1", 25),
    ]
    assert all(isinstance(s, Sink) for s in sinks)


# --- Maildir --------------------------------------------------------------------------------


def _files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


async def test_maildir_round_trip_through_mailbox_module(tmp_path: Path) -> None:
    path = tmp_path / "Maildir"
    sink = MaildirSink(path)
    first = make_mail()
    second = make_mail(b"Subject: second\r\n\r\nline\r\n", rcpts=("x@example.org", "y@example.org"))
    await sink.deliver(first)
    await sink.deliver(second)

    for directory in (path, path / "tmp", path / "new", path / "cur"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert _files(path / "tmp") == []
    new = _files(path / "new")
    assert len(new) == 2  # one file per message, not per recipient
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in new)
    # Maildir spec: time.MusecPpidQcount...host
    assert all(re.fullmatch(r"\d+\.M\d+P\d+Q\d+R[0-9a-f]{8}\..+", f.name) for f in new)

    box = mailbox.Maildir(path, create=False)
    stored = sorted(box.get_bytes(key) for key in box.keys())
    by_subject = {parse(b)["Subject"]: b for b in stored}
    raw = by_subject["hello"]
    # The trace headers come first, then the content exactly as received.
    assert raw.startswith(b"Return-Path: <alice@example.com>\r\nReceived: from client.example")
    assert raw.endswith(b"\r\n\r\n" + MESSAGE.split(b"\r\n\r\n", 1)[1])
    assert raw[raw.index(b"From: Alice") :] == MESSAGE
    msg = parse(raw)
    assert msg["Return-Path"] == "<alice@example.com>"
    assert "by mx.example.org with ESMTP id Q1A2B3 for <bob@example.org>;" in " ".join(
        msg["Received"].split()
    )
    assert " for " not in by_subject["second"].split(b"\r\n\r\n")[0].decode()


async def test_maildir_is_readable_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "Maildir"
    await MaildirSink(path).deliver(make_mail())
    script = (
        "import mailbox, sys\n"
        "box = mailbox.Maildir(sys.argv[1], create=False)\n"
        "for key in box.keys():\n"
        "    m = box[key]\n"
        "    print(m['Subject'], m['Return-Path'], m.get_payload().split()[0])\n"
    )
    result = await trio.run_process([sys.executable, "-c", script, str(path)], capture_stdout=True)
    assert result.stdout.decode().splitlines() == ["hello <alice@example.com> Hi"]


async def test_maildir_concurrent_deliveries_get_distinct_files(tmp_path: Path) -> None:
    sink = MaildirSink(tmp_path / "md")
    async with trio.open_nursery() as nursery:
        for i in range(30):
            content = f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode()
            nursery.start_soon(sink.deliver, make_mail(content, mail_id=f"ID{i}"))
    box = mailbox.Maildir(tmp_path / "md", create=False)
    assert sorted(m["Subject"] for m in box) == sorted(f"m{i}" for i in range(30))


@pytest.mark.parametrize("failing_call", [1, 2], ids=["file-fsync", "directory-fsync"])
async def test_maildir_storage_failure_is_451_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    path = tmp_path / "md"
    calls = 0
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Reply) as info:
        await MaildirSink(path).deliver(make_mail())
    assert info.value.code == 451
    assert info.value.text == "4.3.0 cannot store the message: no space left on device"
    assert str(path) not in info.value.text
    assert calls == failing_call
    assert _files(path / "tmp") == []
    assert _files(path / "new") == []


async def test_maildir_under_a_regular_file_is_451(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(Reply) as info:
        await MaildirSink(blocker / "Maildir").deliver(make_mail())
    assert info.value.code == 451
    assert info.value.text.startswith("4.3.0 ")
    assert blocker.read_bytes() == b"not a directory"


async def test_maildir_with_new_as_a_file_is_451_and_cleans_tmp(tmp_path: Path) -> None:
    path = tmp_path / "md"
    (path / "tmp").mkdir(parents=True)
    (path / "new").write_bytes(b"")
    with pytest.raises(Reply) as info:
        await MaildirSink(path).deliver(make_mail())
    assert info.value.code == 451
    assert _files(path / "tmp") == []


# --- mbox -----------------------------------------------------------------------------------

FROM_BODY = (
    b"Subject: tricky\r\n"
    b"\r\n"
    b"From here the body starts.\r\n"
    b">From there it goes on.\r\n"
    b">>From everywhere.\r\n"
    b"\r\n"
    b"From the end\r\n"
)


def _mboxrd_unquote(data: bytes) -> bytes:
    return re.sub(rb"(?m)^>(>*From )", rb"\1", data)


def _read_mbox(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        # The last message keeps the blank line that ends it; the others lose it to the
        # separator. Strip it so they compare alike.
        return [_mboxrd_unquote(box.get_bytes(key)).rstrip(b"\n") + b"\n" for key in box.keys()]
    finally:
        box.close()


async def test_mbox_round_trip_keeps_from_lines_intact(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    sink = MboxSink(path)
    await sink.deliver(make_mail(FROM_BODY))
    await sink.deliver(make_mail(MESSAGE, sender=""))
    await sink.deliver(make_mail(FROM_BODY))

    raw = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # mboxrd quoting on disk: one more '>' on every '>*From ' line of the messages.
    assert b"\n>From here the body starts.\n>>From there it goes on.\n>>>From everywhere.\n" in raw
    assert b"\r" not in raw  # LF line endings, the Unix text format readers expect
    separators = re.findall(rb"(?m)^From \S+ .*$", raw)
    assert len(separators) == 3
    assert separators[1].startswith(b"From MAILER-DAEMON ")

    messages = _read_mbox(path)
    assert len(messages) == 3
    for got, content in zip(messages, (FROM_BODY, MESSAGE, FROM_BODY), strict=True):
        headers, body = got.split(b"\n\n", 1)
        assert body == content.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        assert headers.startswith(b"Return-Path: <")
        assert b"\nReceived: from client.example ([192.0.2.7])\n\tby mx.example.org" in headers
    box = mailbox.mbox(path, create=False)
    assert [m.get_from().split()[0] for m in box] == [
        "alice@example.com",
        "MAILER-DAEMON",
        "alice@example.com",
    ]
    box.close()


async def test_mbox_concurrent_deliveries_are_all_readable(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    # Two sinks on one file: flock must keep them apart, the trio.Lock only covers one sink.
    sinks = [MboxSink(path), MboxSink(path)]
    contents = {
        f"m{i}": f"Subject: m{i}\r\n\r\n".encode()
        + (f"From line {i}\r\n" + f"{i}" * 5000 + "\r\n").encode() * 20
        for i in range(20)
    }
    async with trio.open_nursery() as nursery:
        for i, content in enumerate(contents.values()):
            nursery.start_soon(sinks[i % 2].deliver, make_mail(content))
    messages = _read_mbox(path)
    assert len(messages) == 20
    for got in messages:
        subject = parse(got)["Subject"]
        assert got.split(b"\n\n", 1)[1] == (
            contents[subject].split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        )


@pytest.mark.parametrize("ending", [b"", b"\n"], ids=["no-newline", "no-blank-line"])
async def test_mbox_appends_after_a_file_lacking_the_final_blank_line(
    tmp_path: Path, ending: bytes
) -> None:
    path = tmp_path / "mbox"
    path.write_bytes(b"From old@example.com Sat Nov 28 00:00:00 2026\nSubject: old\n\nold" + ending)
    await MboxSink(path).deliver(make_mail())
    messages = _read_mbox(path)
    assert [parse(m)["Subject"] for m in messages] == ["old", "hello"]
    assert messages[0].endswith(b"\n\nold\n")


async def test_mbox_write_failure_restores_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mbox"
    sink = MboxSink(path)
    await sink.deliver(make_mail())
    before = path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Reply) as info:
        await sink.deliver(make_mail(FROM_BODY))
    assert info.value.code == 451
    assert info.value.text == "4.3.0 cannot store the message: no space left on device"
    assert path.read_bytes() == before
    monkeypatch.undo()
    await sink.deliver(make_mail(FROM_BODY))
    assert len(_read_mbox(path)) == 2


async def test_mbox_in_a_missing_directory_is_451(tmp_path: Path) -> None:
    with pytest.raises(Reply) as info:
        await MboxSink(tmp_path / "missing" / "mbox").deliver(make_mail())
    assert info.value.code == 451
    assert info.value.text == "4.3.0 cannot store the message: no such file or directory"


async def test_mbox_locked_by_another_program_is_450_then_delivers(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    holder = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'ab')\n"
        "fcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    sink = MboxSink(path, lock_timeout=0.2)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", holder, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        seen = b""
        while b"locked" not in seen:
            chunk = await proc.stdout.receive_some()
            assert chunk, "lock holder exited early"
            seen += chunk
        with pytest.raises(Reply) as info:
            await sink.deliver(make_mail())
        assert info.value.code == 450
        assert info.value.text.startswith("4.2.0 ")
        assert path.read_bytes() == b""
    finally:
        await proc.stdin.aclose()  # the holder exits, releasing its lock
        await proc.wait()
        await proc.stdout.aclose()
    await sink.deliver(make_mail())
    assert len(_read_mbox(path)) == 1


def test_mbox_rejects_a_negative_lock_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"-1\.0"):
        MboxSink(tmp_path / "mbox", lock_timeout=-1.0)


# --- print ----------------------------------------------------------------------------------


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


async def test_print_sink_logs_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    logger = ListLogger()
    mail = make_mail(rcpts=("bob@example.org", "carol@example.org"))
    await PrintSink(logger).deliver(mail)
    assert logger.lines == [
        f"Message accepted: id=Q1A2B3 from=<alice@example.com> "
        f"to=<bob@example.org>,<carol@example.org> size={len(MESSAGE)}"
        ' subject="hello"'
    ]
    assert capsys.readouterr() == ("", "")


async def test_print_sink_without_logger_writes_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await PrintSink().deliver(make_mail(sender="evil\r\n[FATAL] forged"))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1  # a forged second log line is impossible
    assert err.startswith(
        "Message accepted: id=Q1A2B3 from=<evil\\r\\n[FATAL] forged> to=<bob@example.org>"
    )


async def test_print_sink_prints_the_body_framed() -> None:
    stream = io.StringIO()
    logger = ListLogger()
    content = b"Subject: caf\xc3\xa9\r\n\r\nbad byte \xff here\r\n"
    await PrintSink(logger, print_body=True, stream=stream).deliver(make_mail(content))
    assert stream.getvalue() == (
        "---------- MESSAGE FOLLOWS ----------\n"
        "Subject: café\n"
        "\n"
        "bad byte \ufffd here\n"
        "------------ END MESSAGE ------------\n"
    )
    assert len(logger.lines) == 1


# --- memory ---------------------------------------------------------------------------------


async def test_memory_sink_wait_for_wakes_when_enough_messages_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = MemorySink()
    woke_at: list[float] = []

    async def waiter() -> None:
        await sink.wait_for(3)
        woke_at.append(trio.current_time())
        assert len(sink.messages) >= 3

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        for i in range(4):
            await trio.sleep(1)
            await sink.deliver(make_mail(mail_id=f"M{i}"))
    assert woke_at == [pytest.approx(3.0)]
    assert [m.id for m in sink.messages] == ["M0", "M1", "M2", "M3"]

    with trio.fail_after(1):
        await sink.wait_for(4)  # already there: returns at once
    sink.reset()
    assert sink.messages == []
    with pytest.raises(trio.TooSlowError), trio.fail_after(5):
        await sink.wait_for(1)


# --- relay ----------------------------------------------------------------------------------


class Upstream:
    """An aiosmtpd handler recording what it accepts and refusing what it is told to."""

    def __init__(self) -> None:
        self.refuse: dict[str, str] = {}
        self.data_reply: str | None = None
        self.delivered: list[dict[str, Any]] = []

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.delivered.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "mail_options": list(envelope.mail_options),
                "content": envelope.original_content,
                "tls": session.ssl is not None,
                "helo": session.host_name,
            }
        )
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class _BoundController(Controller):
    """aiosmtpd's Controller on a socket bound here, on a port nobody can take first
    (binding a free port, closing it and handing its number over leaves that window)."""

    def __init__(self, handler: Upstream, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Any:
        # aiosmtpd 1.4.6 (pinned) builds its server here; the socket replaces host/port.
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


@pytest.fixture
def start_upstream() -> Iterator[Callable[..., tuple[Upstream, int]]]:
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> tuple[Upstream, int]:
        handler = Upstream()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        # aiosmtpd gives its thread 5 s to start "unless the system is too busy": a
        # loaded machine is, so only a hang may reach the bound.
        controller = _BoundController(handler, listener, ready_timeout=60, **kwargs)
        controller.start()
        controllers.append(controller)
        return handler, controller.port

    yield start
    for controller in controllers:
        controller.stop()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


async def test_relay_forwards_the_message_with_our_received_header(
    start_upstream: Callable[..., tuple[Upstream, int]],
) -> None:
    upstream, port = start_upstream()
    mail = make_mail(rcpts=("bob@example.org", "carol@example.org"), body_type="8BITMIME")
    await RelaySink("127.0.0.1", port, starttls="never").deliver(mail)
    [got] = upstream.delivered
    assert got["mail_from"] == "alice@example.com"
    assert got["rcpt_tos"] == ["bob@example.org", "carol@example.org"]
    assert got["helo"] == "mx.example.org"  # our name, no DNS lookup
    size = int(next(o for o in got["mail_options"] if o.startswith("SIZE="))[5:])
    assert "BODY=8BITMIME" in got["mail_options"]
    content: bytes = got["content"]
    assert content.startswith(b"Received: from client.example ([192.0.2.7])\r\n\tby mx.example.org")
    assert content.endswith(MESSAGE)
    assert size == len(content)
    assert parse(content)["Subject"] == "hello"


async def test_relay_to_a_closed_port_is_451(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = s.getsockname()[1]
        with pytest.raises(Reply) as info:
            await RelaySink("127.0.0.1", port, timeout=5).deliver(make_mail())
    assert info.value.code == 451
    assert info.value.text == "4.4.1 upstream unavailable"


async def test_relay_permanent_recipient_refusal_is_550_and_nothing_is_relayed(
    start_upstream: Callable[..., tuple[Upstream, int]],
) -> None:
    upstream, port = start_upstream()
    upstream.refuse["nobody@example.org"] = "550 5.1.1 no such user"
    mail = make_mail(rcpts=("bob@example.org", "nobody@example.org"))
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(mail)
    assert info.value.code == 550
    assert info.value.enhanced_code == "5.1.1"
    assert "<nobody@example.org>" in info.value.text
    assert "no such user" in info.value.text
    assert upstream.delivered == []
    # The same sink relays fine once the upstream accepts.
    await RelaySink("127.0.0.1", port).deliver(make_mail())
    assert len(upstream.delivered) == 1


async def test_relay_temporary_recipient_refusal_is_452(
    start_upstream: Callable[..., tuple[Upstream, int]],
) -> None:
    upstream, port = start_upstream()
    upstream.refuse["full@example.org"] = "452 4.2.2 mailbox full"
    upstream.refuse["nobody@example.org"] = "550 5.1.1 no such user"
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(make_mail(rcpts=("full@example.org",)))
    assert (info.value.code, info.value.enhanced_code) == (452, "4.2.2")
    # A temporary refusal wins over a permanent one: the sender retries instead of bouncing.
    mixed = make_mail(rcpts=("nobody@example.org", "full@example.org", "bob@example.org"))
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(mixed)
    assert info.value.code == 452
    assert "(2 of 3 refused, none relayed)" in info.value.text
    assert upstream.delivered == []


async def test_relay_data_refusal_keeps_class_and_enhanced_code(
    start_upstream: Callable[..., tuple[Upstream, int]],
) -> None:
    upstream, port = start_upstream()
    upstream.data_reply = "554 5.7.1 looks like spam"
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(make_mail())
    assert info.value.code == 554
    assert info.value.text == "5.7.1 upstream refused the message: looks like spam"
    # A code we do not give at the end of DATA becomes the generic one of its class, and an
    # enhanced code of the wrong class is replaced.
    upstream.data_reply = "421 5.3.0 closing"
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(make_mail())
    assert (info.value.code, info.value.enhanced_code) == (451, "4.0.0")


async def test_relay_opportunistic_starttls_verifies_by_default(
    start_upstream: Callable[..., tuple[Upstream, int]], ca: trustme.CA
) -> None:
    upstream, port = start_upstream(tls_context=_server_context(ca))
    # The test CA is not in the system store: refused, and not sent in the clear instead.
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(make_mail())
    assert (info.value.code, info.value.enhanced_code) == (451, "4.7.5")
    assert "certificate verify failed for 127.0.0.1" in str(info.value.__cause__)
    assert upstream.delivered == []
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    await RelaySink("127.0.0.1", port, ssl_context=trusting).deliver(make_mail())
    # The opt-out: unverified TLS.
    await RelaySink("127.0.0.1", port, verify=False).deliver(make_mail())
    assert [d["tls"] for d in upstream.delivered] == [True, True]


async def test_relay_opportunistic_falls_back_to_plaintext_only_without_verification(
    start_upstream: Callable[..., tuple[Upstream, int]], ca: trustme.CA
) -> None:
    server = _server_context(ca)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    upstream, port = start_upstream(tls_context=server)
    old = ssl.create_default_context()
    ca.configure_trust(old)
    old.maximum_version = ssl.TLSVersion.TLSv1_2  # no protocol in common: the handshake fails
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port, ssl_context=old).deliver(make_mail())
    assert (info.value.code, info.value.enhanced_code) == (451, "4.7.5")
    assert upstream.delivered == []
    # Postfix's "may": without verification, a failed handshake falls back to plaintext.
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    await RelaySink("127.0.0.1", port, ssl_context=old).deliver(make_mail())
    assert [d["tls"] for d in upstream.delivered] == [False]


async def test_relay_required_starttls_verifies_and_never_sends_in_the_clear(
    start_upstream: Callable[..., tuple[Upstream, int]], ca: trustme.CA
) -> None:
    upstream, port = start_upstream(tls_context=_server_context(ca))
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port, starttls="require").deliver(make_mail())
    assert (info.value.code, info.value.enhanced_code) == (451, "4.7.5")
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    await RelaySink("127.0.0.1", port, starttls="require", ssl_context=trusting).deliver(
        make_mail()
    )
    assert [d["tls"] for d in upstream.delivered] == [True]

    plain_upstream, plain_port = start_upstream()
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", plain_port, starttls="require").deliver(make_mail())
    assert (info.value.code, info.value.enhanced_code) == (451, "4.7.4")
    assert plain_upstream.delivered == []


async def test_relay_passes_smtputf8_when_the_upstream_supports_it(
    start_upstream: Callable[..., tuple[Upstream, int]],
) -> None:
    upstream, port = start_upstream(enable_SMTPUTF8=True)
    content = "Subject: grüße\r\n\r\nhallo\r\n".encode()
    mail = make_mail(content, sender="jörg@bücher.example", smtputf8=True, body_type="8BITMIME")
    await RelaySink("127.0.0.1", port).deliver(mail)
    [got] = upstream.delivered
    assert "SMTPUTF8" in got["mail_options"]
    assert got["mail_from"] == "jörg@bücher.example"
    assert got["content"].endswith(content)


# BINARYMIME to the upstream (BDAT, or 554 5.6.3 without CHUNKING+BINARYMIME): see
# tests/ops/test_relay_body.py, against a recording upstream.


def test_relay_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        RelaySink("127.0.0.1", 25, starttls="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"0\.0"):
        RelaySink("127.0.0.1", 25, timeout=0.0)


SMTP_SINK = shutil.which("smtp-sink")


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, Path]]:
    if SMTP_SINK is None:
        if os.environ.get("CI"):
            pytest.fail("smtp-sink (postfix) is required when CI is set")
        pytest.skip("smtp-sink (postfix) is not installed")
    # Run as root, smtp-sink drops to 'nobody', who cannot enter pytest's private tmp_path.
    with tempfile.TemporaryDirectory() as directory:
        dump = Path(directory)
        dump.chmod(0o777)
        yield from _run_smtp_sink(SMTP_SINK, dump)


def _run_smtp_sink(program: str, dump: Path) -> Iterator[tuple[int, Path]]:
    # smtp-sink binds a port by number: another program may take a free one first, and
    # smtp-sink then exits at once. Try another.
    for _ in range(3):
        port = _free_port()
        command = [program, "-d", f"{dump}/%H%M%S.", f"127.0.0.1:{port}", "10"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        with subprocess.Popen(command) as proc:
            try:
                deadline = time.monotonic() + 60  # only a hang takes this long
                while not _listening(port):
                    if proc.poll() is not None:
                        break
                    if time.monotonic() > deadline:
                        pytest.fail("smtp-sink did not start listening")
                    # A synchronous fixture waiting for an external program to bind.
                    time.sleep(0.02)
                else:
                    yield port, dump
                    return
            finally:
                if proc.poll() is None:
                    proc.terminate()
    pytest.fail("smtp-sink exited at once on three free ports")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.needs_tool("smtp-sink")
async def test_relay_into_postfix_smtp_sink(smtp_sink: tuple[int, Path]) -> None:
    port, dump = smtp_sink
    mail = make_mail(
        mail_params={"RET": "HDRS", "ENVID": "abc+2Bdef"},
        rcpt_params={"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;bob@example.org"},
    )
    await RelaySink("127.0.0.1", port).deliver(mail)
    with trio.fail_after(60):  # a hang guard
        # Another program writes the file; there is nothing to wait on but the file itself.
        while not (files := list(dump.iterdir())) or b"see you." not in files[0].read_bytes():  # noqa: ASYNC110
            await trio.sleep(0.02)
    text = files[0].read_bytes().decode()
    # smtp-sink records the envelope, including the DSN parameters we passed on (RFC 3461).
    assert "X-Mail-Args: <alice@example.com> RET=HDRS ENVID=abc+2Bdef" in text
    assert "X-Rcpt-Args: <bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org" in (
        text
    )
    assert "Received: from client.example ([192.0.2.7])\n\tby mx.example.org" in text
    assert "Subject: hello" in text


@pytest.mark.needs_tool("smtp-sink")
async def test_relay_of_smtputf8_to_an_upstream_without_it_is_554(
    smtp_sink: tuple[int, Path],
) -> None:
    port, dump = smtp_sink
    with pytest.raises(Reply) as info:
        await RelaySink("127.0.0.1", port).deliver(
            make_mail(sender="jörg@bücher.example", smtputf8=True)
        )
    assert (info.value.code, info.value.enhanced_code) == (554, "5.6.7")
    assert list(dump.iterdir()) == []

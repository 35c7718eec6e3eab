"""Sinks stream the body from the spool: byte-identical, nothing left behind on failure."""

from __future__ import annotations

import errno
import mailbox
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from _stream_helpers import big_content, mail_with_body, spool_fds, spooled_body
from hypothesis import given
from hypothesis import strategies as st

from trio_smtp._received import received_header, return_path_header
from trio_smtp._spool import Spool
from trio_smtp.engine import Reply
from trio_smtp.sinks import MaildirSink, MboxSink, MemorySink
from trio_smtp.sinks import mbox as mbox_module

CONTENT = big_content(700_000)


def _headers_len(data: bytes) -> int:
    # Return-Path and Received are ours; the client's message starts after them.
    return data.index(b"From: a@example.com\r\n")


async def test_maildir_stores_a_spooled_body_byte_identical(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1000)
    mail = mail_with_body(await spooled_body(CONTENT, spool))
    await MaildirSink(tmp_path / "md").deliver(mail)
    [name] = os.listdir(tmp_path / "md" / "new")
    stored = (tmp_path / "md" / "new" / name).read_bytes()
    assert stored.startswith(return_path_header(mail) + b"Received: ")
    assert stored[_headers_len(stored) :] == CONTENT
    assert os.listdir(tmp_path / "md" / "tmp") == []
    # The sink read the spool without loading it into the Mail.
    assert mail._content is None


async def test_maildir_failure_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1000)
    mail = mail_with_body(await spooled_body(CONTENT, spool))
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Reply) as info:
        await MaildirSink(tmp_path / "md").deliver(mail)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert info.value.code == 451
    assert os.listdir(tmp_path / "md" / "tmp") == []
    assert os.listdir(tmp_path / "md" / "new") == []


async def test_mbox_streams_a_spooled_body_exactly_like_the_whole_entry(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1000)
    mail = mail_with_body(await spooled_body(CONTENT, spool))
    path = tmp_path / "mbox"
    await MboxSink(path).deliver(mail)
    stored = path.read_bytes()
    headers = return_path_header(mail) + received_header(mail)
    expected = mbox_module._mboxrd_entry(mail.mail_from, headers, CONTENT)
    # Same bytes but for the date of the separator and of the Received header.
    first_line = expected.index(b"\n") + 1
    assert stored.index(b"\n") + 1 == first_line
    body_at = expected.index(b"From: a@example.com\n")
    assert stored[stored.index(b"From: a@example.com\n") :] == expected[body_at:]
    box = mailbox.mbox(path)
    [message] = box
    assert str(message.get_payload(decode=False)).count(">From the middle") > 0
    box.close()
    assert mail._content is None


@given(
    content=st.lists(
        st.sampled_from([b"\r", b"\n", b"\r\n", b">", b"From ", b"F", b"r", b"o", b"m", b" "]),
        max_size=60,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_mbox_quoting_in_pieces_equals_quoting_at_once(content: bytes, cuts: list[int]) -> None:
    whole = mbox_module._FROM_LINE.sub(rb">\1", content.replace(b"\r\n", b"\n"))
    quoter = mbox_module._MboxrdQuoter()
    pieces = []
    last = 0
    for cut in sorted({min(c, len(content)) for c in cuts}):
        pieces.append(quoter.feed(content[last:cut]))
        last = cut
    pieces.append(quoter.feed(content[last:]))
    pieces.append(quoter.end())
    out = b"".join(pieces)
    assert out == whole
    assert quoter.ended_line == (out.endswith(b"\n") or not out)


async def test_memory_sink_keeps_bytes_and_lets_the_spool_go(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1000)
    sink = MemorySink()
    await sink.deliver(mail_with_body(await spooled_body(CONTENT, spool)))
    assert spool_fds(tmp_path) == []
    assert sink.messages[0].content == CONTENT


# --- mbox after a crash ---------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, trio
    sys.path.insert(0, {helpers!r})
    from _stream_helpers import big_content, mail_with_body, spooled_body
    from trio_smtp._spool import Spool
    from trio_smtp.sinks import MboxSink, mbox

    real_write_all = mbox._write_all
    calls = 0

    def write_all(fd, data):
        global calls
        calls += 1
        real_write_all(fd, data)
        if calls == 4:  # separator, headers, two pieces of the body: then hang mid-message
            os.fsync(fd)
            print("WRITING", flush=True)
            sys.stdin.read()

    mbox._write_all = write_all
    if {no_xattrs!r}:
        def no_xattrs(*args):
            raise OSError(95, "Operation not supported")
        os.setxattr = os.getxattr = os.removexattr = no_xattrs

    async def main():
        body = await spooled_body(big_content(3_000_000), Spool(spool_memory=1000))
        await MboxSink({path!r}).deliver(mail_with_body(body))

    trio.run(main)
    """
)


@pytest.mark.parametrize("no_xattrs", [False, True], ids=["xattr", "journal"])
def test_mbox_cuts_off_a_message_a_killed_writer_left_half_written(
    tmp_path: Path, no_xattrs: bool
) -> None:
    path = tmp_path / "mbox"
    sink = MboxSink(path)
    for n in ("first", "second"):
        content = f"Subject: {n}\r\n\r\nFrom here\r\n{n}\r\n".encode()
        trio.run(sink.deliver, mail_with_body(content=content))
    complete = path.read_bytes()
    script = _KILLED_WRITER.format(
        helpers=str(Path(__file__).parent), path=str(path), no_xattrs=no_xattrs
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"WRITING\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
    partial = path.read_bytes()
    assert len(partial) > len(complete) + 100_000  # the killed writer got well into it
    journal = Path(str(path) + ".trio-smtp-append")
    assert journal.exists() == no_xattrs
    # The server starts again: building the sink repairs the file, before any delivery.
    MboxSink(path)
    assert path.read_bytes() == complete
    assert not journal.exists()
    box = mailbox.mbox(path)
    assert [m["Subject"] for m in box] == ["first", "second"]
    # mailbox.mbox reads mboxrd quoting as it is: the ">" stays.
    assert [m.get_payload() for m in box] == [">From here\nfirst\n", ">From here\nsecond\n"]
    box.close()
    trio.run(sink.deliver, mail_with_body(content=b"Subject: third\r\n\r\nthree\r\n"))
    box = mailbox.mbox(path)
    assert [m["Subject"] for m in box] == ["first", "second", "third"]
    assert path.read_bytes().startswith(complete + b"From a@example.com ")
    box.close()


def test_mbox_recovery_never_cuts_a_message_another_program_appended(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    sink = MboxSink(path)
    trio.run(sink.deliver, mail_with_body(content=b"Subject: first\r\n\r\none\r\n"))
    size = path.stat().st_size
    # What a dead writer leaves: the record, a partial entry; then mutt appends a message.
    with open(path, "ab") as f:
        os.setxattr(f.fileno(), mbox_module._PENDING_XATTR, f"{size} {size}".encode())
        f.write(b"From a@example.com Sat Dec  5 12:00:00 2026\nSubject: cut\n\npar")
        f.write(b"\n\nFrom mutt@example.com Sat Dec  5 12:01:00 2026\nSubject: mutt\n\nhi\n\n")
    trio.run(sink.deliver, mail_with_body(content=b"Subject: second\r\n\r\ntwo\r\n"))
    box = mailbox.mbox(path)
    assert [m["Subject"] for m in box] == ["first", "cut", "mutt", "second"]
    box.close()
    with pytest.raises(OSError):  # the record is gone
        os.getxattr(path, mbox_module._PENDING_XATTR)

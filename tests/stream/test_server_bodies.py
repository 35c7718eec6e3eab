"""Bodies over a real socket: spooled, streamed to every sink, never left behind, bounded."""

from __future__ import annotations

import errno
import hashlib
import mailbox
import os
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from _stream_helpers import big_content, spool_fds

from trio_smtp import Reply, _spool
from trio_smtp._mail import Mail
from trio_smtp.sinks import MaildirSink, MboxSink, MemorySink
from trio_smtp.testing import SMTPClient, serving

CONTENT = big_content(700_000)
#: Far below CONTENT, so that every test body goes to the spool.
SMALL: dict[str, Any] = {"spool_memory": 64 * 1024}


def _stuffed(content: bytes) -> bytes:
    # RFC 5321 §4.5.2: a line that starts with a dot gets one more on the wire.
    return content.replace(b"\r\n.", b"\r\n..")


async def _until(condition: Any) -> None:
    with trio.fail_after(60):  # a hang guard
        while not condition():  # noqa: ASYNC110 - no event says a spool file closed
            await trio.sleep(0.01)


async def test_a_spooled_body_reads_back_identical_every_way(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def done(mail: Mail) -> None:
        seen["spool files while delivering"] = len(spool_fds(tmp_path))
        digest = hashlib.sha256()
        sizes = []
        async with mail.open() as body:
            async for chunk in body:
                digest.update(chunk)
                sizes.append(len(chunk))
        seen["open"] = digest.hexdigest()
        seen["largest chunk"] = max(sizes)

        def in_thread() -> bytes:
            with mail.open_file() as f:
                return f.read()

        seen["open_file"] = await trio.to_thread.run_sync(in_thread)
        seen["size"] = mail.content_size
        seen["content"] = await trio.to_thread.run_sync(lambda: mail.content)

    async with serving({"events": {"done": done}}, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        reply = await client.transaction(_stuffed(CONTENT))
        assert reply.code == 250, str(reply)
    assert seen["spool files while delivering"] == 1
    assert seen["open"] == hashlib.sha256(CONTENT).hexdigest()
    assert seen["largest chunk"] <= _spool.READ_SIZE
    assert seen["open_file"] == CONTENT
    assert seen["size"] == len(CONTENT)
    assert seen["content"] == CONTENT
    assert spool_fds(tmp_path) == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["maildir", "mbox", "memory"])
async def test_every_sink_stores_a_spooled_body_identical(tmp_path: Path, kind: str) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    sink: Any
    if kind == "maildir":
        sink = MaildirSink(tmp_path / "md")
    elif kind == "mbox":
        sink = MboxSink(tmp_path / "mbox")
    else:
        sink = MemorySink()
    async with serving(None, {"sink": sink}, spool_dir=str(spool), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        reply = await client.transaction(_stuffed(CONTENT))
        assert reply.code == 250, str(reply)
    if kind == "maildir":
        [name] = os.listdir(tmp_path / "md" / "new")
        stored = (tmp_path / "md" / "new" / name).read_bytes()
        assert stored.endswith(b"\r\n" + CONTENT)
    elif kind == "mbox":
        box = mailbox.mbox(tmp_path / "mbox")
        assert len(box) == 1
        box.close()
        # mboxrd: LF line ends, one more '>' before '>*From ' lines; nothing else changed.
        quoted = re.sub(rb"(?m)^(>*From )", rb">\1", CONTENT.replace(b"\r\n", b"\n"))
        assert (tmp_path / "mbox").read_bytes().endswith(b"\n" + quoted + b"\n")
    else:
        assert sink.messages[0].content == CONTENT
    assert spool_fds(spool) == []


async def _open_data(srv: Any) -> SMTPClient:
    client: SMTPClient = await srv.connect()
    await client.greet()
    await client.expect("MAIL FROM:<a@x.test>", 250)
    await client.expect("RCPT TO:<b@y.test>", 250)
    await client.expect("DATA", 354)
    await client.send(CONTENT)
    return client


async def test_the_spool_file_is_gone_after_a_refusal(tmp_path: Path) -> None:
    async def done(mail: Mail) -> None:
        assert len(spool_fds(tmp_path)) == 1
        raise Reply(554, "5.7.1 no thanks")

    async with serving({"events": {"done": done}}, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await _open_data(srv)
        await client.send(b".\r\n")
        assert (await client.reply()).code == 554
        await _until(lambda: spool_fds(tmp_path) == [])


async def test_the_spool_file_is_gone_after_the_connection_is_lost(tmp_path: Path) -> None:
    async with serving(None, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await _open_data(srv)
        await _until(lambda: len(spool_fds(tmp_path)) == 1)
        await client.aclose()
        await _until(lambda: spool_fds(tmp_path) == [])
        assert srv.messages == []


async def test_the_spool_file_is_gone_after_a_data_timeout(tmp_path: Path) -> None:
    # The spool file must be seen before the data timeout removes it: 2 s leaves the
    # polling room on a loaded machine.
    async with serving(None, spool_dir=str(tmp_path), data_timeout=2.0, **SMALL) as srv:
        client = await _open_data(srv)
        await _until(lambda: len(spool_fds(tmp_path)) == 1)
        reply = await client.reply()
        assert reply.code == 421
        await _until(lambda: spool_fds(tmp_path) == [])
        assert srv.messages == []


async def test_the_spool_file_is_gone_after_rset_between_bdat_chunks(tmp_path: Path) -> None:
    async with serving(None, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.send(f"BDAT {len(CONTENT)}\r\n".encode() + CONTENT)
        assert (await client.reply()).code == 250
        assert len(spool_fds(tmp_path)) == 1
        await client.expect("RSET", 250)
        await _until(lambda: spool_fds(tmp_path) == [])
        # And the connection goes on: the next message is whole.
        assert (await client.transaction(b"Subject: next\r\n\r\nok\r\n")).code == 250
        [mail] = srv.messages
        assert mail.content == b"Subject: next\r\n\r\nok\r\n"


async def test_a_full_spool_disk_is_452_and_nothing_is_half_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = _spool._write_all
    full = True

    def write_all(fd: int, chunks: list[bytes]) -> None:
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, chunks)

    monkeypatch.setattr(_spool, "_write_all", write_all)
    maildir = tmp_path / "md"
    sink = MaildirSink(maildir)
    async with serving(None, {"sink": sink}, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        reply = await client.transaction(_stuffed(CONTENT))
        assert (reply.code, reply.text) == (452, "4.3.1 insufficient system storage")
        assert not (maildir / "new").exists() or os.listdir(maildir / "new") == []
        assert spool_fds(tmp_path) == []
        full = False
        assert (await client.transaction(_stuffed(CONTENT))).code == 250
    [name] = os.listdir(maildir / "new")
    assert (maildir / "new" / name).read_bytes().endswith(b"\r\n" + CONTENT)


async def test_a_tiny_budget_makes_every_connection_spill(tmp_path: Path) -> None:
    piece = (b"x" * 78 + b"\r\n") * 64  # 5,120 bytes
    async with serving(
        None, spool_dir=str(tmp_path), spool_memory=1 << 20, max_buffered_bytes=8000
    ) as srv:
        clients = []
        for _ in range(3):
            client = await srv.connect()
            await client.greet()
            await client.expect("MAIL FROM:<a@x.test>", 250)
            await client.expect("RCPT TO:<b@y.test>", 250)
            await client.expect("DATA", 354)
            await client.send(piece)
            clients.append(client)
        # 5 KB each is far below spool_memory, but three do not fit 8,000 bytes.
        await _until(lambda: len(spool_fds(tmp_path)) >= 2)
        for client in clients:
            await client.send(b".\r\n")
            assert (await client.reply()).code == 250
        assert [m.content for m in srv.messages] == [piece] * 3
    assert spool_fds(tmp_path) == []


async def test_a_generous_budget_keeps_small_bodies_in_memory(tmp_path: Path) -> None:
    spooled: list[int] = []

    async def done(mail: Mail) -> None:
        spooled.append(len(spool_fds(tmp_path)))

    config: dict[str, Any] = {"spool_dir": str(tmp_path), "spool_memory": 1 << 20}
    async with serving({"events": {"done": done}}, **config) as srv:
        client = await srv.connect()
        await client.greet()
        assert (await client.transaction((b"x" * 78 + b"\r\n") * 64)).code == 250
        assert (await client.transaction(_stuffed(CONTENT))).code == 250
    assert spooled == [0, 0]


async def test_the_chunk_hook_sees_the_body_and_can_refuse_it_midway(tmp_path: Path) -> None:
    seen: list[int] = []
    delivered: list[Mail] = []

    async def chunk(ctx: Any) -> Reply | None:
        seen.append(len(ctx.chunk))
        if ctx.size > 200_000:  # bytes of this message so far
            return Reply(550, "5.7.1 that is enough")
        return None

    async def done(mail: Mail) -> None:
        delivered.append(mail)

    events = {"DATA_CHUNK": chunk, "done": done}
    async with serving({"events": events}, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        reply = await client.transaction(_stuffed(CONTENT))
        assert (reply.code, reply.text) == (550, "5.7.1 that is enough")
        calls = len(seen)
        # Not called again once it refused; the rest of the body was read and dropped.
        assert sum(seen) < len(CONTENT)
        assert delivered == []
        await _until(lambda: spool_fds(tmp_path) == [])
        # A small message goes through, and the hook sees it whole.
        assert (await client.transaction(b"Subject: ok\r\n\r\nfine\r\n")).code == 250
        assert seen[calls:] == [len(b"Subject: ok\r\n\r\nfine\r\n")]
        assert len(delivered) == 1


async def test_a_mail_kept_by_the_done_hook_stays_readable_until_dropped(tmp_path: Path) -> None:
    kept: list[Mail] = []

    async def done(mail: Mail) -> None:
        kept.append(mail)

    async with serving({"events": {"done": done}}, spool_dir=str(tmp_path), **SMALL) as srv:
        client = await srv.connect()
        await client.greet()
        assert (await client.transaction(_stuffed(CONTENT))).code == 250
        assert len(spool_fds(tmp_path)) == 1  # the Mail holds its spooled body
        with kept[0].open_file() as f:
            assert await trio.to_thread.run_sync(f.read) == CONTENT
        kept.clear()
        assert spool_fds(tmp_path) == []


async def test_leftover_spool_files_are_removed_when_the_server_starts(tmp_path: Path) -> None:
    (tmp_path / f"{_spool.SPOOL_PREFIX}killed").write_bytes(b"half a body")
    (tmp_path / "not-ours").write_bytes(b"keep")
    async with serving(None, spool_dir=str(tmp_path)):
        assert sorted(os.listdir(tmp_path)) == ["not-ours"]


async def test_without_a_spool_a_full_budget_pauses_reading_instead_of_growing(
    tmp_path: Path,
) -> None:
    body = (b"y" * 78 + b"\r\n") * 1500  # 120,000 bytes
    config: dict[str, Any] = {
        "spool_dir": str(tmp_path / "missing"),
        "spool_memory": 0,
        "max_buffered_bytes": 200_000,
    }
    async with serving(None, **config) as srv:
        budget = srv.server.spool.budget
        first = await _open_body(srv, body)
        await _until(lambda: budget.used >= len(body) - 2)  # the engine holds the last CRLF
        second = await _open_body(srv, body)
        await second.send(b".\r\n")
        # The second body does not fit next to the first: its connection stops reading.
        await _until(lambda: budget.used > len(body))
        with trio.move_on_after(0.3):
            await second.reply()
            pytest.fail("the second message was answered while the budget was full")
        assert budget.used <= budget.limit
        await first.send(b".\r\n")
        assert (await first.reply()).code == 250
        assert (await second.reply()).code == 250
        assert [m.content for m in srv.messages] == [body, body]
        assert budget.used == 0


async def _open_body(srv: Any, body: bytes) -> SMTPClient:
    client: SMTPClient = await srv.connect()
    await client.greet()
    await client.expect("MAIL FROM:<a@x.test>", 250)
    await client.expect("RCPT TO:<b@y.test>", 250)
    await client.expect("DATA", 354)
    await client.send(body)
    return client

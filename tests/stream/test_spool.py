"""The spooled body: memory up to a threshold, then an anonymous spool file, under a budget."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing
from _stream_helpers import big_content, mail_with_body, spool_fds, spooled_body

from trio_smtp import _spool
from trio_smtp._mail import Mail
from trio_smtp._spool import SPOOL_PREFIX, MemoryBudget, Spool
from trio_smtp.engine import Reply

CONTENT = big_content(300_000)


async def test_a_small_body_stays_in_memory_and_opens_no_file(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1 << 20)
    body = await spooled_body(b"Subject: s\r\n\r\nhi\r\n", spool, piece=5)
    assert not body.spooled
    assert body.read_bytes() == b"Subject: s\r\n\r\nhi\r\n"
    assert spool_fds(tmp_path) == []
    assert spool.budget.used == body.size
    body.release()
    assert spool.budget.used == 0
    assert body.read_bytes() == b"Subject: s\r\n\r\nhi\r\n"


async def test_a_body_past_spool_memory_goes_to_a_file_without_a_name(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=100_000)
    body = await spooled_body(CONTENT, spool)
    assert body.spooled
    assert body.size == len(CONTENT)
    # Open, but nowhere to be found in the directory: O_TMPFILE or unlinked at once.
    [target] = spool_fds(tmp_path)
    assert target.endswith("(deleted)")
    assert os.listdir(tmp_path) == []
    # Only what is not yet written is held in memory, and less than one write's worth.
    assert spool.budget.used == 0
    assert body.read_bytes() == CONTENT
    body.discard()
    assert spool_fds(tmp_path) == []


async def test_the_spool_file_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without O_TMPFILE, tempfile falls back to a named file: check that one too.
    modes = []
    real_unlink = os.unlink

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        if os.path.basename(str(path)).startswith(SPOOL_PREFIX):
            modes.append(stat.S_IMODE(os.stat(path).st_mode))
        real_unlink(path)

    monkeypatch.setattr(tempfile, "_O_TMPFILE_WORKS", False)
    monkeypatch.setattr(os, "unlink", unlink)
    spool = Spool(spool_dir=tmp_path, spool_memory=0)
    body = await spooled_body(CONTENT, spool)
    assert modes == [0o600]
    assert os.listdir(tmp_path) == []
    assert body.read_bytes() == CONTENT
    body.discard()


async def test_every_reader_gives_back_the_same_bytes(tmp_path: Path) -> None:
    for memory in (0, 1 << 20):
        spool = Spool(spool_dir=tmp_path, spool_memory=memory)
        mail = mail_with_body(await spooled_body(CONTENT, spool))
        assert mail.content_size == len(CONTENT)
        async with mail.open() as reader:
            streamed = [chunk async for chunk in reader]
        assert b"".join(streamed) == CONTENT
        if memory == 0:
            assert max(map(len, streamed)) <= _spool.READ_SIZE
        with mail.open_file() as f:
            assert f.read(10) == CONTENT[:10]
            assert f.read() == CONTENT[10:]
        assert await trio.to_thread.run_sync(_load, mail) == CONTENT
        assert mail.message["Subject"] == "big"
        # The bytes are loaded: the spool file is no longer held by the Mail.
        del mail, reader
        assert spool_fds(tmp_path) == []


def _load(mail: Mail) -> bytes:
    return mail.content


async def test_a_mail_built_from_bytes_streams_too() -> None:
    mail = mail_with_body(content=b"abc")
    async with mail.open() as reader:
        assert [c async for c in reader] == [b"abc"]
    with mail.open_file() as f:
        assert f.read() == b"abc"
    assert mail.content_size == 3
    assert repr(mail).endswith("size=3>")


async def test_an_open_file_outlives_a_discarded_body(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=0)
    body = await spooled_body(CONTENT, spool)
    with body.open_file() as f:
        body.discard()
        assert f.read() == CONTENT
    assert spool_fds(tmp_path) == []
    with pytest.raises(RuntimeError, match="discarded"):
        body.read_bytes()


async def test_a_dropped_body_closes_its_spool_file(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=0)
    mail = mail_with_body(await spooled_body(CONTENT, spool))
    assert len(spool_fds(tmp_path)) == 1
    del mail
    assert spool_fds(tmp_path) == []


async def test_a_full_budget_spills_a_small_body_at_once(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=1 << 20, max_buffered_bytes=100)
    first = await spooled_body(b"x" * 80, spool)
    assert not first.spooled
    second = await spooled_body(b"y" * 80, spool)
    assert second.spooled  # 80 more would not fit: straight to the spool
    assert spool.budget.used == 80
    assert second.read_bytes() == b"y" * 80
    first.release()
    second.discard()
    assert spool.budget.used == 0


async def test_without_a_spool_reading_waits_for_the_budget(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path / "missing", spool_memory=10, max_buffered_bytes=100)
    first = await spooled_body(b"x" * 60, spool)
    assert not first.spooled
    assert spool.budget.used == 60
    second = spool.body()
    progress = []

    async def fill() -> None:
        await second.append(b"y" * 30)
        progress.append(30)
        await second.append(b"y" * 30)  # 60 + 60 > 100: waits for room
        progress.append(60)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill)
        # The first append tries (in a thread) to make a spool file, and fails.
        with trio.fail_after(60):  # a hang guard
            while not progress:  # noqa: ASYNC110 - a worker thread is in the way
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [30]
        assert spool.budget.used == 90
        first.release()
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [30, 60]
    await second.finish()
    assert second.read_bytes() == b"y" * 60
    assert spool.budget.used <= spool.budget.limit


async def test_without_a_spool_a_body_bigger_than_the_budget_is_452(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path / "missing", spool_memory=10, max_buffered_bytes=100)
    body = spool.body()
    for _ in range(5):
        await body.append(b"z" * 30)
    assert body.size == 150
    assert spool.budget.used == 0
    with pytest.raises(Reply) as info:
        await body.finish()
    assert (info.value.code, info.value.text) == (452, "4.3.1 insufficient system storage")


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
async def test_a_full_spool_disk_is_452_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    writes = 0
    real_write = _spool._write_all

    def write_all(fd: int, data: list[bytes]) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise OSError(error, os.strerror(error))
        real_write(fd, data)

    monkeypatch.setattr(_spool, "_write_all", write_all)
    spool = Spool(spool_dir=tmp_path, spool_memory=1000)
    body = spool.body()
    content = CONTENT * 2
    for i in range(0, len(content), 65536):
        await body.append(content[i : i + 65536])
    assert body.size == len(content)
    assert spool_fds(tmp_path) == []  # closed as soon as the write failed
    assert spool.budget.used == 0
    assert body.failed is not None
    with pytest.raises(Reply) as info:
        await body.finish()
    assert (info.value.code, info.value.text) == (452, "4.3.1 insufficient system storage")
    with pytest.raises(RuntimeError, match="could not be stored"):
        body.read_bytes()


async def test_another_spool_error_is_451(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write_all(fd: int, data: list[bytes]) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_spool, "_write_all", write_all)
    body = await _fill(Spool(spool_dir=tmp_path, spool_memory=0))
    with pytest.raises(Reply) as info:
        await body.finish()
    assert info.value.code == 451


async def _fill(spool: Spool) -> _spool.Body:
    body = spool.body()
    await body.append(b"data")
    return body


def test_clean_removes_only_our_leftovers(tmp_path: Path) -> None:
    (tmp_path / f"{SPOOL_PREFIX}abc123").write_bytes(b"left by a killed server")
    (tmp_path / f"{SPOOL_PREFIX}dir").mkdir()
    (tmp_path / "mine.txt").write_bytes(b"keep")
    os.symlink(tmp_path / "mine.txt", tmp_path / f"{SPOOL_PREFIX}link")
    assert Spool(spool_dir=tmp_path).clean() == 1
    assert sorted(os.listdir(tmp_path)) == ["mine.txt", f"{SPOOL_PREFIX}dir", f"{SPOOL_PREFIX}link"]
    assert Spool(spool_dir=tmp_path / "missing").clean() == 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="spool_memory must not be negative, not -1"):
        Spool(spool_memory=-1)
    with pytest.raises(ValueError, match="max_buffered_bytes must not be negative, not -5"):
        MemoryBudget(-5)


async def test_append_nowait_takes_what_fits_and_leaves_the_rest_to_append(
    tmp_path: Path,
) -> None:
    # The connection task appends without preparing for a wait while this says yes; a
    # "no" must change nothing, so that append() then does the whole job.
    spool = Spool(spool_dir=tmp_path, spool_memory=10, max_buffered_bytes=1000)
    body = spool.body()
    assert body.append_nowait(b"12345")
    assert body.append_nowait(b"67890")
    assert (body.size, spool.budget.used, body.spooled) == (10, 10, False)
    assert not body.append_nowait(b"x")  # past spool_memory: append must spill
    assert (body.size, spool.budget.used, body.spooled) == (10, 10, False)
    await body.append(b"x")
    assert body.spooled
    await body.finish()
    assert body.read_bytes() == b"1234567890x"
    body.release()
    assert spool.budget.used == 0


async def test_append_nowait_says_no_when_the_budget_is_spent(tmp_path: Path) -> None:
    spool = Spool(spool_dir=tmp_path, spool_memory=100, max_buffered_bytes=8)
    body = spool.body()
    assert body.append_nowait(b"12345678")
    assert not body.append_nowait(b"9")  # memory allows it, the server-wide budget not
    assert (body.size, spool.budget.used) == (8, 8)
    body.discard()

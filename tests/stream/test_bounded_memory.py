"""Memory and storage bounds, measured on a real server process (the CLI)."""

from __future__ import annotations

import os
import re
import resource
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _stream_helpers import big_content

START = re.compile(rb"Server start on ip: (\S+) port: (\d+)")
#: Clients that pipeline commands and never read a reply.
NEVER_READING: int = 100


@contextmanager
def cli_server(
    *flags: str, log: Path, fsize: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m trio_smtp`` on a free port; its log goes to ``log`` (a pipe could fill)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trio_smtp", "--port", "0", *flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=limit,
        )
    try:
        deadline = time.monotonic() + 30
        while (m := START.search(log.read_bytes())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {log.read_bytes()!r}")
            time.sleep(0.05)
        yield proc, int(m.group(2))
    finally:
        proc.kill()
        proc.wait()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_full_spool_disk_gets_452_and_the_next_message_still_goes_through(
    tmp_path: Path,
) -> None:
    # RLIMIT_FSIZE makes every write past 512 KB fail with EFBIG, as a full disk would
    # (Python ignores SIGXFSZ): the spool file of a 3 MB body cannot be written.
    spool = tmp_path / "spool"
    spool.mkdir()
    maildir = tmp_path / "md"
    big = big_content(3_000_000)
    flags = ("--spool-dir", str(spool), "--maildir", str(maildir))
    with cli_server(*flags, log=tmp_path / "log", fsize=512 * 1024) as (_proc, port):
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as info:
                smtp.sendmail("a@example.org", ["b@example.org"], big)
            assert info.value.smtp_code == 452
            assert info.value.smtp_error == b"4.3.1 insufficient system storage"
            assert not (maildir / "new").exists() or os.listdir(maildir / "new") == []
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: small\r\n\r\nok\r\n")
        [name] = os.listdir(maildir / "new")
        assert (maildir / "new" / name).read_bytes().endswith(b"Subject: small\r\n\r\nok\r\n")
        assert os.listdir(maildir / "tmp") == []
        assert os.listdir(spool) == []


def test_clients_that_never_read_do_not_grow_the_server(tmp_path: Path) -> None:
    # Each client pipelines EHLO (8 octets, answered with ~200) as fast as the server
    # takes them and never reads. Without a cap on unsent output the server answered a
    # whole read's worth of commands (16 KiB: 2,048 EHLOs, ~400 KB of replies) per
    # connection before blocking; with it, a few replies.
    burst = b"EHLO a\r\n" * 4096
    flags = ("--max-connections-per-ip", "1000")
    with cli_server(*flags, log=tmp_path / "log") as (proc, port):
        time.sleep(0.5)
        before = _rss_kib(proc.pid)
        socks = []
        try:
            for _ in range(NEVER_READING):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setblocking(False)
                socks.append(sock)
            # Push until every socket is full both ways (or for at most 20 s).
            deadline = time.monotonic() + 20
            stalled = 0
            while time.monotonic() < deadline and stalled < 20:
                progressed = False
                for sock in socks:
                    try:
                        progressed |= sock.send(burst) > 0
                    except BlockingIOError:
                        pass
                stalled = 0 if progressed else stalled + 1
                time.sleep(0.05)
            time.sleep(1.0)
            grown_mib = (_rss_kib(proc.pid) - before) / 1024
        finally:
            for sock in socks:
                sock.close()
    assert grown_mib < 10, f"the server grew by {grown_mib:.1f} MiB"

"""``--workers`` under systemd (one READY=1, socket activation) and on ``--unix`` sockets."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _proc import TIMEOUT, Cli, cli, socket_activated
from conftest import require_tool

WORKER_START = r"Server start on {what} pid: (\d+) worker: (\d+)$"


def _listening_tcp(port: int) -> list[str]:
    """The socket inodes listening on 127.0.0.1:``port`` (/proc/net/tcp, state 0A)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [
        row.split()[9]
        for row in rows
        if row.split()[1] == f"0100007F:{port:04X}" and row.split()[3] == "0A"
    ]


def _unix_inodes(path: Path) -> list[str]:
    """The inodes of the listening Unix sockets bound to ``path`` (/proc/net/unix)."""
    out = []
    for row in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = row.split()
        # Num RefCount Protocol Flags Type St Inode Path; flag 00010000 is __SO_ACCEPTCON.
        if len(fields) == 8 and fields[7] == str(path) and int(fields[3], 16) & 0x10000:
            out.append(fields[6])
    return out


def _holds(pid: int, inode: str) -> bool:
    """Whether process ``pid`` has the socket ``inode`` among its descriptors."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) == f"socket:[{inode}]":
                return True
        except FileNotFoundError:
            pass  # closed since the listing: a connection or a file the worker was done with
    return False


def _workers(server: Cli, what: str, count: int = 2) -> dict[int, int]:
    """Wait for ``count`` workers' start lines naming ``what``; worker number -> pid."""
    pattern = WORKER_START.format(what=what)
    found: dict[int, int] = {}
    while len(found) < count:
        match = server.wait_err(pattern)
        found[int(match[2])] = int(match[1])
    return found


def test_workers_send_one_ready_once_all_listen_and_one_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(TIMEOUT)
        with cli(
            "--port", "0", "--hostname", "mx.test", "--workers", "2", "--log-level", "log",
            env={"NOTIFY_SOCKET": path},
        ) as server:  # fmt: skip
            port = int(server.wait_err(r"starting 2 workers on port (\d+)")[1])
            assert notify.recv(4096) == b"READY=1"
            # Sent only once both workers listen (the supervisor's reserved socket
            # for the port does not listen).
            assert len(_listening_tcp(port)) == 2
            pids = _workers(server, rf"ip: 127\.0\.0\.1 port: {port}")
            # A worker that dies and comes back is no news for systemd.
            os.kill(pids[1], signal.SIGKILL)
            server.wait_err(r"Worker 1 .* exited with status")
            restarted = _workers(server, rf"ip: 127\.0\.0\.1 port: {port}", count=1)
            assert restarted[1] != pids[1]
            server.proc.send_signal(signal.SIGTERM)
            assert notify.recv(4096) == b"STOPPING=1"
            assert server.proc.wait(timeout=TIMEOUT) == 0
            server.drain()
        notify.setblocking(False)
        with pytest.raises(BlockingIOError):
            notify.recv(4096)  # nothing more: one READY=1, one STOPPING=1
    assert sum("all 2 workers listening" in line for line in server.err) == 1


def test_systemd_socket_activate_starts_workers_that_share_its_socket(tmp_path: Path) -> None:
    activate = require_tool("systemd-socket-activate")
    swaks = require_tool("swaks")
    maildir = tmp_path / "Maildir"
    command = [sys.executable, "-m", "trio_smtp", "--workers", "2", "--hostname", "mx.test",
               "--port", "1", "--maildir", str(maildir)]  # fmt: skip
    with socket_activated(activate, command) as (server, port):
        # The first connection starts the supervisor; it waits in the socket's queue.
        first = subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--to", "a@y.test"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert first.returncode == 0, first.stdout
        pids = _workers(server, rf"ip: 127\.0\.0\.1 port: {port} \(systemd\)")
        # One listening socket on the port, systemd's, and both workers accept on it.
        [inode] = _listening_tcp(port)
        assert all(_holds(pid, inode) for pid in pids.values())
        for n in range(6):
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("a@x.test", [f"r{n}@y.test"], f"Subject: s{n}\r\n\r\nx\r\n")
        while sum("Message accepted: " in line for line in server.err) < 7:
            server.wait_err(r"Message accepted: ")
        assert server.stop() == 0
    stored = [path.name for path in (maildir / "new").iterdir()]
    assert len(stored) == 7
    # Maildir names carry the delivering process's pid (P<pid>): a worker, each time.
    # (Which worker accepts a connection is the kernel's choice; both usually do.)
    served = [int(re.findall(r"\.M\d+P(\d+)Q", name)[0]) for name in stored]
    assert set(served) <= set(pids.values()), (served, pids)
    # --port 1 was never bound by anyone: the inherited socket served.
    assert not [line for line in server.err if re.search(r"port: 1\b", line)]


def test_workers_share_a_unix_socket_the_supervisor_made(tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    path = tmp_path / "lmtp.sock"
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--hostname", "mx.test", "--workers", "2", "--lmtp", "--unix", str(path),
        "--unix-mode", "660", "--maildir", str(maildir),
    ) as server:  # fmt: skip
        pids = _workers(server, f"unix: {re.escape(str(path))} \\(unix\\)")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        [inode] = _unix_inodes(path)
        assert all(_holds(pid, inode) for pid in pids.values())

        def lmtp() -> None:
            result = subprocess.run(
                [swaks, "--socket", str(path), "--protocol", "LMTP", "--to", "a@y.test,b@y.test"],
                capture_output=True, text=True, timeout=TIMEOUT, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout
            assert result.stdout.count("> delivered") == 2

        for _ in range(4):
            lmtp()
        # A worker that stops leaves the socket file to the supervisor: the restarted
        # worker (and the other) still serve on it.
        os.kill(pids[1], signal.SIGTERM)
        server.wait_err(r"Worker 1 .* exited with status 0")
        restarted = _workers(server, f"unix: {re.escape(str(path))} \\(unix\\)", count=1)
        assert restarted[1] != pids[1]
        assert _unix_inodes(path) == [inode]
        assert _holds(restarted[1], inode)
        lmtp()
        assert server.stop() == 0
    assert not path.exists()  # removed at exit, by the supervisor
    assert len(list((maildir / "new").iterdir())) == 5

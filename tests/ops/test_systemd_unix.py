"""systemd (readiness, socket activation) and Unix-socket listeners, with the real tools."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from _proc import TIMEOUT, cli, socket_activated
from conftest import require_tool


def test_notify_socket_gets_ready_then_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(TIMEOUT)
        with cli("--port", "0", "--hostname", "mx.test", env={"NOTIFY_SOCKET": path}) as server:
            port = server.port()
            assert notify.recv(4096) == b"READY=1"
            # Ready means ready: a client is served now.
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                assert sock.makefile("rb").readline().startswith(b"220 ")
            server.proc.send_signal(15)
            assert notify.recv(4096) == b"STOPPING=1"
            assert server.proc.wait(timeout=TIMEOUT) == 0


def test_systemd_socket_activate_starts_it(tmp_path: Path) -> None:
    activate = require_tool("systemd-socket-activate")
    command = [sys.executable, "-m", "trio_smtp", "--hostname", "mx.test", "--port", "1"]
    with socket_activated(activate, command) as (server, port):
        # It starts the server on the first connection, which then waits in the queue.
        swaks = require_tool("swaks")
        result = subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--to", "a@y.test"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
        line = server.wait_err(r"Server start on ip: ").string
        assert line.endswith(f"127.0.0.1 port: {port} (systemd)")
        server.wait_err(r"Message accepted: ")
        assert server.stop() == 0
    # --port 1 was never bound (it would need root, and fail): the inherited socket served.
    assert not [line for line in server.err if "port: 1 " in line or line.endswith("port: 1")]


def test_swaks_delivers_over_lmtp_on_a_unix_socket(tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    path = tmp_path / "lmtp.sock"
    path.write_text("")  # a stale file? no: a regular file is never replaced
    with cli("--port", "0", "--unix", str(path), "--lmtp") as server:
        server.proc.wait(timeout=TIMEOUT)
        server.drain()
    assert server.proc.returncode == 2
    assert f"cannot listen on {path}" in server.err[-1]
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file whose server is gone: replaced
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--hostname", "mx.test", "--lmtp", "--unix", str(path),
        "--unix-mode", "660", "--maildir", str(maildir),
    ) as server:  # fmt: skip
        line = server.wait_err(r"Server start on unix: ").string
        assert line.endswith(f"Server start on unix: {path} (unix)")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        result = subprocess.run(
            [swaks, "--socket", str(path), "--protocol", "LMTP", "--to", "a@y.test,b@y.test"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
        assert result.stdout.count("> delivered") == 2  # one reply per recipient after DATA
        server.wait_err(r"Message accepted: .* path=")
        assert server.stop() == 0
    assert not path.exists()  # removed at exit
    assert len(list((maildir / "new").iterdir())) == 1

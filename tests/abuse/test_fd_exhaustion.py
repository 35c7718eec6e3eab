"""Out of file descriptors: accept() fails with EMFILE, the server pauses and recovers."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time

SERVER = textwrap.dedent(
    """
    import resource, sys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
    from trio_smtp import Server
    Server({"config": {"port": 0, "hostname": "mx.test", "max_connections": 1000,
                       "max_connections_per_ip": 1000, "log_level": "log"}}).run()
    """
)


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = s.recv(100)
        s.sendall(b"QUIT\r\n")
        return data


def test_emfile_pauses_accepting_and_the_server_recovers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()  # the start line
        m = re.search(rb"port: (\d+)", line)
        assert m, line
        port = int(m.group(1))
        # Far more connections than the server has descriptors for.
        held = []
        for _ in range(80):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        for s in held:
            s.close()
        # Once descriptors are free again, the server accepts and greets as usual.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _greeting(port).startswith(b"220 ")
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert b"accept() failed" in err
    assert b"Traceback" not in err
    assert proc.returncode == 0

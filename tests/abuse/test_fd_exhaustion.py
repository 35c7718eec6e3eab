"""Out of file descriptors: accept() fails with EMFILE, the server pauses and recovers."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
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


#: Bounds a hang only: the server is a subprocess on a possibly loaded machine.
HANG = 60.0


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as s:
        data = s.recv(100)
        s.sendall(b"QUIT\r\n")
        return data


class Stderr:
    """The server's stderr, read by a thread; :meth:`wait_for` waits for a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self.lines: list[bytes] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, fragment: bytes) -> bytes:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines if fragment in line), None),
                timeout=HANG,
            )
        assert found is not None, (fragment, self.lines)
        return found

    def rest(self) -> bytes:
        """Everything, once the process has exited."""
        self._thread.join(HANG)
        self._stream.close()
        return b"".join(self.lines)


def test_emfile_pauses_accepting_and_the_server_recovers() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    stderr = Stderr(proc)
    try:
        m = re.search(rb"port: (\d+)", stderr.wait_for(b"Server start"))
        assert m
        port = int(m.group(1))
        # Far more connections than the server has descriptors for: held until the
        # server has said that accept() failed (it pauses accepting, and goes on).
        held = []
        for _ in range(80):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=HANG))
        stderr.wait_for(b"accept() failed")
        for s in held:
            s.close()
        # Once descriptors are free again, the server accepts and greets as usual.
        deadline = time.monotonic() + HANG
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
            proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = stderr.rest()
    assert b"accept() failed" in err
    assert b"Traceback" not in err
    assert proc.returncode == 0

"""--workers: several processes on one port, a supervisor that restarts them, no lost mail."""

from __future__ import annotations

import concurrent.futures
import mailbox
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trio_smtp.testing import BlockingSMTPClient

#: A generous bound for anything the test waits for: the suite runs on loaded machines.
WAIT = 60.0

START = re.compile(
    rb"\[LOG\] - Server start on ip: 127\.0\.0\.1 port: (\d+) pid: (\d+) worker: (\d+)"
)


class Workers:
    def __init__(self, tmp_path: Path, n: int, *extra: str) -> None:
        self.maildir = tmp_path / "mail"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trio_smtp",
                "--workers",
                str(n),
                "--port",
                "0",
                "--hostname",
                "mx.test",
                "--maildir",
                str(self.maildir),
                "--log-level",
                "log",
                *extra,
            ],
            stderr=subprocess.PIPE,
            # A process group of its own, as a service has: killpg reaches only it.
            start_new_session=True,
        )
        self.pids: dict[int, int] = {}
        self.port = 0
        self.lines: list[bytes] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_workers(set(range(1, n + 1)))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                m = START.search(line)
                if m:
                    self.port = int(m.group(1))
                    self.pids[int(m.group(3))] = int(m.group(2))
                self._cond.notify_all()

    def wait_workers(
        self, workers: set[int], exclude: frozenset[int] = frozenset(), timeout: float = WAIT
    ) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: workers <= set(self.pids) and not (set(self.pids.values()) & exclude),
                timeout,
            )
        assert ok, b"".join(self.lines).decode()

    def wait_log(self, pattern: bytes, count: int, timeout: float = WAIT) -> None:
        """Wait until ``count`` lines of the log match the regex ``pattern``."""
        regex = re.compile(pattern)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(1 for line in self.lines if regex.search(line)) >= count, timeout
            )
        assert ok, b"".join(self.lines).decode()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.close()

    def close(self) -> None:
        """Close stderr once the reader has read it to its end (the supervisor and every
        worker gone): a reader that lags would otherwise die reading a closed file, and
        pytest -W error fails the test on that thread exception."""
        self._reader.join(WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _send_many(port: int, count: int, tag: str) -> list[str]:
    """Send messages on fresh connections; returns the ids of those that got 250."""
    accepted = []
    for i in range(count):
        mid = f"{tag}-{i}"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as s:
                s.sendmail(
                    "load@example.org",
                    ["sink@example.com"],
                    f"Subject: {mid}\r\nMessage-ID: <{mid}@test>\r\n\r\nbody\r\n".encode(),
                )
            accepted.append(mid)
        except (smtplib.SMTPException, OSError):
            pass  # a worker died under us: not acknowledged, so not counted
    return accepted


def _subjects(maildir: Path) -> list[str]:
    return [str(m["Subject"]) for m in mailbox.Maildir(maildir, create=False)]


def test_two_workers_deliver_2000_messages_and_share_the_load(tmp_path: Path) -> None:
    w = Workers(tmp_path, 2)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda t: _send_many(w.port, 250, f"t{t}"), range(8)))
        accepted = [mid for r in results for mid in r]
        assert len(accepted) == 2000
    finally:
        assert w.stop() == 0
    subjects = _subjects(w.maildir)
    assert sorted(subjects) == sorted(accepted)
    # Both workers served: each logged accepted messages under its own pid.
    log = b"".join(w.lines)
    assert log.count(b"Server start on ip") == 2


def test_killing_a_worker_loses_no_acknowledged_message_and_it_is_restarted(tmp_path: Path) -> None:
    w = Workers(tmp_path, 2)
    try:
        victim = w.pids[1]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_send_many, w.port, 100, f"k{t}") for t in range(4)]
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            accepted = [mid for f in futures for mid in f.result()]
        w.wait_workers({1}, exclude=frozenset({victim}))
        assert w.pids[1] != victim
        # The restarted worker serves too.
        assert _send_many(w.port, 20, "after")
        assert len(accepted) > 0
    finally:
        assert w.stop() == 0
    stored = set(_subjects(w.maildir))
    missing = [mid for mid in accepted if mid not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages are not in the Maildir"
    assert any(b"exited with status" in line for line in w.lines)


def test_sigterm_drains_all_workers_and_exits_0(tmp_path: Path) -> None:
    w = Workers(tmp_path, 2)
    pids = list(w.pids.values())
    assert w.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_share_one_port_with_so_reuseport(tmp_path: Path) -> None:
    w = Workers(tmp_path, 2)
    try:
        # /proc/net/tcp: local address is "IP:PORT" in hex, state 0A is LISTEN.
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        listening = [
            r for r in rows if r.split()[1].endswith(f":{w.port:04X}") and r.split()[3] == "0A"
        ]
        assert len(listening) == 2, listening
    finally:
        assert w.stop() == 0


# ---------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_drains_gracefully(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C (SIGINT to the group) and systemd's KillMode (SIGTERM to all) drain."""
    w = Workers(tmp_path, 2)
    client = BlockingSMTPClient.connect("127.0.0.1", w.port, timeout=WAIT)
    try:
        assert client.reply().code == 220
        client.expect("EHLO client.test", 250)
        client.expect("MAIL FROM:<ann@client.test>", 250)
        client.expect("RCPT TO:<bob@mx.test>", 250)
        client.expect("DATA", 354)
        client.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        os.killpg(w.proc.pid, signum)
        # Both workers are draining and the supervisor has passed its SIGTERM on (it
        # logs that line once sent), and no worker has a SIGTERM still pending: the
        # second one has reached the worker too (before the fix it took it as "stop
        # now" and the client got 421 here).
        w.wait_log(rb"Supervisor received", 1)
        w.wait_log(rb"Server shutting down", 2)
        for pid in w.pids.values():
            _wait_delivered(pid, signal.SIGTERM)
        # The message in flight is still accepted and stored ...
        client.expect("second half\r\n.", 250)
        # ... and only then is the client told the server is going away.
        client.expect("NOOP", 421)
    finally:
        client.close()
        status = w.proc.wait(WAIT)
        w.close()
    assert status == 0
    assert _subjects(w.maildir) == ["in flight"]
    assert b"stopping now" not in b"".join(w.lines)


def _wait_delivered(pid: int, signum: int, timeout: float = WAIT) -> None:
    """Wait until process ``pid`` has no ``signum`` pending (/proc/PID/status) or is gone."""
    bit = 1 << (signum - 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return  # it has exited (an idle worker drains at once): nothing is pending
        pending = 0
        for line in status.splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")):
                pending |= int(line.split()[1], 16)
        if not pending & bit:
            return
        assert time.monotonic() < deadline, f"signal {signum} still pending in {pid}"
        time.sleep(0.01)


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    w = Workers(tmp_path, 2)
    pids = list(w.pids.values())
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(WAIT)
    deadline = time.monotonic() + WAIT
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in pids if _alive(pid)]
    assert alive == [], "workers outlived their supervisor"
    # The port is free: a plain listener (no SO_REUSEPORT) can take it.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", w.port))
        sock.listen()
    w.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


# Moved from test_review_regressions.py


def test_workers_with_a_bad_auth_file_exit_2_instead_of_restarting_forever(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "users"
    auth.write_text("no colon here\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_smtp",
            "--port",
            "0",
            "--workers",
            "2",
            "--auth-file",
            str(auth),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "expected user:password" in result.stderr
    assert "Supervisor" not in result.stderr


def _greetings(port: int, count: int) -> tuple[list[bytes], list[socket.socket]]:
    """Open ``count`` connections at once; the first reply line of each (kept open)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(count)]
    firsts = []
    for sock in socks:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        firsts.append(data[:3])
    return firsts, socks


@pytest.mark.parametrize(
    ("flags", "admitted"),
    [(("--max-connections-per-ip", "2"), 2), (("--max-connections", "3"), 3)],
)
def test_connection_limits_hold_for_the_whole_server(
    tmp_path: Path, flags: tuple[str, str], admitted: int
) -> None:
    w = Workers(tmp_path, 2, *flags)
    socks: list[socket.socket] = []
    try:
        firsts, socks = _greetings(w.port, 8)
        assert sorted(firsts) == sorted([b"220"] * admitted + [b"421"] * (8 - admitted))
    finally:
        for sock in socks:
            sock.close()
        assert w.stop() == 0


def test_auth_failure_budget_holds_across_workers(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:pw-alice\n", encoding="utf-8")
    w = Workers(
        tmp_path,
        2,
        "--auth-file",
        str(users),
        "--auth-insecure",
        "--max-auth-failures-per-ip",
        "3",
    )
    codes = []
    try:
        # One failure per connection: the kernel spreads them over both workers.
        for _ in range(5):
            with smtplib.SMTP("127.0.0.1", w.port, timeout=60) as client:
                client.ehlo()
                code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAHdyb25n")  # alice / wrong
                codes.append(code)
    finally:
        assert w.stop() == 0
    assert codes == [535, 535, 535, 454, 454]

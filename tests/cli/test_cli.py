"""``python -m trio_smtp`` as a user runs it: a real process, real signals, real clients."""

from __future__ import annotations

import contextlib
import email.header
import importlib.metadata
import json
import mailbox
import os
import queue
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import require_tool

import trio_smtp
import trio_smtp._cli

START_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] \[LOG\] - "
    r"Server start on ip: 127\.0\.0\.1 port: (\d+)$"
)
TIMEOUT = 60.0  # only a hang takes this long, even on a loaded machine


class Cli:
    """A running ``python -m trio_smtp`` whose stderr and stdout are read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_smtp", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._err_queue: queue.Queue[str | None] = queue.Queue()
        self._out_queue: queue.Queue[str | None] = queue.Queue()
        streams = ((self.proc.stderr, self._err_queue), (self.proc.stdout, self._out_queue))
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, q), daemon=True)
            for stream, q in streams
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: object, q: queue.Queue[str | None]) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))
        q.put(None)

    def _wait(self, q: queue.Queue[str | None], seen: list[str], pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        while True:
            try:
                line = q.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {seen}") from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {seen}")
            seen.append(line)
            match = regex.search(line)
            if match:
                return match

    def wait_err(self, pattern: str) -> re.Match[str]:
        return self._wait(self._err_queue, self.err, pattern)

    def wait_out(self, pattern: str) -> re.Match[str]:
        return self._wait(self._out_queue, self.out, pattern)

    def started(self) -> int:
        """Wait for the start line (exactly as SPEC §3 shows it); returns the port."""
        match = self.wait_err(r"Server start on ip:")
        exact = START_LINE.match(self.err[-1])
        assert exact, f"start line {self.err[-1]!r} is not in the smtpjs format"
        assert match
        return int(exact[1])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            self.drain()

    def drain(self) -> None:
        """Collect what is left of the output once the process has ended."""
        for q, seen in ((self._err_queue, self.err), (self._out_queue, self.out)):
            while True:
                try:
                    line = q.get(timeout=TIMEOUT)
                except queue.Empty:
                    break
                if line is None:
                    break
                seen.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Close the pipes only once the readers have reached their end: a reader that lags
        # (a loaded machine) would otherwise die reading a closed file, and pytest -W error
        # fails whichever test is running on that thread exception.
        for pump in self._pumps:
            pump.join(TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def cli(*args: str) -> Iterator[Cli]:
    process = Cli(*args)
    try:
        yield process
    finally:
        process.kill()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_smtp", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def send(port: int, rcpts: list[str], body: bytes, host: str = "127.0.0.1") -> None:
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        client.sendmail("alice@x.test", rcpts, body)


# ---------------------------------------------------------------- running


def test_start_line_send_a_message_and_stop_with_sigterm() -> None:
    body = b"Subject: cli\r\n\r\nhello from the test\r\n"
    with cli("--port", "0", "--hostname", "mx.test") as server:
        port = server.started()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            code, _ = client.noop()
            assert code == 250
            client.sendmail("alice@x.test", ["bob@y.test", "carol@y.test"], body)
        opened = server.wait_err(r"\[INFO\] - Connection opened: id=(\S+) ")
        match = server.wait_err(
            r"\[INFO\] - Message accepted: id=(\S+) from=<alice@x\.test> "
            r"to=<bob@y\.test>,<carol@y\.test> size=(\d+) subject=\"cli\"$"
        )
        assert int(match[2]) == len(body)
        assert match[1].startswith(opened[1])
        assert server.stop(signal.SIGTERM) == 0
    assert not [line for line in server.err if "Traceback" in line]
    assert server.err[-1].endswith("[LOG] - Server stopped")
    # The print sink without --print-body prints nothing on stdout.
    assert server.out == []


def test_sigint_exits_0() -> None:
    with cli("--port", "0", "--hostname", "mx.test") as server:
        port = server.started()
        send(port, ["bob@y.test"], b"x\r\n")
        assert server.stop(signal.SIGINT) == 0
    assert not [line for line in server.err if "Traceback" in line or "KeyboardInterrupt" in line]


def test_sigterm_mid_data_lets_the_message_finish() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--print-body") as server:
        port = server.started()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
            sock.makefile("rb") as replies,
        ):
            assert replies.readline().startswith(b"220 mx.test")
            sock.sendall(b"HELO client.test\r\n")
            assert replies.readline().startswith(b"250")
            for command in (b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@y.test>", b"DATA"):
                sock.sendall(command + b"\r\n")
                assert replies.readline()[:1] in (b"2", b"3")
            sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
            server.proc.send_signal(signal.SIGTERM)
            server.wait_err(r"Server shutting down")
            sock.sendall(b"second half\r\n.\r\n")
            assert replies.readline().startswith(b"250 2.0.0 OK queued as ")
            sock.sendall(b"NOOP\r\n")
            assert replies.readline() == b"421 4.3.2 service shutting down, try again later\r\n"
            # Closed. (The 421 may go out before the NOOP arrives, which then gets a reset.)
            with contextlib.suppress(ConnectionResetError):
                assert replies.readline() == b""
        assert server.proc.wait(timeout=TIMEOUT) == 0
        server.drain()
    assert "first half" in server.out
    assert "second half" in server.out


def test_print_body_prints_the_whole_message() -> None:
    body = b"Subject: printed\r\n\r\nline one\r\nline two\r\n"
    with cli("--port", "0", "--hostname", "mx.test", "--print-body") as server:
        port = server.started()
        send(port, ["bob@y.test"], body)
        server.wait_out(r"^------------ END MESSAGE ------------$")
        assert server.stop() == 0
    start = server.out.index("---------- MESSAGE FOLLOWS ----------")
    assert server.out[start + 1 : -1] == ["Subject: printed", "", "line one", "line two"]


def test_greeting_uses_the_hostname_or_the_fqdn() -> None:
    with cli("--port", "0", "--hostname", "mx.example.test") as server:
        port = server.started()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            code, text = client.ehlo("client.test")
        assert server.stop() == 0
    assert (code, text.split(b"\n")[0]) == (250, b"mx.example.test")
    with cli("--port", "0") as server:
        port = server.started()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
            sock.makefile("rb") as replies,
        ):
            greeting = replies.readline()
        assert server.stop() == 0
    assert greeting.startswith(b"220 " + socket.getfqdn().encode() + b" ")


def test_maildir_flag_delivers_into_new(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"  # does not exist yet
    body = b"Subject: to the maildir\r\n\r\nstored\r\n"
    with cli("--port", "0", "--hostname", "mx.test", "--maildir", str(maildir)) as server:
        port = server.started()
        send(port, ["bob@y.test"], body)
        swaks = shutil.which("swaks")
        if swaks is not None:
            result = subprocess.run(
                [swaks, "--server", "127.0.0.1", "--port", str(port), "--to", "carol@y.test"],
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
            assert result.returncode == 0, result.stdout
        assert server.stop() == 0
    files = sorted((maildir / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == (2 if swaks else 1)
    assert files[0].read_bytes().endswith(body)
    assert list((maildir / "tmp").iterdir()) == []
    messages = list(mailbox.Maildir(str(maildir), create=False))
    assert "to the maildir" in {m["Subject"] for m in messages}


def test_swaks_against_the_cli() -> None:
    swaks = require_tool("swaks")
    with cli("--port", "0", "--hostname", "mx.test") as server:
        port = server.started()
        result = subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--to", "dave@y.test"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stdout
        server.wait_err(
            r"\[INFO\] - Message accepted: id=\S+ from=<\S+> to=<dave@y\.test> size=\d+"
        )
        assert server.stop() == 0


def test_lmtp_flag() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--lmtp") as server:
        port = server.started()
        with smtplib.LMTP("127.0.0.1", port) as client:
            assert client.ehlo("client.test")[0] == 250  # LHLO
            assert client.sendmail("a@x.test", ["b@y.test"], b"Subject: l\r\n\r\nx\r\n") == {}
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            assert client.ehlo("client.test")[0] == 500  # EHLO is not LMTP
        server.wait_err(r"Message accepted: id=\S+ from=<a@x\.test> to=<b@y\.test>")
        assert server.stop() == 0


def test_limits_from_flags() -> None:
    with cli(
        "--port",
        "0",
        "--hostname",
        "mx.test",
        "--max-message-size",
        "100",
        "--max-recipients",
        "2",
    ) as server:
        port = server.started()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo("client.test")
            assert client.esmtp_features["size"] == "100"
            with pytest.raises(smtplib.SMTPSenderRefused):
                client.sendmail("a@x.test", ["b@y.test"], b"x" * 200)
            client.rset()
            client.mail("a@x.test")
            assert client.rcpt("r1@y.test")[0] == 250
            assert client.rcpt("r2@y.test")[0] == 250
            code, text = client.rcpt("r3@y.test")
            assert (code, text[:5]) == (452, b"4.5.3")
        assert server.stop() == 0


def test_two_hosts() -> None:
    hosts = ["--host", "127.0.0.1", "--host", "::1"]
    with cli("--port", "0", "--hostname", "mx.test", *hosts) as server:
        first = server.started()
        second = server.wait_err(r"\[LOG\] - Server start on ip: ::1 port: (\d+)$")
        send(first, ["b@y.test"], b"v4\r\n")
        send(int(second[1]), ["b@y.test"], b"v6\r\n", host="::1")
        server.wait_err(r"Message accepted: id=\S+ from=<alice@x\.test> to=<b@y\.test>")
        server.wait_err(r"Message accepted: id=\S+ from=<alice@x\.test> to=<b@y\.test>")
        assert server.stop() == 0


def test_log_level_debug_shows_refused_commands() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--log-level", "debug") as server:
        port = server.started()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
            sock.makefile("rb") as replies,
        ):
            replies.readline()
            sock.sendall(b"BOGUS command\r\n")
            assert replies.readline().startswith(b"500")
        server.wait_err(r"\[DEBUG\] - Command refused: .*'BOGUS command'")
        assert server.stop() == 0


# ---------------------------------------------------------------- bad flags and files


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--port", "abc"], "'abc'"),
        (["--port", "70000"], "'70000'"),
        (["--max-recipients", "0"], "'0'"),
        (["--max-connections", "-3"], "'-3'"),
        (["--command-timeout", "soon"], "'soon'"),
        (["--bare-lf", "x"], "'x'"),
        (["--log-level", "loud"], "'loud'"),
        (["--prot", "25"], "--prot"),
        (["--tls-cert", "{tmp}/missing.pem"], "--tls-key"),
        (["--tls-cert", "{tmp}/c.pem", "--tls-key", "{tmp}/k.pem"], "{tmp}/c.pem"),
        (["--auth-file", "{tmp}/no-users"], "{tmp}/no-users"),
        (["--auth-file", "{tmp}"], "Is a directory"),  # unreadable, even for root
        (["--maildir", "{tmp}/regular-file/Maildir"], "{tmp}/regular-file/Maildir"),
        (["--mbox", "{tmp}/no/dir/mbox"], "{tmp}/no/dir"),
        (["--maildir", "{tmp}/regular-file"], "--maildir '{tmp}/regular-file': not a directory"),
        (["--maildir", "{unwritable}"], "--maildir '{unwritable}': "),
        (["--mbox", "{unwritable}/mbox"], "--mbox '{unwritable}/mbox': "),
        (["--mbox", "{tmp}"], "--mbox '{tmp}': is a directory"),
        (["--auth-required"], "--auth-required needs --auth-file"),
        (["--maildir", "{tmp}/md", "--print-body"], "--print-body works with the default"),
        (["--proxy-from", "10.0.0.0/8"], "--proxy-from needs --proxy-protocol"),
        (["--command-timeout", "0"], "--command-timeout: expected a number of seconds > 0"),
        (["--command-timeout", "-5"], "--command-timeout: expected a number of seconds > 0"),
        (["--hook-timeout", "x"], "--hook-timeout: expected a number of seconds > 0, not 'x'"),
        (["--shutdown-grace", "-1"], "--shutdown-grace: expected a number of seconds >= 0"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_bad_flags_exit_2_with_one_line_naming_the_value(
    tmp_path: Path, args: list[str], culprit: str
) -> None:
    (tmp_path / "regular-file").write_text("")  # a file where a directory should be
    unwritable = _unwritable_directory(tmp_path)
    args = [arg.format(tmp=tmp_path, unwritable=unwritable) for arg in args]
    result = run_cli("--port", "0", "--hostname", "mx.test", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-smtp: error: ")
    assert culprit.format(tmp=tmp_path, unwritable=unwritable) in lines[0]
    from trio_smtp._config import CONFIG_KEYS

    assert not [k for k in CONFIG_KEYS if "_" in k and k in lines[0]], "config key, not flag"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def _unwritable_directory(tmp_path: Path) -> str:
    """A directory this process cannot write into, even as root (who ignores modes)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500, exist_ok=True)
        return str(locked)
    # sysfs refuses new files to everyone.
    if os.path.isdir("/sys/kernel") and not _can_create_in("/sys/kernel"):
        return "/sys/kernel"
    pytest.skip("no directory is unwritable for root here")


def _can_create_in(path: str) -> bool:
    try:
        os.close(os.open(os.path.join(path, "probe"), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except OSError:
        return False
    os.unlink(os.path.join(path, "probe"))
    return True


def test_version_prints_the_package_name_and_version() -> None:
    for flag in ("--version", "-V"):
        result = run_cli(flag)
        assert result.returncode == 0
        assert result.stdout == f"trio_smtp {trio_smtp.__version__}\n"


def test_workers_on_a_port_another_instance_holds_exits_2() -> None:
    # Another --workers instance holds its port with SO_REUSEPORT, which the kernel would
    # let a second instance share: the two would split the traffic without a word.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = run_cli("--port", str(port), "--workers", "2", "--hostname", "mx.test")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def test_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "--hostname", "mx.test")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def test_help_exits_0() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: trio-smtp")
    for flag in (
        "--host",
        "--port",
        "--hostname",
        "--max-message-size",
        "--shutdown-grace",
        "--lmtp",
    ):
        assert flag in result.stdout


def test_console_script_is_installed() -> None:
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="trio-smtp")
    assert entry.load() is trio_smtp._cli.main
    script = shutil.which("trio-smtp") or shutil.which(
        "trio-smtp", path=os.path.dirname(sys.executable)
    )
    if script is None:
        pytest.skip("the trio-smtp script is not on PATH in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: trio-smtp")


# ---------------------------------------------------------------- logs


def _raw_session(port: int, lines: list[bytes]) -> list[bytes]:
    """Send each line and read one reply line per line (plus the greeting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        replies = sock.makefile("rb")
        out = [replies.readline()]
        for line in lines:
            sock.sendall(line)
            reply = replies.readline()
            while reply[3:4] == b"-":
                reply = replies.readline()
            out.append(reply)
        return out


# An ESC sequence, a C1 CSI that clears a screen, NEL, DEL, U+2028/2029 and a bidi override.
HOSTILE = "\x1b[31mred \x9b2J\x85nel\x7fdel\u2028ls\u2029ps\u202eevil"


def _hostile_message() -> list[bytes]:
    encoded = email.header.Header(HOSTILE, "utf-8").encode()
    return [
        b"EHLO client.test\r\n",
        "MAIL FROM:<caf\u00e9\u2028x@x.test> SMTPUTF8\r\n".encode(),
        b"MAIL FROM:<alice@x.test>\r\n",
        b"RCPT TO:<bob@y.test>\r\n",
        b"DATA\r\n",
        f"Subject: {encoded}\r\n\r\nbody \x1b[2J here\r\n.\r\n".encode(),
        b"QUIT\r\n",
    ]


def test_log_lines_escape_every_non_printable_character() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--log-level", "debug") as server:
        port = server.started()
        replies = _raw_session(port, _hostile_message())
        assert replies[-2].startswith(b"250 "), replies
        server.wait_err(r"Message accepted: ")
        assert server.stop() == 0
    for line in server.err:
        assert line.isprintable(), f"unescaped character in {line!r}"
        assert re.match(r"\[\d{4}-", line), f"a line not started by the logger: {line!r}"
    [accepted] = [line for line in server.err if "[INFO] - Message accepted" in line]
    assert "from=<caf\u00e9\\u2028x@x.test>" in accepted  # SMTPUTF8 address, escaped
    # (the email package turns NEL and U+2028/9 in a Subject into spaces itself)
    assert 'subject="\\x1b[31mred \\x9b2J nel\\x7fdel ls ps\\u202eevil"' in accepted


def test_print_body_escapes_non_printable_characters() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--print-body") as server:
        port = server.started()
        body = "Subject: x\r\n\r\nclear \x1b[2J \x9b2J nel\x85 ls\u2028 tab\tend\r\n".encode()
        send(port, ["bob@y.test"], body)
        server.wait_out(r"^------------ END MESSAGE ------------$")
        assert server.stop() == 0
    start = server.out.index("---------- MESSAGE FOLLOWS ----------")
    assert server.out[start + 3] == "clear \\x1b[2J \\x9b2J nel\\x85 ls\\u2028 tab\tend"
    assert all(line.replace("\t", " ").isprintable() for line in server.out)


def test_json_log_lines_parse_with_jq() -> None:
    jq = require_tool("jq")
    with cli("--port", "0", "--hostname", "mx.test", "--log-format", "json") as server:
        line = server.wait_err(r"Server start on ip:").string
        port = int(json.loads(line)["msg"].rsplit(" ", 1)[1])
        _raw_session(port, _hostile_message())
        send(port, ["bob@y.test", "carol@y.test"], b"Subject: second\r\n\r\nhello\r\n")
        server.wait_err(r"second")
        assert server.stop() == 0
    text = "\n".join(server.err) + "\n"
    assert text.isascii()
    parsed = subprocess.run(
        [jq, "-c", "."], input=text, capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    # (not splitlines(): jq writes U+2028 raw, and splitlines() would cut there)
    records = [json.loads(line) for line in parsed.stdout.rstrip("\n").split("\n")]
    assert len(records) == len(server.err)
    for record in records:
        assert {"ts", "level", "msg"} <= set(record)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    opened = [r for r in records if r["msg"].startswith("Connection opened")]
    assert len(opened) == 2
    assert all(r["peer"].startswith("127.0.0.1:") and r["session"] for r in opened)
    messages = [r for r in records if r.get("result") == "accepted"]
    assert [m["subject"] for m in messages] == [
        "\x1b[31mred \x9b2J nel\x7fdel ls ps\u202eevil",
        "second",
    ]
    second = messages[1]
    assert second["from"] == "alice@x.test"
    assert second["to"] == ["bob@y.test", "carol@y.test"]
    assert second["size"] == len(b"Subject: second\r\n\r\nhello\r\n")
    assert second["message_id"].startswith(second["session"])
    # jq selects by field, as Loki and ELK queries do.
    ids = subprocess.run(
        [jq, "-r", 'select(.result == "accepted") | .message_id'],
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert ids.stdout.split() == [m["message_id"] for m in messages]


def test_storage_failure_is_logged_at_error_with_the_path_and_reason(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with cli("--port", "0", "--hostname", "mx.test", "--maildir", str(maildir)) as server:
        port = server.started()
        # The disk goes away under the running server: the Maildir becomes a file.
        shutil.rmtree(maildir)
        maildir.write_text("not a maildir")
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("alice@x.test", ["bob@y.test"], b"Subject: lost\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 451
        line = server.wait_err(r"\[ERROR\] - Message failed: ").string
        assert server.stop() == 0
    assert f"path={maildir}" in line
    assert re.search(r" reason=(File exists|Not a directory): \S*Maildir", line), line
    assert 'subject="lost"' in line


def test_start_lines_are_written_whatever_the_log_level() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--log-level", "fatal") as server:
        port = server.started()
        send(port, ["bob@y.test"], b"Subject: quiet\r\n\r\nx\r\n")
        assert server.stop() == 0
    assert len(server.err) == 1, server.err  # the start line only


def test_start_lines_name_the_smtps_listener(tls_files: dict[str, Path]) -> None:
    with cli(
        "--port", "0", "--tls-port", "0", "--hostname", "mx.test", "--log-level", "warn",
        "--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]),
    ) as server:  # fmt: skip
        server.started()
        line = server.wait_err(r"Server start on ip: 127\.0\.0\.1 port: \d+ \(smtps\)$").string
        assert server.stop() == 0
    assert "[LOG]" in line


def test_the_connection_line_shows_the_proxy_client_address() -> None:
    with cli("--port", "0", "--hostname", "mx.test", "--proxy-protocol") as server:
        port = server.started()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
            assert sock.makefile("rb").readline().startswith(b"220 ")
            sock.sendall(b"QUIT\r\n")
        line = server.wait_err(r"Connection opened: ").string
        assert server.stop() == 0
    assert "peer=203.0.113.9:40000 via=127.0.0.1" in line

"""The scripts in examples/ run, and do what their docstrings say."""

from __future__ import annotations

import contextlib
import importlib.util
import mailbox
import queue
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

from trio_smtp.testing import SMTPClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
START = re.compile(r"\[LOG\] - Server start on ip: 127\.0\.0\.1 port: (\d+)$")
#: How long to wait for an example's line, exit or reply: only a hang takes this long, even
#: on a loaded machine (a subprocess that imports Trio may need seconds to start there).
TIMEOUT = 60.0


class Script:
    """An example running as a subprocess, its output read line by line."""

    def __init__(self, name: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.err: list[str] = []
        self.out: list[str] = []
        self._open_streams = 2
        self.pumps = [
            threading.Thread(target=self._pump, args=(tag, stream), daemon=True)
            for tag, stream in (("err", self.proc.stderr), ("out", self.proc.stdout))
        ]
        for pump in self.pumps:
            pump.start()

    def _pump(self, tag: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put((tag, line.rstrip("\n")))
        self.lines.put((tag, None))

    def _next_line(self, deadline: float) -> str | None:
        """Take one line from the reader threads and keep it (``None``: a stream ended)."""
        try:
            tag, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no more output in {TIMEOUT} s: {self.err + self.out}") from None
        if line is None:
            self._open_streams -= 1
        else:
            (self.err if tag == "err" else self.out).append(line)
        return line

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line, on either stream, that matches: stdout and stderr are read by
        two threads, so a line may already have been read while waiting for another."""
        regex = re.compile(pattern)
        for seen in (*self.err, *self.out):
            match = regex.search(seen)
            if match:
                return match
        deadline = time.monotonic() + TIMEOUT
        while self._open_streams:
            line = self._next_line(deadline)
            match = None if line is None else regex.search(line)
            if match:
                return match
        raise AssertionError(f"no {pattern!r} in {self.err + self.out}")

    def port(self) -> int:
        return int(self.wait_for(START.pattern)[1])

    def finish(self) -> int:
        """Wait for the exit, then for the last lines: the reader threads may still hold
        some when the process is gone, so both streams are read to their end."""
        code = self.proc.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while self._open_streams:
            self._next_line(deadline)
        return code


@contextmanager
def script(name: str, *args: str) -> Iterator[Script]:
    running = Script(name, *args)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.wait()
        # Closed once read to their end: a lagging reader must not die on a closed file.
        for pump in running.pumps:
            pump.join(TIMEOUT)
        for stream in (running.proc.stdout, running.proc.stderr):
            if stream is not None:
                stream.close()


def test_hooks_server_example(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with script("hooks_server.py", "--port", "0", "--maildir", str(maildir)) as server:
        port = server.port()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            code, _ = client.ehlo("client.test")
            assert code == 250
            refused = client.sendmail(
                "sender@x.test",
                ["alice@example.com", "mallory@example.com"],
                b"Subject: hello Alice\r\n\r\nfrom the example test\r\n",
            )
            with pytest.raises(smtplib.SMTPRecipientsRefused) as nobody:
                client.sendmail("sender@x.test", ["nobody@example.com"], b"x\r\n")
        server.wait_for(r"sent \d+ commands")
        server.proc.send_signal(signal.SIGTERM)
        assert server.finish() == 0
    # Unknown recipients are refused with 550 5.1.1; known ones get the message.
    assert refused == {
        "mallory@example.com": (550, b"5.1.1 <mallory@example.com>: no such user here")
    }
    assert nobody.value.recipients["nobody@example.com"][0] == 550
    [stored] = list(mailbox.Maildir(str(maildir), create=False))
    assert stored["Subject"] == "hello Alice"
    assert str(stored.get_payload()).replace("\r\n", "\n") == "from the example test\n"
    # Every command is logged with the session id.
    log = "\n".join(server.err)
    for command in ("EHLO client.test", "MAIL FROM:<sender@x.test>", "RCPT TO:<alice@example.com>"):
        assert re.search(rf"\[INFO\] - \w+ {re.escape(command)}", log), command
    assert re.search(r"\[INFO\] - \w+ DATA$", log, re.MULTILINE)
    assert "Traceback" not in log


def _load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module of its own (examples/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_hooks_server_example_answers_ehlo_a_second_late_without_holding_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The seed's slow HELO, on Trio's autojump clock (virtual time: nothing here depends
    on how long anything really takes): EHLO is answered exactly one second after it was
    sent, and a client that connects while that hook sleeps is greeted at once.

    Only EHLO and the greeting are used: the example's other hooks are plain functions,
    which run in worker threads, and the autojump clock jumps while a thread works.
    """
    example = _load_example("hooks_server")
    server = example.make_server(host="127.0.0.1", port=0, maildir=str(tmp_path / "Maildir"))
    slow_end, slow_server_end = trio.testing.memory_stream_pair()
    other_end, other_server_end = trio.testing.memory_stream_pair()
    # Under the autojump clock a client's bound must outlast every server timeout.
    slow = SMTPClient(slow_end, timeout=10_000)
    other = SMTPClient(other_end, timeout=10_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, slow_server_end, peer=("192.0.2.1", 1)))
        assert (await slow.reply()).code == 220
        sent_at = trio.current_time()
        await slow.send(b"EHLO client.test\r\n")
        await trio.testing.wait_all_tasks_blocked()  # the hook is in its sleep
        nursery.start_soon(partial(server.serve_stream, other_server_end, peer=("192.0.2.2", 1)))
        assert (await other.reply()).code == 220
        assert trio.current_time() == sent_at  # greeted while the hook sleeps
        assert (await slow.reply()).code == 250
        assert trio.current_time() - sent_at == pytest.approx(1.0)
        for client in (slow, other):
            await client.aclose()


def test_embedded_in_app_example() -> None:
    with script("embedded_in_app.py", "--port", "0", "--count", "2") as app:
        port = app.port()
        app.wait_for(r"^app: mail server ready on \[\('127\.0\.0\.1', \d+\)\]$")
        for n in range(2):
            client = smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)
            try:
                client.sendmail(
                    "a@x.test", [f"r{n}@y.test"], f"Subject: job {n}\r\n\r\n.\r\n".encode()
                )
            finally:
                # After the second message the app shuts down: QUIT may get 421 4.3.2.
                with contextlib.suppress(smtplib.SMTPException):
                    client.quit()
                client.close()
        # After two messages the app stops by itself, gracefully.
        assert app.finish() == 0
    processed = [line for line in app.out if line.startswith("processed ")]
    assert len(processed) == 2
    assert re.fullmatch(r"processed \S+: 'job 0' for r0@y\.test", processed[0])
    assert re.fullmatch(r"processed \S+: 'job 1' for r1@y\.test", processed[1])
    assert app.out[-1] == "app: stopped"
    assert "Traceback" not in "\n".join(app.err)


def test_embedded_in_app_stops_on_sigint() -> None:
    with script("embedded_in_app.py", "--port", "0") as app:
        app.port()
        app.proc.send_signal(signal.SIGINT)
        assert app.finish() == 0
    assert app.out[-1] == "app: stopped"


TESTING_EXAMPLES = sorted(p.name for p in (EXAMPLES / "testing").glob("test_*.py"))


def test_every_testing_style_has_an_example() -> None:
    assert TESTING_EXAMPLES == ["test_async_mail.py", "test_retries.py", "test_signup_mail.py"]


@pytest.mark.parametrize("name", TESTING_EXAMPLES)
def test_testing_example_passes_in_a_project_of_its_own(name: str, tmp_path: Path) -> None:
    """Each example is a user's test file: run by pytest in a bare project (no trio_mode)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # Installed, trio_smtp's plugin comes by entry point; from a source tree, by name.
    installed = any(ep.name == "trio_smtp" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "trio_smtp.testing"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            *plugin,
            "-c",
            str(tmp_path / "pytest.ini"),
            "--rootdir",
            str(tmp_path),
            str(EXAMPLES / "testing" / name),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ passed in ", result.stdout, re.M), result.stdout

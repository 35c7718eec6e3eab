"""Every code block of README.md runs, as its `<!-- test: KIND -->` comment says.

Kinds: ``exec`` (a Python block that must exit 0), ``serve PORT`` (a Python block that
serves on PORT until SIGTERM: a message is sent through it), ``pytest`` (a block of
tests that must pass), ``cli-serve`` (a command line that serves: run with ``--port 0``,
a message is sent through it), ``cli-default`` (the first README command: the server
must start on 127.0.0.1, and its default port must be 1337) and ``ci`` (the second one:
what CI runs).

No block binds the port the README names: the suite must pass while the README's own
server runs on this machine (and under pytest-xdist), so ports are rewritten to 0 and
the port actually bound is read from the server's start line.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import signal
import smtplib
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"<!-- test: (?P<kind>[^>]+?) -->\n```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
START = re.compile(rb"\[LOG\] - Server start on ip: (\S+) port: (\d+)")
BLOCKS = [(m.group("kind").split(), m.group("code")) for m in BLOCK.finditer(README)]


def test_every_code_block_is_tested() -> None:
    fences = len(re.findall(r"^```\w+$", README, re.M))
    assert fences == len(BLOCKS), "a fenced code block in README.md has no test comment"
    assert len(BLOCKS) >= 10


#: Bounds a wait for a subprocess or a reply: only a hang reaches it, not a loaded machine.
HANG = 60.0


def _ids() -> list[str]:
    return [f"{i}-{kind[0]}" for i, (kind, _) in enumerate(BLOCKS)]


def _wait_start(proc: subprocess.Popen[bytes], timeout: float = HANG) -> tuple[str, int]:
    """The address in the server's start line, read from its stderr.

    Read from the pipe itself, not through the buffered file: a ``readline`` that took
    two lines from one read would leave the start line in Python's buffer, where the
    selector cannot see it (the wait would then end only at ``timeout``).
    """
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    os.set_blocking(fd, True)
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            # Whole lines only: a read may end in the middle of the port number.
            m = START.search(seen[: seen.rfind(b"\n") + 1])
            if m:
                return m.group(1).decode(), int(m.group(2))
    proc.kill()
    proc.wait()
    raise AssertionError(f"no start line; stderr was:\n{seen.decode(errors='replace')}")


def _send(host: str, port: int) -> None:
    with smtplib.SMTP(host, port, timeout=HANG) as s:
        s.sendmail("readme@example.org", ["ann@example.com"], b"Subject: readme\r\n\r\nhi\r\n")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _serve(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize(("kind", "code"), BLOCKS, ids=_ids())
def test_readme_block(kind: list[str], code: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind[0] == "exec":
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr.decode()
    elif kind[0] == "serve":
        named = f'"port": {int(kind[1])}'
        assert named in code, f"the block does not serve on the port its comment names: {kind}"
        code = code.replace(named, '"port": 0')
        with _serve([sys.executable, "-c", code], tmp_path, env) as proc:
            host, port = _wait_start(proc)
            assert port != 0
            _send(host, port)
            assert _stop(proc) == 0
            assert b"readme@example.org" in proc.stdout.read()  # type: ignore[union-attr]
    elif kind[0] == "pytest":
        (tmp_path / "test_from_readme.py").write_text(code)
        # Installed, trio_smtp registers its plugin by entry point; from a source tree
        # (PYTHONPATH) it has none, so load it by name as the entry point would.
        installed = any(ep.name == "trio_smtp" for ep in entry_points(group="pytest11"))
        plugin = [] if installed else ["-p", "trio_smtp.testing"]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                *plugin,
                str(tmp_path / "test_from_readme.py"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert re.search(rb"\b\d+ passed", result.stdout), result.stdout.decode()
        assert b"failed" not in result.stdout
        assert b"skipped" not in result.stdout
    elif kind[0] == "cli-serve":
        argv = shlex.split(code.strip())
        assert argv[:3] == ["python", "-m", "trio_smtp"]
        argv = [sys.executable, *argv[1:], "--port", "0", "--hostname", "localhost"]
        with _serve(argv, ROOT, env) as proc:
            host, port = _wait_start(proc)
            _send(host, port)
            assert _stop(proc) == 0
    elif kind[0] == "cli-default":
        assert "python -m trio_smtp" in code
        assert "127.0.0.1:1337" in code
        # The default port, asked of the CLI itself rather than by binding 1337 here.
        helped = subprocess.run(
            [sys.executable, "-m", "trio_smtp", "--help"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        flat = " ".join(helped.stdout.split())
        assert re.search(r"--port N [^-]*\(default: 1337\)", flat), helped.stdout
        with _serve([sys.executable, "-m", "trio_smtp", "--port", "0"], tmp_path, env) as proc:
            host, port = _wait_start(proc)
            assert host == "127.0.0.1"
            _send(host, port)
            assert _stop(proc) == 0
    elif kind[0] == "ci":
        assert "nox" in code
        ci = (ROOT / ".ci" / "run").read_text()
        assert re.search(r"^nox$", ci, re.M), ".ci/run must run plain `nox`"
        noxfile = (ROOT / "noxfile.py").read_text()
        assert 'nox.options.sessions = ["tests", "lint", "typing", "docs"]' in noxfile
    else:
        pytest.fail(f"unknown README test kind {kind!r}")

"""Every code block of README.md runs, as its `<!-- test: KIND -->` comment says.

Kinds: ``exec`` (a Python block that must exit 0), ``serve PORT`` (a Python block that
serves on PORT until SIGTERM: a message is sent through it), ``pytest`` (a block of
tests that must pass), ``cli-serve`` (a command line that serves: run with ``--port 0``,
a message is sent through it), ``cli-default`` (the first README command: the server
must start on 127.0.0.1:1337) and ``ci`` (the second one: what CI runs).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import smtplib
import subprocess
import sys
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


def _ids() -> list[str]:
    return [f"{i}-{kind[0]}" for i, (kind, _) in enumerate(BLOCKS)]


def _wait_start(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[str, int]:
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), True)
    seen = b""
    import selectors
    import time

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            m = START.search(line)
            if m:
                return m.group(1).decode(), int(m.group(2))
    proc.kill()
    proc.wait()
    raise AssertionError(f"no start line; stderr was:\n{seen.decode(errors='replace')}")


def _send(host: str, port: int) -> None:
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.sendmail("readme@example.org", ["ann@example.com"], b"Subject: readme\r\n\r\nhi\r\n")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
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
        with _serve([sys.executable, "-c", code], tmp_path, env) as proc:
            host, port = _wait_start(proc)
            assert port == int(kind[1])
            _send(host, port)
            assert _stop(proc) == 0
            assert b"readme@example.org" in proc.stdout.read()  # type: ignore[union-attr]
    elif kind[0] == "pytest":
        (tmp_path / "test_from_readme.py").write_text(code)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(tmp_path / "test_from_readme.py"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert b"1 passed" in result.stdout
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
        with _serve([sys.executable, "-m", "trio_smtp"], tmp_path, env) as proc:
            host, port = _wait_start(proc)
            assert (host, port) == ("127.0.0.1", 1337)
            _send(host, port)
            assert _stop(proc) == 0
    elif kind[0] == "ci":
        assert "nox" in code
        ci = (ROOT / ".ci" / "run").read_text()
        assert re.search(r"^nox$", ci, re.M), ".ci/run must run plain `nox`"
        noxfile = (ROOT / "noxfile.py").read_text()
        assert 'nox.options.sessions = ["tests", "lint", "typing"]' in noxfile
    else:
        pytest.fail(f"unknown README test kind {kind!r}")

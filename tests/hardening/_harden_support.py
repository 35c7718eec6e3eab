"""What the hardening tests share: a real server on a loopback port, smtplib in a thread,
and the command line in a subprocess."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import attrs
import trio

from trio_smtp import Server
from trio_smtp.sinks import MemorySink

T = TypeVar("T")
#: Any single wait of a client; a test that hits it has found a hang (generous, so that a
#: loaded machine never does).
TIMEOUT = 30.0


class Lines:
    """A logger that keeps ``(level, message)`` pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[[str], None]:
        if level not in ("fatal", "error", "warn", "info", "log", "debug"):
            raise AttributeError(level)
        return lambda message: self.lines.append((level, message))

    @property
    def text(self) -> str:
        return "\n".join(m for _, m in self.lines)


@attrs.define
class Live:
    server: Server
    port: int
    logger: Lines
    sink: Any


@asynccontextmanager
async def serving(
    config: Mapping[str, Any] | None = None,
    *,
    events: Mapping[str, Any] | None = None,
    deps: Mapping[str, Any] | None = None,
) -> AsyncIterator[Live]:
    """A server on 127.0.0.1, port 0, until the block ends (then a graceful shutdown)."""
    logger = Lines()
    dependencies: dict[str, Any] = {"logger": logger, "sink": MemorySink()}
    dependencies.update(deps or {})
    cfg: dict[str, Any] = {"port": 0, "hostname": "mx.test", "shutdown_grace": 2.0}
    cfg.update(config or {})
    server = Server({"config": cfg, "events": dict(events or {})}, dependencies)
    async with trio.open_nursery() as nursery:
        (_, port), *_ = await nursery.start(server.serve)
        try:
            yield Live(server, port, logger, dependencies["sink"])
        finally:
            server.shutdown()


#: The client side's own threads: never queued behind the server's in Trio's default pool.
CLIENT_THREADS = trio.CapacityLimiter(16)


async def smtp(port: int, use: Callable[[smtplib.SMTP], T]) -> T:
    """Run ``use`` on a fresh smtplib connection to ``port``, in a thread of its own."""

    def session() -> T:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            return use(client)

    return await trio.to_thread.run_sync(session, limiter=CLIENT_THREADS)


def cli_env() -> dict[str, str]:
    """The environment for ``python -m trio_smtp``: this checkout first on the path."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop("CI_FORCE_COLOR", None)
    return env


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m trio_smtp ARGS`` to completion (for flags that must exit at once)."""
    return subprocess.run(
        [sys.executable, "-m", "trio_smtp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        check=False,
    )


_START = re.compile(r"Server start on ip: \S+ port: (\d+)")


@attrs.define
class CliServer:
    """A running ``python -m trio_smtp``: the process, its port, what it logged so far."""

    proc: subprocess.Popen[str]
    port: int
    stderr: list[str]

    @property
    def log(self) -> str:
        return "".join(self.stderr)


@contextmanager
def cli_server(*args: str, port_flag: bool = True) -> Iterator[CliServer]:
    """``python -m trio_smtp --port 0 ARGS`` running, until the block ends.

    The port is read from the start line on stderr; a thread keeps reading stderr so that
    the server never blocks on a full pipe. At the end the process gets SIGTERM (if still
    running) and is waited for.
    """
    argv = [sys.executable, "-m", "trio_smtp", "--hostname", "mx.test", *args]
    if port_flag:
        argv[3:3] = ["--port", "0"]
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
        start_new_session=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if _START.search(line):
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        started.wait(TIMEOUT * 3)
        match = next((m for m in map(_START.search, lines) if m), None)
        assert match is not None, "".join(lines)
        yield CliServer(proc, int(match.group(1)), lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=TIMEOUT * 3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()

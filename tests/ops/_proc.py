"""A ``python -m trio_smtp`` process whose stderr and stdout are read line by line."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

TIMEOUT = 60.0  # only a hang takes this long, even on a loaded machine


class Cli:
    def __init__(self, *args: str, env: Mapping[str, str] | None = None, **popen: Any) -> None:
        self.proc = subprocess.Popen(
            popen.pop("argv", [sys.executable, "-m", "trio_smtp", *args]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, **(env or {})},
            **popen,
        )
        self.err: list[str] = []
        self._ended: set[str] = set()
        self.out: list[str] = []
        self._queues: dict[str, queue.Queue[str | None]] = {
            "err": queue.Queue(),
            "out": queue.Queue(),
        }
        for stream, key in ((self.proc.stderr, "err"), (self.proc.stdout, "out")):
            threading.Thread(
                target=self._pump, args=(stream, self._queues[key]), daemon=True
            ).start()

    @staticmethod
    def _pump(stream: Any, q: queue.Queue[str | None]) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def wait_err(self, pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        q = self._queues["err"]
        while True:
            try:
                line = q.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.err}") from None
            if line is None:
                self._ended.add("err")
                raise AssertionError(f"output ended before {pattern!r}; got {self.err}")
            self.err.append(line)
            match = regex.search(line)
            if match:
                return match

    def port(self) -> int:
        return int(self.wait_err(r"Server start on ip: \S+ port: (\d+)")[1])

    def stop(self, signum: int = 15) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            self.drain()

    def drain(self) -> None:
        for key, seen in (("err", self.err), ("out", self.out)):
            while key not in self._ended:
                try:
                    line = self._queues[key].get(timeout=TIMEOUT)
                except queue.Empty:
                    break
                if line is None:
                    self._ended.add(key)
                    break
                seen.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.drain()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def cli(*args: str, **kwargs: Any) -> Iterator[Cli]:
    process = Cli(*args, **kwargs)
    try:
        yield process
    finally:
        process.kill()


@contextmanager
def socket_activated(activate: str, command: Sequence[str]) -> Iterator[tuple[Cli, int]]:
    """``systemd-socket-activate -l 127.0.0.1:PORT command...``, once it listens.

    It binds a port by number: another program may take a free one before it does, and
    it then exits at once ("Address already in use"). Another port is tried then.
    """
    for attempt in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        with cli(argv=[activate, "-l", f"127.0.0.1:{port}", *command]) as server:
            try:
                server.wait_err(r"Listening on 127\.0\.0\.1:")
            except AssertionError:
                if attempt == 2 or not any("Address already in use" in e for e in server.err):
                    raise
                continue
            yield server, port
            return

"""Memory per idle connection: trio_smtp against aiosmtpd 1.4.6 (issue 6).

Usage::

    python bench/memory_bench.py [--connections 5000] [--servers trio_smtp,aiosmtpd] [--ehlo]

For each server: start it as a subprocess, make one full session so that lazy imports and
first-use caches are paid for, read its resident set size (``VmRSS`` in
``/proc/PID/status``), open N connections and wait until every one has its ``220``
greeting (and, with ``--ehlo``, its EHLO reply), let the server settle, read ``VmRSS``
again, and report (after - before) / N in KiB.

N connections need N file descriptors here and N in the server, so the soft
``RLIMIT_NOFILE`` is raised to the hard limit first (the servers inherit it); when even the
hard limit is too low, N is lowered to fit and a message says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import attrs
from _servers import (
    BENCH_DIR,
    SERVER_SCRIPTS,
    ServerProcess,
    ServerStartError,
    start_server,
)

DEFAULT_CONNECTIONS: Final = 5000
DEFAULT_RESULTS: Final = BENCH_DIR / "results" / "memory-latest.json"
#: Connections opened before waiting for their greetings: far below both listen backlogs
#: (aiosmtpd_server.py asks for 1024), so no SYN is dropped and retried a second later.
BATCH: Final = 200
#: File descriptors kept free for the interpreter, pipes and the server's own files.
FD_HEADROOM: Final = 64
#: Seconds to let the server finish allocating after the last greeting.
SETTLE: Final = 1.0
GREETING_TIMEOUT: Final = 30.0


@attrs.frozen(kw_only=True)
class MemoryResult:
    """RSS of one server before and after N idle connections."""

    server: str
    connections: int
    rss_before_kib: int
    rss_after_kib: int
    refused: int
    open_seconds: float

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.connections

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["kib_per_connection"] = self.kib_per_connection
        return data


def raise_fd_limit(connections: int) -> int:
    """Raise the soft fd limit to the hard one; return how many connections fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft == resource.RLIM_INFINITY:
        return connections
    fit = soft - FD_HEADROOM
    if fit < connections:
        print(
            f"!! RLIMIT_NOFILE hard limit is {hard}: {connections} connections need about "
            f"{connections + FD_HEADROOM} descriptors per process; measuring {fit} instead. "
            f"Raise it (e.g. `ulimit -Hn {connections + FD_HEADROOM}` as root) for the full count.",
            file=sys.stderr,
            flush=True,
        )
        return max(fit, 1)
    return connections


def _read_reply(sock: socket.socket) -> bytes:
    """Read one complete reply (RFC 5321 §4.2.1: its last line has a space after the code)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(line) == 3 or line[3:4] == b" " for line in lines[:-1]):
            return data


def _open_idle(port: int, count: int, ehlo: bool) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections that have their greeting; return them and how many got
    something other than ``220``."""
    sockets: list[socket.socket] = []
    refused = 0
    for first in range(0, count, BATCH):
        batch = []
        for _ in range(min(BATCH, count - first)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(GREETING_TIMEOUT)
            sock.connect(("127.0.0.1", port))
            batch.append(sock)
        for sock in batch:
            greeting = _read_reply(sock)
            if not greeting.startswith(b"220"):
                refused += 1
            elif ehlo:
                sock.sendall(b"EHLO memory.bench\r\n")
                _read_reply(sock)
        sockets += batch
    return sockets, refused


def _one_session(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=GREETING_TIMEOUT) as sock:
        _read_reply(sock)
        for command in (b"EHLO memory.bench", b"MAIL FROM:<a@x>", b"RCPT TO:<b@x>", b"DATA"):
            sock.sendall(command + b"\r\n")
            _read_reply(sock)
        sock.sendall(b"Subject: warm-up\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        _read_reply(sock)


def measure(kind: str, label: str, connections: int, ehlo: bool, log_dir: Path) -> MemoryResult:
    """Measure one server; see the module docstring."""
    server: ServerProcess = start_server(
        kind,
        label=label,
        extra_args=("--max-connections", str(connections + 100)),
        log_dir=log_dir,
    )
    sockets: list[socket.socket] = []
    try:
        _one_session(server.port)
        time.sleep(SETTLE)
        before = server.rss_kib()
        started = time.monotonic()
        sockets, refused = _open_idle(server.port, connections, ehlo)
        open_seconds = time.monotonic() - started
        time.sleep(SETTLE)
        if not server.alive():
            raise RuntimeError(f"{label} exited: {server.stderr_tail(5)}")
        after = server.rss_kib()
    finally:
        for sock in sockets:
            sock.close()
        server.stop()
    return MemoryResult(
        server=label,
        connections=connections,
        rss_before_kib=before,
        rss_after_kib=after,
        refused=refused,
        open_seconds=open_seconds,
    )


def render(results: list[MemoryResult]) -> str:
    """A markdown table of the results."""
    lines = [
        "| server | idle connections | RSS before (MiB) | RSS after (MiB) | KiB per connection |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.connections} | {r.rss_before_kib / 1024:.1f} "
            f"| {r.rss_after_kib / 1024:.1f} | {r.kib_per_connection:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure each server; exit 1 if one failed to start or refused connections."""
    parser = argparse.ArgumentParser(description="RSS per idle SMTP connection.")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--servers", default="trio_smtp,aiosmtpd", help="comma-separated")
    parser.add_argument("--ehlo", action="store_true", help="also send EHLO on each connection")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    kinds = args.servers.split(",")
    if not kinds or any(kind not in SERVER_SCRIPTS for kind in kinds):
        parser.error(
            f"--servers must name some of {sorted(SERVER_SCRIPTS)!r}, not {args.servers!r}"
        )
    if args.connections < 1:
        parser.error(f"--connections must be at least 1, not {args.connections!r}")
    connections = raise_fd_limit(args.connections)
    results: list[MemoryResult] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smtp-memory-") as tmp:
        for index, kind in enumerate(kinds):
            label = kind if kind not in kinds[:index] else f"{kind}#{index + 1}"
            print(f"== {label}: {connections} idle connections", flush=True)
            try:
                result = measure(kind, label, connections, args.ehlo, Path(tmp))
            except (ServerStartError, RuntimeError, OSError) as exc:
                failures.append(f"{label}: {exc}")
                print(f"!! {label}: {exc}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            if result.refused:
                failures.append(f"{label}: {result.refused} connections got no 220 greeting")
    print()
    print(render(results))
    for failure in failures:
        print(f"FAILED {failure}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"ehlo": args.ehlo, "results": [r.as_dict() for r in results], "failures": failures}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

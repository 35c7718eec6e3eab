"""Memory: per idle connection, and under big bodies and clients that never read (issues 6, 11).

Usage::

    python bench/memory_bench.py [--connections 5000] [--servers trio_smtp,aiosmtpd] [--ehlo]
    python bench/memory_bench.py --scenario big --scenario unterminated ...

``--scenario idle`` (the default when none is given) is the idle-connection measure below.
The body scenarios (issue 11) each start fresh servers, reset the kernel's peak-RSS mark
(``echo 5 > /proc/PID/clear_refs``) after a warm-up session, run the load, and report the
server's peak RSS growth (``VmHWM`` after minus ``VmRSS`` before) and what RSS still holds:

* ``big``: one 32 MiB message, into trio_smtp's default (print) sink, ``--maildir`` and
  MemorySink, and into aiosmtpd's discard handler and Maildir handler;
* ``unterminated``: 10 connections each send 30 MiB of DATA and never the final dot
  (measured while they hold on);
* ``concurrent-maildir``: 200 connections send an 8 MiB message each at once into a Maildir;
  every stored trio_smtp file is checked byte for byte;
* ``never-reading``: 400 clients pipeline EHLOs for a while and never read a reply.

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
import shutil
import socket
import sys
import tempfile
import threading
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


MIB: Final = 1 << 20
BODY_SCENARIOS: Final = ("big", "unterminated", "concurrent-maildir", "never-reading")
#: trio_smtp sinks (``bench/trio_server.py --sink``) and aiosmtpd handlers per scenario.
VARIANTS: Final = {
    "big": [
        ("trio_smtp", "print"),
        ("trio_smtp", "maildir"),
        ("trio_smtp", "memory"),
        ("aiosmtpd", "discard"),
        ("aiosmtpd", "maildir"),
    ],
    "unterminated": [("trio_smtp", "discard"), ("aiosmtpd", "discard")],
    "concurrent-maildir": [("trio_smtp", "maildir"), ("aiosmtpd", "maildir")],
    "never-reading": [("trio_smtp", "discard"), ("aiosmtpd", "discard")],
}
#: What issue 11 asks of trio_smtp: peak growth as a fraction of the message, or in MiB.
TARGETS: Final = {
    ("big", "print"): "<= 0.25x",
    ("big", "maildir"): "<= 0.25x",
    ("big", "memory"): "<= 1.1x",
    ("unterminated", "discard"): "< 64 MiB",
    ("concurrent-maildir", "maildir"): "< 128 MiB",
    ("never-reading", "discard"): "< 64 MiB",
}
BIG_MESSAGE: Final = 32 * MIB
UNTERMINATED_CONNECTIONS: Final = 10
UNTERMINATED_BYTES: Final = 30 * MIB
CONCURRENT_CONNECTIONS: Final = 200
CONCURRENT_MESSAGE: Final = 8 * MIB
NEVER_READING_CLIENTS: Final = 400
#: Seconds the never-reading clients keep pushing commands.
NEVER_READING_SECONDS: Final = 10.0
IO_TIMEOUT: Final = 300.0


@attrs.frozen(kw_only=True)
class BodyResult:
    """Memory of one server under one body scenario."""

    scenario: str
    server: str
    variant: str
    rss_before_kib: int
    peak_kib: int
    rss_after_kib: int
    #: Bytes of message body the load sent (for the growth ratio), or 0.
    body_bytes: int
    note: str

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.rss_before_kib) / 1024

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["peak_growth_mib"] = self.growth_mib
        return data


#: RSS sampled while a scenario's clients still hold their connections, by server pid.
_HELD: dict[int, int] = {}


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM line for pid {pid!r}")


def _reset_peak(pid: int) -> None:
    # proc(5): writing 5 to clear_refs resets the peak resident set size (VmHWM).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _session_until_data(port: int, sender: bytes = b"a@x") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    _read_reply(sock)
    for command in (b"EHLO memory.bench", b"MAIL FROM:<" + sender + b">", b"RCPT TO:<b@x>"):
        sock.sendall(command + b"\r\n")
        _read_reply(sock)
    sock.sendall(b"DATA\r\n")
    reply = _read_reply(sock)
    if not reply.startswith(b"354"):
        raise RuntimeError(f"DATA got {reply!r}")
    return sock


def _body(size: int) -> bytes:
    """``size`` bytes of 80-octet CRLF lines, none starting with a dot."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"
    full, rest = divmod(size, len(line))
    return line * full + b"x" * max(rest - 2, 0) + (b"\r\n" if rest >= 2 else b"x" * rest)


def _send_message(port: int, header: bytes, body: bytes) -> bytes:
    with _session_until_data(port) as sock:
        sock.sendall(header)
        sock.sendall(body)
        sock.sendall(b".\r\n")
        reply = _read_reply(sock)
        sock.sendall(b"QUIT\r\n")
        return reply


def _big(server: ServerProcess, maildir: Path | None) -> tuple[int, str]:
    body = _body(BIG_MESSAGE - 64)
    header = b"Subject: big\r\n".ljust(62, b"x") + b"\r\n"
    reply = _send_message(server.port, header, body)
    if not reply.startswith(b"250"):
        raise RuntimeError(f"the 32 MiB message got {reply!r}")
    note = ""
    if maildir is not None and server.kind == "trio_smtp":
        note = _check_maildir(maildir, [header], body)
    return len(header) + len(body), note


def _unterminated(server: ServerProcess) -> tuple[int, str]:
    body = _body(UNTERMINATED_BYTES)
    socks = [_session_until_data(server.port) for _ in range(UNTERMINATED_CONNECTIONS)]
    threads = []
    try:
        for sock in socks:
            t = threading.Thread(target=sock.sendall, args=(body,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(IO_TIMEOUT)
        time.sleep(SETTLE)
        _HELD[server.pid] = server.rss_kib()
    finally:
        for sock in socks:
            sock.close()
    return 0, f"{UNTERMINATED_CONNECTIONS} x {UNTERMINATED_BYTES // MIB} MiB held open"


def _concurrent(server: ServerProcess, maildir: Path) -> tuple[int, str]:
    body = _body(CONCURRENT_MESSAGE - 64)
    headers = [f"Subject: n{i}\r\n".encode().ljust(62, b"x") + b"\r\n" for i in range(200)]
    replies: list[bytes] = [b""] * CONCURRENT_CONNECTIONS

    def one(i: int) -> None:
        try:
            replies[i] = _send_message(server.port, headers[i], body)
        except OSError as exc:
            replies[i] = repr(exc).encode()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENT_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT)
    ok = sum(r.startswith(b"250") for r in replies)
    note = f"{ok}/{CONCURRENT_CONNECTIONS} got 250"
    if server.kind == "trio_smtp":
        note += "; " + _check_maildir(maildir, headers[:CONCURRENT_CONNECTIONS], body)
    return CONCURRENT_CONNECTIONS * CONCURRENT_MESSAGE, note


def _check_maildir(maildir: Path, headers: list[bytes], body: bytes) -> str:
    """Check that every message is stored byte-identical (after our trace headers)."""
    wanted = set(headers)
    identical = 0
    files = sorted((maildir / "new").iterdir())
    for path in files:
        data = path.read_bytes()
        for header in wanted:
            at = data.find(header)
            if at >= 0 and data[at:] == header + body:
                identical += 1
                wanted.discard(header)
                break
    return f"{identical}/{len(headers)} stored byte-identical ({len(files)} files)"


def _never_reading(server: ServerProcess) -> tuple[int, str]:
    socks = []
    for _ in range(NEVER_READING_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
        sock.setblocking(False)
        socks.append(sock)
    burst = b"EHLO a\r\n" * 8_000  # ~150 bytes of reply for 8 bytes of command
    sent = 0
    deadline = time.monotonic() + NEVER_READING_SECONDS
    try:
        while time.monotonic() < deadline:
            progressed = False
            for sock in socks:
                try:
                    sent += sock.send(burst)
                    progressed = True
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    continue
            if not progressed:
                time.sleep(0.05)
        time.sleep(SETTLE)
        _HELD[server.pid] = server.rss_kib()
    finally:
        for sock in socks:
            sock.close()
    return 0, f"{NEVER_READING_CLIENTS} clients, {sent // MIB} MiB of EHLOs accepted"


def measure_body(scenario: str, kind: str, variant: str, log_dir: Path) -> BodyResult:
    """Run one body scenario against a fresh server; see the module docstring."""
    maildir = Path(tempfile.mkdtemp(prefix="bench-maildir-", dir=log_dir))
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir()
    extra: list[str] = ["--max-message-size", str(64 * MIB)]
    if kind == "trio_smtp":
        extra += ["--sink", variant]
    if variant == "maildir":
        extra += ["--maildir", str(maildir)]
    label = f"{kind} ({variant})"
    server = start_server(kind, label=kind, extra_args=tuple(extra), log_dir=log_dir)
    try:
        _one_session(server.port)
        time.sleep(SETTLE)
        if variant == "maildir":
            for path in (maildir / "new").iterdir():
                path.unlink()
        _reset_peak(server.pid)
        before = server.rss_kib()
        if scenario == "big":
            body_bytes, note = _big(server, maildir if variant == "maildir" else None)
        elif scenario == "unterminated":
            body_bytes, note = _unterminated(server)
        elif scenario == "concurrent-maildir":
            body_bytes, note = _concurrent(server, maildir)
        else:
            body_bytes, note = _never_reading(server)
        time.sleep(SETTLE)
        if not server.alive():
            raise RuntimeError(f"{label} exited: {server.stderr_tail(5)}")
        peak = _hwm_kib(server.pid)
        after = _HELD.pop(server.pid, None) or server.rss_kib()
    finally:
        server.stop()
        shutil.rmtree(maildir, ignore_errors=True)
    return BodyResult(
        scenario=scenario,
        server=kind,
        variant=variant,
        rss_before_kib=before,
        peak_kib=peak,
        rss_after_kib=after,
        body_bytes=body_bytes,
        note=note,
    )


def render_body(results: list[BodyResult]) -> str:
    """A markdown table of the body scenarios."""
    lines = [
        "| scenario | server | sink | RSS before (MiB) | peak growth (MiB) | x message "
        "| RSS held (MiB) | target | notes |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        ratio = f"{r.growth_mib * MIB / r.body_bytes:.2f}x" if r.scenario == "big" else ""
        target = TARGETS.get((r.scenario, r.variant), "") if r.server == "trio_smtp" else ""
        lines.append(
            f"| {r.scenario} | {r.server} | {r.variant} | {r.rss_before_kib / 1024:.1f} "
            f"| {r.growth_mib:.1f} | {ratio} | {(r.rss_after_kib - r.rss_before_kib) / 1024:.1f} "
            f"| {target} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure each server; exit 1 if one failed to start or refused connections."""
    parser = argparse.ArgumentParser(description="RSS per idle SMTP connection.")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--servers", default="trio_smtp,aiosmtpd", help="comma-separated")
    parser.add_argument("--ehlo", action="store_true", help="also send EHLO on each connection")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=("idle", "body", *BODY_SCENARIOS),
        help="repeatable; default: idle (body: every body scenario)",
    )
    args = parser.parse_args(argv)
    scenarios = args.scenario or ["idle"]
    if "body" in (args.scenario or []):
        scenarios = list(BODY_SCENARIOS)
    kinds = args.servers.split(",")
    if not kinds or any(kind not in SERVER_SCRIPTS for kind in kinds):
        parser.error(
            f"--servers must name some of {sorted(SERVER_SCRIPTS)!r}, not {args.servers!r}"
        )
    if args.connections < 1:
        parser.error(f"--connections must be at least 1, not {args.connections!r}")
    connections = raise_fd_limit(args.connections)
    results: list[MemoryResult] = []
    body_results: list[BodyResult] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smtp-memory-") as tmp:
        for scenario in scenarios:
            if scenario == "idle":
                continue
            for kind, variant in VARIANTS[scenario]:
                if kind not in kinds:
                    continue
                print(f"== {scenario}: {kind} ({variant})", flush=True)
                try:
                    body_results.append(measure_body(scenario, kind, variant, Path(tmp)))
                except (ServerStartError, RuntimeError, OSError) as exc:
                    failures.append(f"{scenario} {kind} ({variant}): {exc}")
                    print(f"!! {scenario} {kind}: {exc}", file=sys.stderr, flush=True)
                    continue
                print(render_body(body_results[-1:]).splitlines()[-1], flush=True)
        for index, kind in enumerate(kinds if "idle" in scenarios else []):
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
    if results:
        print(render(results))
    if body_results:
        print(render_body(body_results))
    for failure in failures:
        print(f"FAILED {failure}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "ehlo": args.ehlo,
        "results": [r.as_dict() for r in results],
        "body_results": [r.as_dict() for r in body_results],
        "failures": failures,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

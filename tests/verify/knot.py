"""A real authoritative DNS server for the end-to-end tests: Debian's knotd on a loopback port.

:func:`start_knot` writes a config and one zone file (origin ``test.``) into a temporary
directory, starts ``knotd`` on ``127.0.0.1:<free port>`` (no privileged port, no daemon
mode, nothing outside the directory), and waits until it answers the zone's SOA: readiness
is an answer, not a sleep.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from conftest import require_tool

#: Tries (of at most 0.2 s each) for knotd to answer before the fixture gives up.
READY_TRIES = 250


@attrs.frozen
class Knot:
    port: int
    directory: Path

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"


def txt(text: str) -> str:
    """A TXT rdata in zone-file syntax, split in 255-octet strings (RFC 1035 §3.3.14)."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _free_port() -> int:
    # Free for UDP and TCP both: knotd listens on both.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for knotd")


def _answers(port: int) -> bool:
    query = dns.message.make_query("test.", dns.rdatatype.SOA)
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (OSError, dns.exception.Timeout):
        return False
    return bool(response.answer)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _launch(knotd: str, directory: Path, port: int) -> subprocess.Popen[bytes] | None:
    """Start knotd on ``port``; ``None`` (and nothing left running) if it never answers."""
    (directory / "knot.conf").write_text(
        f"""server:
    rundir: "{directory}"
    listen: 127.0.0.1@{port}
database:
    storage: "{directory}"
log:
  - target: stderr
    any: warning
zone:
  - domain: test.
    file: "{directory}/test.zone"
    zonefile-load: whole
    journal-content: none
"""
    )
    with (directory / "knotd.log").open("ab") as log:
        proc = subprocess.Popen(
            [knotd, "-c", str(directory / "knot.conf")], stdout=log, stderr=subprocess.STDOUT
        )
    for _ in range(READY_TRIES):
        if proc.poll() is not None:
            break
        if _answers(port):
            return proc
        time.sleep(0.05)
    _stop(proc)
    return None


@contextlib.contextmanager
def start_knot(directory: Path, records: list[tuple[str, str, str]]) -> Iterator[Knot]:
    """Serve ``records`` (``(name relative to test., type, rdata)``) from a knotd."""
    knotd = require_tool("knotd")
    zone = [
        "$ORIGIN test.",
        "$TTL 60",
        "@ SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
        "@ NS ns.test.",
        "ns A 127.0.0.1",
        *(f"{name} {rdtype} {rdata}" for name, rdtype, rdata in records),
    ]
    (directory / "test.zone").write_text("\n".join(zone) + "\n")
    # The free port may be taken by someone else before knotd binds it: try another.
    for _ in range(3):
        port = _free_port()
        proc = _launch(knotd, directory, port)
        if proc is not None:
            break
    else:
        raise RuntimeError(f"knotd did not start: {(directory / 'knotd.log').read_text()}")
    try:
        yield Knot(port, directory)
    finally:
        _stop(proc)

"""The servers under test, as subprocesses: start, wait for ``READY <port>``, sample, stop.

Shared by ``server_bench.py`` and ``memory_bench.py``. Each server script prints one
``READY <port>`` line on stdout once bound and nothing else there; its stderr goes to a file
so that a chatty or crashing server can neither block on a full pipe nor lose its traceback.

``smtp-server`` is Nodemailer's, run by ``node``: its package is installed on first use with
``npm ci`` into ``bench/node/node_modules`` (git-ignored), pinned by ``bench/node``'s lock file.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Final

import attrs

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH_DIR.parent
NODE_DIR: Final = BENCH_DIR / "node"
#: Server label -> the script that runs it (``.js`` under ``node``, the rest under Python).
SERVER_SCRIPTS: Final = {
    "trio_smtp": BENCH_DIR / "trio_server.py",
    "aiosmtpd": BENCH_DIR / "aiosmtpd_server.py",
    "smtp-server": NODE_DIR / "smtp_server.js",
}
#: Seconds ``npm ci`` may take to install smtp-server.
NPM_TIMEOUT: Final = 300.0
#: Seconds a server may take from exec to ``READY`` (imports, binding, TLS setup).
START_TIMEOUT: Final = 20.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


class ServerStartError(Exception):
    """A server script exited or stayed silent instead of printing ``READY <port>``."""


@attrs.define(kw_only=True)
class ServerProcess:
    """A running server script.

    Attributes:
        label: ``trio_smtp``, ``aiosmtpd`` or ``smtp-server`` (plus ``#2`` when the same kind
            runs twice).
        kind: The key in :data:`SERVER_SCRIPTS`.
        process: The subprocess.
        port: The port it printed in its ``READY`` line.
        stderr_path: Where its stderr goes.
    """

    label: str
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds the server has used so far (from ``/proc``)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # Fields after the parenthesised command name, which may itself hold spaces;
        # utime and stime are fields 14 and 15 of proc(5), i.e. 11 and 12 after it.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_kib(self) -> int:
        """The server's resident set size in KiB (``VmRSS`` in ``/proc/PID/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS line for pid {self.pid!r}")

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines the server wrote to stderr."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, and SIGKILL it if it lingers."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_ready_line(stdout: IO[bytes], process: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        readable, _, _ = select.select([stdout], [], [], min(remaining, 0.5))
        if readable:
            # The scripts print the whole line at once and flush it.
            return stdout.readline()
        if process.poll() is not None:
            return b""


def ensure_node_modules() -> None:
    """Install ``bench/node``'s locked packages (smtp-server) unless they are there already.

    Raises:
        ServerStartError: If ``node`` or ``npm`` is missing or ``npm ci`` fails.
    """
    if (NODE_DIR / "node_modules" / "smtp-server" / "package.json").is_file():
        return
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise ServerStartError(f"smtp-server needs {tool!r} on PATH (Debian: nodejs, npm)")
    print("installing smtp-server: npm ci in bench/node", file=sys.stderr, flush=True)
    try:
        completed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(f"npm ci in {NODE_DIR} took over {NPM_TIMEOUT:.0f} s") from exc
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        raise ServerStartError(f"npm ci in {NODE_DIR} failed ({completed.returncode}):\n{tail}")


def _command(script: Path) -> list[str]:
    if script.suffix == ".js":
        ensure_node_modules()
        return ["node", str(script)]
    return [sys.executable, str(script)]


def start_server(
    kind: str,
    *,
    label: str | None = None,
    extra_args: tuple[str, ...] = (),
    log_dir: Path | None = None,
) -> ServerProcess:
    """Start the server script for ``kind`` on a free port and wait for ``READY <port>``.

    Args:
        kind: A key of :data:`SERVER_SCRIPTS`.
        label: The name to report it under (default: ``kind``).
        extra_args: More flags for the script (``--tls-cert`` ...).
        log_dir: Where to keep its stderr (default: a new temporary directory).

    Raises:
        ServerStartError: If it exits or stays silent, with the tail of its stderr.
    """
    label = label or kind
    script = SERVER_SCRIPTS[kind]
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    stderr_path = log_dir / f"{label.replace('#', '-')}.stderr"
    env = dict(os.environ)
    # Let the trio server import the checkout without installing it; an installed copy of
    # the same tree would shadow nothing that matters.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*_command(script), "--port", "0", *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO_ROOT,
            env=env,
        )
    assert process.stdout is not None
    line = _read_ready_line(process.stdout, process)
    parts = line.split()
    if len(parts) != 2 or parts[0] != b"READY" or not parts[1].isdigit():
        server = ServerProcess(
            label=label, kind=kind, process=process, port=0, stderr_path=stderr_path
        )
        server.stop(timeout=2)
        tail = server.stderr_tail()
        raise ServerStartError(
            f"{label} did not start (exit status {process.returncode!r}, "
            f"first stdout line {line!r})" + (f":\n{tail}" if tail else "")
        )
    return ServerProcess(
        label=label, kind=kind, process=process, port=int(parts[1]), stderr_path=stderr_path
    )


@attrs.frozen(kw_only=True)
class CertPair:
    """A PEM certificate chain and key for ``localhost`` / ``127.0.0.1``."""

    cert: Path
    key: Path


def make_certificate(directory: Path) -> CertPair:
    """Make a throwaway trustme CA and a server certificate in ``directory``."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert = directory / "server.pem"
    key = directory / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return CertPair(cert=cert, key=key)

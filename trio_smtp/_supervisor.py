"""The supervisor of ``--workers N``: it starts the workers, restarts them, passes signals on.

Theory of operation: the supervisor resolves the ports first (for port 0 it binds a
SO_REUSEPORT socket without listening on it, which reserves the number, since the
kernel lets only sockets with SO_REUSEPORT and the same user share it), then starts N
copies of the command line with ``--port``/``--tls-port`` fixed and a hidden
``--worker-id``. Each worker listens with SO_REUSEPORT, so the kernel spreads new
connections across them. A worker that dies is restarted (with a pause if it keeps
dying at once).

Sockets that cannot be shared that way are opened here, once, and inherited by every
worker, which all accept on them: the ``--unix`` sockets (created with ``--unix-mode``,
removed at exit by this process only), and under systemd socket activation
(``LISTEN_FDS``) the sockets systemd passed, which then replace the ports. Their
descriptors keep their numbers in the workers (``pass_fds``); :data:`LISTEN_ENV` says
which they are and what kind.

systemd's ``NOTIFY_SOCKET`` is this process's alone: workers never see it. Each worker
writes its number to the ready pipe once it listens; when every worker has, the
supervisor sends ``READY=1`` (once: a restarted worker changes nothing), and
``STOPPING=1`` on the first stop signal.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from ._listeners import Listener, close_all, open_unix
from ._logger import Logger
from ._metrics import MetricsServer, WorkerMetrics
from ._shared_limits import SharedLimits
from ._systemd import LISTEN_ENV, listen_fds, notify
from ._workers import FDS_ENV

#: A worker that dies sooner than this after starting is restarted only after a pause.
_QUICK_DEATH: Final = 1.0
_RESTART_PAUSE: Final = 1.0
#: How often the supervisor looks for dead workers (seconds).
_POLL: Final = 0.1


def _reserve(host: str, port: int) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock, sock.getsockname()[1]


def _without_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


class Supervisor:
    """Starts ``args.workers`` workers and keeps them running until told to stop.

    Args:
        args: The parsed flags.
        config: The config the flags describe (its ``host``, ``port``, ``tls_port``,
            ``unix``, ``unix_mode`` and ``systemd_sockets`` are used here).
        logger: Where the supervisor logs.
    """

    def __init__(self, args: argparse.Namespace, config: dict[str, Any], logger: Logger) -> None:
        self.args = args
        self.config = config
        self.logger = logger
        self.workers: int = args.workers
        self.reserved: list[socket.socket] = []
        #: Listening sockets opened here (or inherited from systemd), shared by all.
        self.shared: list[Listener] = []
        self.port: int | None = config["port"]
        self.tls_port: int | None = config["tls_port"]
        self.limits: SharedLimits | None = None
        self.metrics: WorkerMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.signals_seen = 0
        self.ready: set[int] = set()
        self.notified_ready = False
        self._ready_buffer = b""
        self._pipes: list[int] = []
        self._base: list[str] = []

    # ---------------------------------------------------------------- start

    def open(self, argv: Sequence[str]) -> None:
        """Take the sockets, the shared table, the pipes and the metrics server.

        Raises:
            OSError: naming what could not be opened.
        """
        self._open_sockets()
        self._base = [sys.executable, "-m", "trio_smtp", *_without_workers(argv)]
        if self.port is not None:
            self._base += ["--port", str(self.port)]
        if self.tls_port is not None:
            self._base += ["--tls-port", str(self.tls_port)]
        self.limits = SharedLimits.create(self.workers)
        # The lifeline: workers hold the read end; the write end stays here, unwritten,
        # and closes only when this process ends (however it ends).
        self.lifeline_r, self.lifeline_w = os.pipe()
        # The ready pipe: each worker writes its number there once it listens.
        self.ready_r, self.ready_w = os.pipe()
        self._pipes = [self.lifeline_r, self.lifeline_w, self.ready_r, self.ready_w]
        os.set_blocking(self.ready_r, False)
        if getattr(self.args, "metrics", None) is not None:
            self._open_metrics()

    def _open_sockets(self) -> None:
        config = self.config
        if config.get("systemd_sockets"):
            inherited = listen_fds()
            self.shared += [Listener(sock=sock, kind="systemd") for sock in inherited]
            if inherited:
                # Socket activation replaces the ports (as for a single process).
                self.port = self.tls_port = None
        for path in config.get("unix") or ():
            self.shared.append(open_unix(path, mode=config.get("unix_mode")))
        hosts: list[str] = list(config["host"])
        if self.port is not None:
            for host in hosts:
                sock, self.port = _reserve(host, self.port)
                self.reserved.append(sock)
        if self.tls_port is not None:
            for host in hosts:
                sock, self.tls_port = _reserve(host, self.tls_port)
                self.reserved.append(sock)

    def _open_metrics(self) -> None:
        # --metrics: every worker writes its numbers into one directory, served summed here.
        self.metrics = WorkerMetrics()
        self.metrics_server = MetricsServer(self.metrics.registry(), *self.args.metrics)
        self.logger.write(
            "log",
            f"Metrics on http://{self.metrics_server.host}:{self.metrics_server.port}/metrics",
            always=True,
        )

    def _where(self) -> str:
        parts = []
        if self.port is not None:
            parts.append(f"on port {self.port}")
        for listener in self.shared:
            host, port = listener.address
            shown = host if listener.unix_path is not None else f"{host}:{port}"
            parts.append(f"on {shown} ({listener.kind})")
        return ", ".join(parts)

    def spawn(self, worker: int) -> None:
        """Start worker number ``worker``."""
        assert self.limits is not None
        env = dict(os.environ)
        # Only the supervisor talks to systemd (see the module docs).
        for name in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
        env[FDS_ENV] = f"{self.limits.fd},{self.lifeline_r},{os.getpid()},{self.ready_w}"
        fds = [self.limits.fd, self.lifeline_r, self.ready_w]
        if self.shared:
            env[LISTEN_ENV] = ",".join(f"{s.sock.fileno()}:{s.kind}" for s in self.shared)
            fds += [s.sock.fileno() for s in self.shared]
        if self.metrics is not None:
            env.update(self.metrics.env())
        self.procs[worker] = subprocess.Popen(
            [*self._base, "--worker-id", str(worker)], env=env, pass_fds=fds
        )
        self.started[worker] = time.monotonic()

    # ---------------------------------------------------------------- signals

    def on_signal(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: the first drains the workers, the next stops them at once."""
        self.signals_seen += 1
        name = signal.Signals(signum).name
        # Logged once the workers have been sent their signal (tests wait for the line).
        if self.signals_seen == 1:
            notify("STOPPING=1")
            self._send(signal.SIGTERM)
            self.logger.log(f"Supervisor received {name}: stopping workers")
        else:
            self._send(signal.SIGUSR1)
            self.logger.warn(f"Supervisor received {name} again: stopping workers now")

    def on_hangup(self, _signum: int, _frame: object) -> None:
        """SIGHUP: every worker reloads."""
        self.logger.log(
            "Supervisor received SIGHUP: workers reload their certificates and auth file"
        )
        self._send(signal.SIGHUP)

    def _send(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    # ---------------------------------------------------------------- running

    def run(self) -> None:
        """Start the workers, restart those that die, until every worker has stopped."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_hangup)
        self.logger.log(
            f"Supervisor pid: {os.getpid()} starting {self.workers} workers {self._where()}"
        )
        for worker in range(1, self.workers + 1):
            self.spawn(worker)
        while self.procs:
            self._wait_ready(_POLL)
            self._reap()

    def _wait_ready(self, timeout: float) -> None:
        """Wait up to ``timeout`` for workers that listen; READY=1 once all of them do."""
        readable, _, _ = select.select([self.ready_r], [], [], timeout)
        if not readable:
            return
        try:
            self._ready_buffer += os.read(self.ready_r, 4096)
        except BlockingIOError:
            return
        *lines, self._ready_buffer = self._ready_buffer.split(b"\n")
        self.ready.update(int(line) for line in lines if line.strip().isdigit())
        if self.ready >= set(range(1, self.workers + 1)) and not self.notified_ready:
            self.notified_ready = True
            if not self.signals_seen:
                notify("READY=1")
                self.logger.log(f"Supervisor: all {self.workers} workers listening")

    def _reap(self) -> None:
        for worker, proc in list(self.procs.items()):
            status = proc.poll()
            if status is None:
                continue
            del self.procs[worker]
            assert self.limits is not None
            self.limits.clear_worker(worker)
            if self.metrics is not None:
                self.metrics.worker_exited(proc.pid)
            if self.signals_seen:
                continue
            self.logger.error(
                f"Worker {worker} (pid {proc.pid}) exited with status {status}; restarting"
            )
            if time.monotonic() - self.started[worker] < _QUICK_DEATH:
                time.sleep(_RESTART_PAUSE)
            if not self.signals_seen:
                self.spawn(worker)

    def close(self) -> None:
        """Kill what still runs; close and remove everything opened here."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for sock in self.reserved:
            sock.close()
        close_all(self.shared)  # removes the --unix socket files
        for fd in self._pipes:
            os.close(fd)
        self._pipes = []
        if self.limits is not None:
            self.limits.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.metrics is not None:
            self.metrics.close()


def run_workers(args: argparse.Namespace, config: dict[str, Any], argv: Sequence[str]) -> int:
    """Supervise ``args.workers`` server processes; returns the exit status."""
    if not hasattr(socket, "SO_REUSEPORT"):
        sys.stderr.write("trio-smtp: error: --workers needs SO_REUSEPORT, which this OS lacks\n")
        return 2
    logger = Logger(level=config["log_level"], format=getattr(args, "log_format", "text"))
    supervisor = Supervisor(args, config, logger)
    try:
        supervisor.open(argv)
    except (OSError, ValueError) as exc:
        supervisor.close()
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        sys.stderr.write(f"trio-smtp: error: {text}\n")
        return 2
    try:
        supervisor.run()
    finally:
        supervisor.close()
    logger.log("Supervisor stopped")
    return 0

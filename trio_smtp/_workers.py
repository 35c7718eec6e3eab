"""``--workers N``: a supervisor and N server processes sharing the ports.

Theory of operation: the supervisor resolves the ports first (for port 0 it binds a
SO_REUSEPORT socket without listening on it, which reserves the number, since the
kernel lets only sockets with SO_REUSEPORT and the same user share it), then starts N
copies of the command line with ``--port``/``--tls-port`` fixed and a hidden
``--worker-id``. Each worker listens with SO_REUSEPORT, so the kernel spreads new
connections across them. A worker that dies is restarted (with a pause if it keeps
dying at once). SIGTERM or SIGINT is passed on to every worker, which drain
gracefully; the supervisor waits for them and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from ._logger import Logger

#: A worker that dies sooner than this after starting is restarted only after a pause.
_QUICK_DEATH: Final = 1.0
_RESTART_PAUSE: Final = 1.0


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


def run_workers(args: argparse.Namespace, config: dict[str, Any], argv: Sequence[str]) -> int:
    """Supervise ``args.workers`` server processes; returns the exit status."""
    if not hasattr(socket, "SO_REUSEPORT"):
        sys.stderr.write("trio-smtp: error: --workers needs SO_REUSEPORT, which this OS lacks\n")
        return 2
    logger = Logger(level=config["log_level"])
    hosts: list[str] = list(config["host"])
    reserved: list[socket.socket] = []
    try:
        port = config["port"]
        tls_port = config["tls_port"]
        for host in hosts:
            sock, port = _reserve(host, port)
            reserved.append(sock)
        if tls_port is not None:
            for host in hosts:
                sock, tls_port = _reserve(host, tls_port)
                reserved.append(sock)
    except OSError as exc:
        for sock in reserved:
            sock.close()
        sys.stderr.write(f"trio-smtp: error: {exc.strerror or exc}\n")
        return 2
    base = [sys.executable, "-m", "trio_smtp", *_without_workers(argv), "--port", str(port)]
    if tls_port is not None:
        base += ["--tls-port", str(tls_port)]

    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    stopping = False

    def spawn(worker: int) -> None:
        procs[worker] = subprocess.Popen([*base, "--worker-id", str(worker)])
        started[worker] = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return  # the workers already have their SIGTERM; a second one would cut them short
        logger.log(f"Supervisor received {signal.Signals(signum).name}: stopping workers")
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.log(f"Supervisor pid: {os.getpid()} starting {args.workers} workers on port {port}")
    for worker in range(1, args.workers + 1):
        spawn(worker)
    try:
        while procs:
            time.sleep(0.1)
            for worker, proc in list(procs.items()):
                status = proc.poll()
                if status is None:
                    continue
                del procs[worker]
                if stopping:
                    continue
                logger.error(
                    f"Worker {worker} (pid {proc.pid}) exited with status {status}; restarting"
                )
                if time.monotonic() - started[worker] < _QUICK_DEATH:
                    time.sleep(_RESTART_PAUSE)
                if not stopping:
                    spawn(worker)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for sock in reserved:
            sock.close()
    logger.log("Supervisor stopped")
    return 0

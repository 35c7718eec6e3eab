"""``--workers N``: a supervisor and N server processes sharing the ports and the limits.

Theory of operation: the supervisor resolves the ports first (for port 0 it binds a
SO_REUSEPORT socket without listening on it, which reserves the number, since the
kernel lets only sockets with SO_REUSEPORT and the same user share it), then starts N
copies of the command line with ``--port``/``--tls-port`` fixed and a hidden
``--worker-id``. Each worker listens with SO_REUSEPORT, so the kernel spreads new
connections across them. A worker that dies is restarted (with a pause if it keeps
dying at once).

Limits hold for the whole server, not per process: the supervisor creates a small
shared table (:class:`SharedLimits`, an ``mmap`` of an unlinked file, locked with
``lockf``) and hands it to every worker. It counts open connections (in total, and per
client address) and failed AUTHs per client address, for all workers at once. Each
worker counts its connections in a column of its own, which the supervisor zeroes when
it restarts a worker that died, so a crash leaks no counts. Addresses are hashed
(keyed BLAKE2b, a new key per start) into two buckets each, and an address's count is
the smaller of its two buckets' (a count-min sketch): the count is never too low, and
is too high only if another address shares both buckets, which the key makes
impossible to arrange on purpose.

Signals: Ctrl-C, and systemd's default ``KillMode=control-group``, deliver the signal
to every process at once, and the supervisor passes one on too. So a worker ignores
SIGINT (the terminal's) and drains gracefully on its first SIGTERM; a repeated SIGTERM
changes nothing. Only the supervisor decides "stop now": on a second signal it sends
the workers SIGUSR1, on which they cancel their connections (421) at once.

Orphans: a worker exits when its supervisor dies, however it dies. On Linux the kernel
sends it SIGTERM (``prctl(PR_SET_PDEATHSIG)``); everywhere, it also watches a pipe whose
write end only the supervisor holds, which reads as end-of-file once the supervisor is
gone. Either way the worker drains gracefully and frees the port.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import hashlib
import ipaddress
import math
import mmap
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from ._auth_guard import AUTH_FAILURE_WINDOW
from ._logger import Logger
from ._metrics import MetricsServer, WorkerMetrics

if TYPE_CHECKING:
    from ._server import Server

#: A worker that dies sooner than this after starting is restarted only after a pause.
_QUICK_DEATH: Final = 1.0
_RESTART_PAUSE: Final = 1.0
#: Buckets of the shared per-address tables (two per address; see the module docs).
SHARED_BUCKETS: Final = 16384
#: How the supervisor tells a worker where the shared table and the lifeline are.
_FDS_ENV: Final = "TRIO_SMTP_WORKER_FDS"
#: Linux <sys/prctl.h>.
_PR_SET_PDEATHSIG: Final = 1

_HEADER: Final = struct.Struct("<8sIII16s")
_MAGIC: Final = b"trsmtp01"


def _bucket_pair(key: bytes, ip: str, buckets: int) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        name = addr.packed
    except ValueError:
        name = ip.encode("utf-8", "replace")
    digest = hashlib.blake2b(name, key=key, digest_size=8).digest()
    first, second = struct.unpack("<II", digest)
    first, second = first % buckets, second % buckets
    if second == first:
        second = (second + 1) % buckets
    return first, second


class SharedLimits:
    """Connection and AUTH-failure counts shared by the processes of ``--workers``.

    Layout of the shared memory: a header (magic, buckets, workers, key), then for
    each worker a ``uint32`` total of its connections and a ``uint32`` count per
    bucket, then per bucket a ``float64`` AUTH-failure level and the ``float64``
    (``time.monotonic``) moment of that level.

    Args:
        fd: A file descriptor of the shared file (made by :meth:`create`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # pread: the workers share the file's offset, which must not matter.
        try:
            header = os.pread(fd, _HEADER.size, 0)
        except OSError:
            header = b""
        if len(header) != _HEADER.size:
            raise ValueError(f"file descriptor {fd!r} is not a shared limits table")
        magic, _version, buckets, workers, key = _HEADER.unpack(header)
        if magic != _MAGIC:
            raise ValueError(f"file descriptor {fd!r} is not a shared limits table")
        self.buckets: int = buckets
        self.workers: int = workers
        self._key: bytes = key
        self._map = mmap.mmap(fd, self._size(buckets, workers))
        conn_start = 64
        conn_len = workers * (1 + buckets) * 4
        auth_start = conn_start + conn_len + (-conn_len % 8)
        self._conns = memoryview(self._map)[conn_start : conn_start + conn_len].cast("I")
        self._auth = memoryview(self._map)[auth_start : auth_start + buckets * 16].cast("d")

    @staticmethod
    def _size(buckets: int, workers: int) -> int:
        conn_len = workers * (1 + buckets) * 4
        return 64 + conn_len + (-conn_len % 8) + buckets * 16

    @classmethod
    def create(cls, workers: int, *, buckets: int = SHARED_BUCKETS) -> SharedLimits:
        """A new, zeroed table for ``workers`` workers, in an unlinked file."""
        fd, path = tempfile.mkstemp(prefix="trio-smtp-limits-")
        os.unlink(path)
        os.ftruncate(fd, cls._size(buckets, workers))
        os.pwrite(fd, _HEADER.pack(_MAGIC, 1, buckets, workers, secrets.token_bytes(16)), 0)
        return cls(fd)

    def __repr__(self) -> str:
        return f"<SharedLimits fd={self.fd} workers={self.workers} buckets={self.buckets}>"

    def close(self) -> None:
        """Let go of the mapping and the file descriptor."""
        self._conns.release()
        self._auth.release()
        self._map.close()
        os.close(self.fd)

    # -------------------------------------------------------------- locking

    def _lock(self) -> None:
        # POSIX record locks belong to the process: they exclude the other workers.
        # Held for a few microseconds; only the event loop's thread takes it.
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -------------------------------------------------------------- connections

    def _column(self, worker: int) -> int:
        if not 1 <= worker <= self.workers:
            raise ValueError(f"worker must be from 1 to {self.workers}, not {worker!r}")
        return (worker - 1) * (1 + self.buckets)

    def connections(self) -> int:
        """Open connections across all workers."""
        step = 1 + self.buckets
        return sum(self._conns[w * step] for w in range(self.workers))

    def connections_from(self, ip: str) -> int:
        """Open connections from ``ip`` across all workers (never an undercount)."""
        first, second = _bucket_pair(self._key, ip, self.buckets)
        step = 1 + self.buckets
        return min(
            sum(self._conns[w * step + 1 + b] for w in range(self.workers)) for b in (first, second)
        )

    def admit(self, worker: int, ip: str, *, max_total: int, max_per_ip: int) -> bool:
        """Count a connection from ``ip`` on ``worker`` if both limits allow it."""
        column = self._column(worker)
        first, second = _bucket_pair(self._key, ip, self.buckets)
        self._lock()
        try:
            if self.connections() >= max_total or self.connections_from(ip) >= max_per_ip:
                return False
            self._conns[column] += 1
            self._conns[column + 1 + first] += 1
            self._conns[column + 1 + second] += 1
            return True
        finally:
            self._unlock()

    def release(self, worker: int, ip: str) -> None:
        """Forget one connection from ``ip`` that :meth:`admit` counted on ``worker``."""
        column = self._column(worker)
        first, second = _bucket_pair(self._key, ip, self.buckets)
        self._lock()
        try:
            for index in (column, column + 1 + first, column + 1 + second):
                if self._conns[index] > 0:
                    self._conns[index] -= 1
        finally:
            self._unlock()

    def clear_worker(self, worker: int) -> None:
        """Zero a dead worker's counts (its connections died with it)."""
        column = self._column(worker)
        self._lock()
        try:
            for index in range(column, column + 1 + self.buckets):
                self._conns[index] = 0
        finally:
            self._unlock()

    # -------------------------------------------------------------- AUTH failures

    def _drained(self, bucket: int, now: float, rate: float) -> float:
        level, then = self._auth[2 * bucket], self._auth[2 * bucket + 1]
        return max(0.0, level - max(0.0, now - then) * rate)

    def auth_failures(self, ip: str, *, max_failures: int, window: float) -> float:
        """The leaky-bucket failure level of ``ip`` now (see :mod:`._auth_guard`)."""
        rate = max_failures / window
        now = time.monotonic()
        return min(self._drained(b, now, rate) for b in _bucket_pair(self._key, ip, self.buckets))

    def record_auth_failure(self, ip: str, *, max_failures: int, window: float) -> float:
        """Add one failure for ``ip``; returns its new level."""
        rate = max_failures / window
        now = time.monotonic()
        pair = _bucket_pair(self._key, ip, self.buckets)
        self._lock()
        try:
            levels = []
            for bucket in pair:
                level = self._drained(bucket, now, rate) + 1.0
                self._auth[2 * bucket], self._auth[2 * bucket + 1] = level, now
                levels.append(level)
            return min(levels)
        finally:
            self._unlock()


class SharedAddressLimiter:
    """The :class:`~trio_smtp._limits.AddressLimiter` of a worker: limits for all workers.

    ``admit`` refuses when the whole server has ``max_connections`` open, or the
    address has ``max_connections_per_ip`` open on any of the workers together.
    """

    def __init__(
        self, limits: SharedLimits, worker: int, *, max_total: int, max_per_ip: int
    ) -> None:
        self._limits = limits
        self.worker = worker
        self.max_total = max_total
        self.max_per_ip = max_per_ip

    def __repr__(self) -> str:
        return f"<SharedAddressLimiter worker={self.worker} {self.max_per_ip} per address>"

    def admit(self, ip: str) -> bool:
        return self._limits.admit(
            self.worker, ip, max_total=self.max_total, max_per_ip=self.max_per_ip
        )

    def release(self, ip: str) -> None:
        self._limits.release(self.worker, ip)


class SharedFailureBudget:
    """The :class:`~trio_smtp._auth_guard.FailureBudget` of a worker, shared by all."""

    def __init__(self, limits: SharedLimits, max_failures: int, *, window: float) -> None:
        self._limits = limits
        self.max_failures = max_failures
        self.window = window

    def __repr__(self) -> str:
        return f"<SharedFailureBudget {self.max_failures} per {self.window:g} s>"

    def exhausted(self, ip: str) -> bool:
        level = self._limits.auth_failures(ip, max_failures=self.max_failures, window=self.window)
        return level > self.max_failures - 1 + 1e-9

    def record_failure(self, ip: str) -> int:
        level = self._limits.record_auth_failure(
            ip, max_failures=self.max_failures, window=self.window
        )
        return math.ceil(level - 1e-9)


# ---------------------------------------------------------------------- the supervisor


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
    logger = Logger(level=config["log_level"], format=getattr(args, "log_format", "text"))
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

    limits = SharedLimits.create(args.workers)
    # --metrics: every worker writes its numbers into one directory, served summed here.
    metrics = metrics_server = None
    if getattr(args, "metrics", None) is not None:
        metrics = WorkerMetrics()
        try:
            metrics_server = MetricsServer(metrics.registry(), *args.metrics)
        except OSError as exc:
            metrics.close()
            sys.stderr.write(f"trio-smtp: error: {exc.strerror or exc}\n")
            return 2
        logger.write(
            "log",
            f"Metrics on http://{metrics_server.host}:{metrics_server.port}/metrics",
            always=True,
        )
    # The lifeline: workers hold the read end; the write end stays here, unwritten,
    # and closes only when this process ends (however it ends).
    lifeline_r, lifeline_w = os.pipe()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    signals_seen = 0

    def spawn(worker: int) -> None:
        env = dict(os.environ)
        env[_FDS_ENV] = f"{limits.fd},{lifeline_r},{os.getpid()}"
        if metrics is not None:
            env.update(metrics.env())
        procs[worker] = subprocess.Popen(
            [*base, "--worker-id", str(worker)],
            env=env,
            pass_fds=(limits.fd, lifeline_r),
        )
        started[worker] = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            logger.log(f"Supervisor received {name}: stopping workers")
            forward = signal.SIGTERM
        else:
            logger.warn(f"Supervisor received {name} again: stopping workers now")
            forward = signal.SIGUSR1
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(forward)

    def on_hangup(_signum: int, _frame: object) -> None:
        logger.log("Supervisor received SIGHUP: workers reload their certificates and auth file")
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
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
                limits.clear_worker(worker)
                if metrics is not None:
                    metrics.worker_exited(proc.pid)
                if signals_seen:
                    continue
                logger.error(
                    f"Worker {worker} (pid {proc.pid}) exited with status {status}; restarting"
                )
                if time.monotonic() - started[worker] < _QUICK_DEATH:
                    time.sleep(_RESTART_PAUSE)
                if not signals_seen:
                    spawn(worker)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for sock in reserved:
            sock.close()
        os.close(lifeline_r)
        os.close(lifeline_w)
        limits.close()
        if metrics_server is not None:
            metrics_server.close()
        if metrics is not None:
            metrics.close()
    logger.log("Supervisor stopped")
    return 0


# ---------------------------------------------------------------------- a worker


def _die_with_parent(supervisor: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc_name = ctypes.util.find_library("c")
        if libc_name is not None:
            try:
                libc = ctypes.CDLL(libc_name, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            except (OSError, AttributeError):
                pass  # the lifeline pipe still covers it
    if os.getppid() != supervisor:
        # The supervisor died before the request was in place.
        os.kill(os.getpid(), signal.SIGTERM)


def _shared_from_environment(server: Server, worker: int) -> tuple[SharedLimits | None, int | None]:
    """Attach to what the supervisor shares, if it does (``_FDS_ENV``)."""
    value = os.environ.pop(_FDS_ENV, None)  # not inherited by what hooks start
    if not value:
        return None, None
    shared_fd, lifeline, supervisor = (int(part) for part in value.split(","))
    _die_with_parent(supervisor)
    limits = SharedLimits(shared_fd)
    config = server.config
    server.address_limiter = SharedAddressLimiter(
        limits,
        worker,
        max_total=config.max_connections,
        max_per_ip=config.max_connections_per_ip,
    )
    server.auth_guard.budget = SharedFailureBudget(
        limits, config.max_auth_failures_per_ip, window=AUTH_FAILURE_WINDOW
    )
    return limits, lifeline


def run_worker(server: Server, worker: int) -> int:
    """Serve as worker ``worker`` of a supervisor until told to stop; returns the status."""
    # The terminal's Ctrl-C reaches every process of the group: only the supervisor's
    # SIGTERM counts here (see the module docs).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limits, lifeline = _shared_from_environment(server, worker)
    try:
        trio.run(_serve_worker, server, lifeline)
    finally:
        if limits is not None:
            limits.close()
    return 0


async def _serve_worker(server: Server, lifeline: int | None) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, server, nursery.cancel_scope)
        if lifeline is not None:
            nursery.start_soon(_watch_lifeline, server, lifeline)
        await server.serve()
        nursery.cancel_scope.cancel()


async def _watch_signals(
    server: Server,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    draining = False
    from ._reload import reload

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP) as signals:
        task_status.started()  # before the start line: see Server.run
        async for signum in signals:
            if signum == signal.SIGHUP:
                await reload(server)
            elif signum == signal.SIGUSR1:
                server.logger.warn("Received SIGUSR1 from the supervisor: stopping now")
                scope.cancel()
            elif draining:
                # The same stop request by another path (the process group's SIGTERM
                # and the supervisor's): already draining, nothing to change.
                server.logger.log("Received SIGTERM again: already draining")
            else:
                draining = True
                server.logger.log("Received SIGTERM")
                server.shutdown()


async def _watch_lifeline(server: Server, fd: int) -> None:
    # Nothing is ever written: readable means end-of-file, the supervisor is gone.
    await trio.lowlevel.wait_readable(fd)
    server.logger.warn("Supervisor is gone: stopping")
    server.shutdown()

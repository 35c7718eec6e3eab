"""The table that the processes of ``--workers`` share: limits for the whole server.

Theory of operation: limits hold for the whole server, not per process. The supervisor
creates a small shared table (:class:`SharedLimits`, an ``mmap`` of an unlinked file,
locked with ``lockf``) and hands it to every worker. It counts open connections (in
total, and per client address) and failed AUTHs per client address, for all workers at
once. Each worker counts its connections in a column of its own, which the supervisor
zeroes when it restarts a worker that died, so a crash leaks no counts. Addresses are
hashed (keyed BLAKE2b, a new key per start) into two buckets each, and an address's
count is the smaller of its two buckets' (a count-min sketch): the count is never too
low, and is too high only if another address shares both buckets, which the key makes
impossible to arrange on purpose.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import math
import mmap
import os
import secrets
import struct
import tempfile
import time
from typing import Final

#: Buckets of the shared per-address tables (two per address; see the module docs).
SHARED_BUCKETS: Final = 16384

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

    def admit(self, worker: int, ip: str, *, max_total: int, max_per_ip: int) -> str | None:
        """Count a connection from ``ip`` on ``worker`` if both limits allow it.

        Returns:
            ``None`` when counted, else the limit reached: ``"max_connections"`` (the
            whole server) or ``"max_connections_per_ip"``.
        """
        column = self._column(worker)
        first, second = _bucket_pair(self._key, ip, self.buckets)
        self._lock()
        try:
            if self.connections() >= max_total:
                return "max_connections"
            if self.connections_from(ip) >= max_per_ip:
                return "max_connections_per_ip"
            self._conns[column] += 1
            self._conns[column + 1 + first] += 1
            self._conns[column + 1 + second] += 1
            return None
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
    address has ``max_connections_per_ip`` open on any of the workers together;
    :attr:`refused_for` then names the limit reached (for the reply and the metrics).
    """

    def __init__(
        self, limits: SharedLimits, worker: int, *, max_total: int, max_per_ip: int
    ) -> None:
        self._limits = limits
        self.worker = worker
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        #: The limit the last refused :meth:`admit` reached (``"max_connections"`` or
        #: ``"max_connections_per_ip"``); read right after ``admit`` returns ``False``.
        self.refused_for = "max_connections_per_ip"

    def __repr__(self) -> str:
        return f"<SharedAddressLimiter worker={self.worker} {self.max_per_ip} per address>"

    def admit(self, ip: str) -> bool:
        refused = self._limits.admit(
            self.worker, ip, max_total=self.max_total, max_per_ip=self.max_per_ip
        )
        if refused is None:
            return True
        self.refused_for = refused
        return False

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

"""How many connections one client address may hold: the limiter a connection is given.

The connection task asks :meth:`AddressLimiter.admit` once it knows the client's
real address (after a PROXY header) and calls :meth:`AddressLimiter.release` exactly
once when it ends, if and only if it was admitted. Any object with these two
methods can replace :class:`PerAddressLimit` (e.g. one whose counts are shared by
the processes of ``--workers``).
"""

from __future__ import annotations

import collections
from typing import Protocol


class AddressLimiter(Protocol):
    """Admits or refuses a new connection from an address."""

    def admit(self, ip: str) -> bool:
        """Count one more connection from ``ip``; ``False`` (and no count) when full."""
        ...

    def release(self, ip: str) -> None:
        """Forget one connection from ``ip`` that :meth:`admit` counted."""
        ...


class PerAddressLimit:
    """At most ``limit`` connections per address, counted in this process.

    Args:
        limit: ``max_connections_per_ip``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Open connections by address (addresses with none are removed).
        self.counts: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<PerAddressLimit {self.limit} per address, {len(self.counts)} addresses>"

    def admit(self, ip: str) -> bool:
        if self.counts[ip] >= self.limit:
            return False
        self.counts[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.counts[ip] -= 1
        if self.counts[ip] <= 0:
            del self.counts[ip]

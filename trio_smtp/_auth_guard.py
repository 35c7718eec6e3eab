"""Password guessing: a failure budget per client address, delays, and a thread limiter.

Theory of operation: three independent brakes on an attacker who guesses passwords.

* **Per-address budget** (:class:`FailureBudget`): every failed AUTH from an address
  adds one to a leaky bucket that drains at ``max_failures`` per ``window`` seconds.
  While the bucket is full, AUTH from that address gets ``454 4.7.0`` at once,
  without checking the password (so guessing costs the server nothing), across
  connections and, with :mod:`trio_smtp._shared_limits`' table, across processes.
  A success does not empty the bucket: one valid account must not buy an attacker
  more guesses against the others. (Dovecot's auth penalty and Postfix's anvil
  ``smtpd_client_auth_rate_limit`` work per address the same way.)
* **Delay** after each failure, growing with the address's failure count
  (``failure_delay * n`` seconds, at most ``max_failure_delay``), before the 535 goes
  out, like Dovecot's ``auth_failure_delay`` and Postfix's ``smtpd_error_sleep_time``.
  It is a :func:`trio.sleep`: it holds the attacker's connection, not a thread.
* **Own thread limiter**: password hashing (PBKDF2, scrypt) is CPU work run in
  worker threads. Under :class:`trio.CapacityLimiter` of its own (``threads`` at
  once), a flood of guesses queues behind itself instead of filling Trio's default
  thread pool, which sinks (Maildir's fsync) and sync hooks need.

Everything here reads the clock through ``clock`` (``trio.current_time`` by default)
so that tests drive it with the autojump clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Protocol

import trio

from .engine import Reply

#: Failed AUTHs allowed per client address per window, then 454 without checking.
DEFAULT_MAX_AUTH_FAILURES_PER_IP: Final = 10
#: The window of that budget, in seconds.
AUTH_FAILURE_WINDOW: Final = 60.0
#: Seconds of delay before a 535, times the address's failure count.
DEFAULT_AUTH_FAILURE_DELAY: Final = 1.0
#: The longest such delay.
MAX_AUTH_FAILURE_DELAY: Final = 5.0
#: Password checks running at once (each may be 0.1 to 0.5 s of CPU).
DEFAULT_AUTH_THREADS: Final = 2
#: Addresses tracked by the in-process budget; past it, the emptiest are forgotten.
MAX_TRACKED_ADDRESSES: Final = 65536

#: RFC 4954 §6: 454 4.7.0 "Temporary authentication failure".
TOO_MANY_AUTH_FAILURES: Final = Reply(
    454, "4.7.0 too many failed authentication attempts from your address; try again later"
)
#: RFC 4954 §6 and RFC 4616 §2: an authzid the server does not allow for this authcid.
AUTHZID_REFUSED: Final = Reply(535, "5.7.8 authorization identity not permitted")


class FailureBudget(Protocol):
    """Counts failed AUTHs per client address (one process, or shared by workers)."""

    def exhausted(self, ip: str) -> bool:
        """Whether ``ip`` has no failures left: its next AUTH gets 454 unchecked."""
        ...

    def record_failure(self, ip: str) -> int:
        """Count one failure for ``ip``; returns how many it now has in the window."""
        ...


class LocalFailureBudget:
    """A :class:`FailureBudget` in this process's memory: one leaky bucket per address.

    Args:
        max_failures: Failures allowed per ``window``.
        window: Seconds in which the bucket drains ``max_failures`` failures.
        clock: Where the time comes from (``trio.current_time`` by default).
        max_addresses: Memory bound: how many addresses are tracked at once.
    """

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_AUTH_FAILURES_PER_IP,
        *,
        window: float = AUTH_FAILURE_WINDOW,
        clock: Callable[[], float] = trio.current_time,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._rate = max_failures / window
        self._clock = clock
        self._max_addresses = max_addresses
        #: ip -> (bucket level, time of the level)
        self._buckets: dict[str, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return (
            f"<LocalFailureBudget {self.max_failures} per {self.window:g} s, "
            f"{len(self._buckets)} addresses>"
        )

    def _level(self, ip: str, now: float) -> float:
        level, then = self._buckets.get(ip, (0.0, now))
        return max(0.0, level - (now - then) * self._rate)

    def exhausted(self, ip: str) -> bool:
        # A small epsilon: the level drains continuously, a failure adds exactly 1.
        return self._level(ip, self._clock()) > self.max_failures - 1 + 1e-9

    def record_failure(self, ip: str) -> int:
        now = self._clock()
        level = self._level(ip, now) + 1.0
        self._buckets.pop(ip, None)  # re-inserted last: dict order is recency
        self._buckets[ip] = (level, now)
        if len(self._buckets) > self._max_addresses:
            self._prune(now)
        return math.ceil(level - 1e-9)

    def _prune(self, now: float) -> None:
        for ip in [ip for ip in self._buckets if self._level(ip, now) == 0.0]:
            del self._buckets[ip]
        while len(self._buckets) > self._max_addresses:
            del self._buckets[next(iter(self._buckets))]  # the least recently failed


class AuthGuard:
    """The brakes on password guessing that the connection task applies around AUTH.

    Args:
        budget: The per-address failure budget.
        threads: Password checks that may run at once.
        failure_delay: Seconds of delay per failure the address has (0 disables).
        max_failure_delay: The longest delay.
    """

    def __init__(
        self,
        budget: FailureBudget,
        *,
        threads: int = DEFAULT_AUTH_THREADS,
        failure_delay: float = DEFAULT_AUTH_FAILURE_DELAY,
        max_failure_delay: float = MAX_AUTH_FAILURE_DELAY,
    ) -> None:
        self.budget = budget
        self.limiter = trio.CapacityLimiter(threads)
        self.failure_delay = failure_delay
        self.max_failure_delay = max_failure_delay

    def __repr__(self) -> str:
        return f"<AuthGuard {self.budget!r} threads={self.limiter.total_tokens}>"

    def blocked(self, ip: str) -> bool:
        """Whether AUTH from ``ip`` must get :data:`TOO_MANY_AUTH_FAILURES` unchecked."""
        return self.budget.exhausted(ip)

    def delay_for(self, failures: int) -> float:
        """The delay before the reply to an address's ``failures``-th failure."""
        return min(self.failure_delay * failures, self.max_failure_delay)

    async def verify(
        self,
        authenticator: Callable[[str, str, str], bool],
        mechanism: str,
        login: str,
        password: str,
    ) -> bool:
        """Run a blocking authenticator in a thread under this guard's own limiter.

        .. warning:: Cancelling abandons the thread (it finishes in the background and
           its result is dropped); its limiter token is held until it does.
        """
        return bool(
            await trio.to_thread.run_sync(
                authenticator,
                mechanism,
                login,
                password,
                limiter=self.limiter,
                abandon_on_cancel=True,
            )
        )

    async def failed(self, ip: str) -> int:
        """Count a failure for ``ip``, then wait the delay it has earned.

        Returns:
            The address's failure count in the window.
        """
        failures = self.budget.record_failure(ip)
        delay = self.delay_for(failures)
        if delay > 0:
            await trio.sleep(delay)
        return failures

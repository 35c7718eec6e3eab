"""The table that ``--workers`` processes share: limits for the whole server.

The processes themselves are driven in ``tests/cli/test_workers.py``; here two views of
one table stand for two workers, so that each rule is checked exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from trio_smtp._shared_limits import (
    SharedAddressLimiter,
    SharedFailureBudget,
    SharedLimits,
)


@pytest.fixture
def tables() -> Iterator[tuple[SharedLimits, SharedLimits]]:
    first = SharedLimits.create(2)
    second = SharedLimits(os.dup(first.fd))  # what the second worker attaches to
    try:
        yield first, second
    finally:
        second.close()
        first.close()


def test_per_address_limit_counts_every_worker(tables: tuple[SharedLimits, SharedLimits]) -> None:
    one = SharedAddressLimiter(tables[0], 1, max_total=100, max_per_ip=2)
    two = SharedAddressLimiter(tables[1], 2, max_total=100, max_per_ip=2)
    assert one.admit("192.0.2.1")
    assert two.admit("192.0.2.1")
    assert not one.admit("192.0.2.1")
    assert not two.admit("192.0.2.1")
    assert two.admit("192.0.2.2")  # another address has its own count
    one.release("192.0.2.1")
    assert two.admit("192.0.2.1")
    assert tables[0].connections_from("192.0.2.1") == 2
    # The same address written as an IPv4-mapped IPv6 address is the same client.
    assert not one.admit("::ffff:192.0.2.1")


def test_total_limit_counts_every_worker(tables: tuple[SharedLimits, SharedLimits]) -> None:
    one = SharedAddressLimiter(tables[0], 1, max_total=3, max_per_ip=10)
    two = SharedAddressLimiter(tables[1], 2, max_total=3, max_per_ip=10)
    assert [one.admit(f"198.51.100.{i}") for i in range(2)] == [True, True]
    assert two.admit("198.51.100.9")
    assert not two.admit("198.51.100.10")
    assert tables[1].connections() == 3


def test_a_dead_workers_counts_are_cleared(tables: tuple[SharedLimits, SharedLimits]) -> None:
    one = SharedAddressLimiter(tables[0], 1, max_total=100, max_per_ip=1)
    two = SharedAddressLimiter(tables[1], 2, max_total=100, max_per_ip=1)
    assert one.admit("203.0.113.5")
    assert not two.admit("203.0.113.5")
    tables[0].clear_worker(1)  # the supervisor, when worker 1 died
    assert two.admit("203.0.113.5")


def test_auth_failure_budget_is_shared(tables: tuple[SharedLimits, SharedLimits]) -> None:
    one = SharedFailureBudget(tables[0], 3, window=3600.0)
    two = SharedFailureBudget(tables[1], 3, window=3600.0)
    assert one.record_failure("192.0.2.7") == 1
    assert two.record_failure("192.0.2.7") == 2
    assert not one.exhausted("192.0.2.7")
    assert one.record_failure("192.0.2.7") == 3
    assert two.exhausted("192.0.2.7")
    assert not two.exhausted("192.0.2.8")


def test_a_file_that_is_not_a_table_is_refused() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a shared limits table"):
            SharedLimits(read)
    finally:
        os.close(read)
        os.close(write)

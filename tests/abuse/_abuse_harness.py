"""What every attack test needs: a live server, raw attackers and ordinary clients.

Theory of operation: the server runs in the test's own Trio loop on a real socket
(port 0). Attackers are raw Trio streams in that same loop, so hundreds of them cost
a task each, not a thread. Ordinary clients are :mod:`smtplib` in worker threads,
exactly what a real sender would be, and :class:`Traffic` keeps some of them sending
for the whole attack so each test can check they all got through.

The clocks here are real: the server reads real sockets, where an autojump clock
would fire timeouts while bytes are still in flight. No test here measures how long
anything took (the suite must pass on a loaded 2-core machine): they check counts,
log lines and the order of events instead, and real time only bounds a hang.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import smtplib
from collections.abc import AsyncIterator, Callable, Mapping
from email.message import EmailMessage
from typing import Any, Final

import attrs
import pytest
import trio

from trio_smtp.testing import RecordingLogger, SMTPTestServer, serving

#: How long any single wait in these tests may take before the test is declared hung:
#: generous, so that only a hang reaches it, never a loaded machine.
HANG: Final = 60.0
#: Log fragments that must never appear: a bug escaped to the connection boundary.
FORBIDDEN_LOG: Final = ("internal error", "Traceback")


@contextlib.asynccontextmanager
async def running_server(
    config: Mapping[str, Any] | None = None,
    *,
    events: Mapping[str, Any] | None = None,
    sink: Any = None,
    data: Callable[[], Any] | None = None,
    internal_errors: bool = False,
) -> AsyncIterator[SMTPTestServer]:
    """:func:`trio_smtp.testing.serving` with limits no attack here reaches by accident.

    Limits default to values no attack reaches by accident (many connections from one
    address), so each test sets exactly the limit it attacks. Debug lines (one per
    refused command) are only counted, so 10,000 bad commands do not fill the test's
    memory. On exit the log is checked for escaped internal errors (unless
    ``internal_errors`` says the test provokes them on purpose).
    """
    logger = RecordingLogger(keep_debug=False)
    deps: dict[str, Any] = {"logger": logger}
    if sink is not None:
        deps["sink"] = sink
    schema: dict[str, Any] = {"events": dict(events or {}), "data": data}
    cfg = {
        "hostname": "mx.test",
        "max_connections": 5000,
        "max_connections_per_ip": 5000,
        **(config or {}),
    }
    # faults=False: attacks go through the server's own paths, not hook wrappers.
    async with serving(schema, deps, faults=False, **cfg) as srv:
        yield srv
    for fragment in FORBIDDEN_LOG if not internal_errors else ():
        # A hook that raised is logged with its traceback on purpose (issue 12): that
        # is the hook's failure, not the server's.
        found = [m for m in logger.matching(fragment) if "Hook '" not in str(m)]
        assert not found, found


# ---------------------------------------------------------------------- ordinary clients


def make_message(subject: str, body: str = "Hello.\n") -> bytes:
    """A small well-formed message."""
    msg = EmailMessage()
    msg["From"] = "ann@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes()


def send_mail(
    port: int,
    *,
    subject: str = "ordinary",
    source: str | None = None,
    rcpts: tuple[str, ...] = ("bob@example.net",),
    timeout: float = HANG,
) -> None:
    """Send one message with smtplib (blocking), asserting every recipient was accepted."""
    source_address = (source, 0) if source is not None else None
    with smtplib.SMTP(
        "127.0.0.1",
        port,
        local_hostname="ordinary.test",
        timeout=timeout,
        source_address=source_address,
    ) as smtp:
        refused = smtp.sendmail("ann@example.org", list(rcpts), make_message(subject))
        assert refused == {}, refused


@attrs.define
class Traffic:
    """Ordinary senders running during an attack, and how they fared.

    :meth:`stop` only takes effect once ``at_least`` sessions have completed, so the
    count a test checks never depends on how fast the machine is.
    """

    port: int
    at_least: int = 1
    sent: int = 0
    failures: list[BaseException] = attrs.field(factory=list)
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _progress: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, *, senders: int = 2, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``senders`` smtplib clients sending until :meth:`stop` (and ``at_least``)."""

        async def sender(n: int) -> None:
            i = 0
            while not (self._stop.is_set() and self.sent >= self.at_least):
                i += 1
                try:
                    await trio.to_thread.run_sync(
                        functools.partial(send_mail, self.port, subject=f"ordinary {n}.{i}")
                    )
                except (OSError, smtplib.SMTPException) as exc:
                    self.failures.append(exc)
                    return
                self.sent += 1
                self._progress.set()
                self._progress = trio.Event()
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            for n in range(senders):
                nursery.start_soon(sender, n)
            task_status.started()

    async def wait_sent(self, n: int) -> None:
        """Wait until ``n`` ordinary sessions have completed (or one has failed)."""
        with trio.fail_after(HANG):
            while self.sent < n and not self.failures:
                await self._progress.wait()
        assert not self.failures, f"ordinary clients failed: {self.failures!r}"

    def stop(self) -> None:
        self._stop.set()

    def check(self, *, at_least: int) -> None:
        """Assert every ordinary session got through, and enough of them."""
        assert not self.failures, f"ordinary clients failed: {self.failures!r}"
        assert self.sent >= at_least, f"only {self.sent} messages sent"


@contextlib.asynccontextmanager
async def ordinary_traffic(
    port: int, *, senders: int = 2, at_least: int = 2
) -> AsyncIterator[Traffic]:
    """Run :class:`Traffic` for the body of the ``async with`` (and ``at_least`` sessions)."""
    traffic = Traffic(port, at_least=at_least)
    # Each smtplib session has its own HANG timeout, so the exit cannot hang.
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: traffic.run(senders=senders, task_status=task_status)
        )
        try:
            yield traffic
        finally:
            traffic.stop()


# ---------------------------------------------------------------------- resources


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; skip if that is still too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} file descriptors, RLIMIT_NOFILE allows {soft}")


def tasks_living() -> int:
    """How many Trio tasks exist in this run."""
    return trio.lowlevel.current_statistics().tasks_living


async def settle(predicate: Callable[[], bool], within: float = HANG) -> None:
    """Wait (polling) until ``predicate()`` holds.

    Polling, because what is awaited (a connection count, a task count, a list that
    worker threads append to) has no event to wait on.
    """
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)

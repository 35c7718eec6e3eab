"""``--workers N``: a supervisor and N server processes sharing the ports and the limits.

The supervisor is :mod:`._supervisor`, the table of limits they share is
:mod:`._shared_limits`; this module is the worker's side.

Signals: Ctrl-C, and systemd's default ``KillMode=control-group``, deliver the signal
to every process at once, and the supervisor passes one on too. So a worker ignores
SIGINT (the terminal's) and drains gracefully on its first SIGTERM; a repeated SIGTERM
changes nothing. Only the supervisor decides "stop now": on a second signal it sends
the workers SIGUSR1, on which they cancel their connections (421) at once.

Orphans: a worker exits when its supervisor dies, however it dies. On Linux the kernel
sends it SIGTERM (``prctl(PR_SET_PDEATHSIG)``); everywhere, it also watches a pipe whose
write end only the supervisor holds, which reads as end-of-file once the supervisor is
gone. Either way the worker drains gracefully and frees the port.

Readiness: once it listens, a worker writes its number to the supervisor's ready pipe
(the supervisor alone tells systemd, once every worker is ready).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ._auth_guard import AUTH_FAILURE_WINDOW
from ._shared_limits import SharedAddressLimiter, SharedFailureBudget, SharedLimits

if TYPE_CHECKING:
    from ._server import Server

#: How the supervisor tells a worker where the shared table, the lifeline and the
#: ready pipe are: ``table,lifeline,supervisor pid,ready``.
FDS_ENV: Final = "TRIO_SMTP_WORKER_FDS"
#: Linux <sys/prctl.h>.
_PR_SET_PDEATHSIG: Final = 1


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


@attrs.frozen
class _Shared:
    """What a worker got from its supervisor."""

    limits: SharedLimits
    lifeline: int
    ready: int


def _shared_from_environment(server: Server, worker: int) -> _Shared | None:
    """Attach to what the supervisor shares, if it does (:data:`FDS_ENV`)."""
    value = os.environ.pop(FDS_ENV, None)  # not inherited by what hooks start
    if not value:
        return None
    shared_fd, lifeline, supervisor, ready = (int(part) for part in value.split(","))
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
    return _Shared(limits=limits, lifeline=lifeline, ready=ready)


def run_worker(server: Server, worker: int) -> int:
    """Serve as worker ``worker`` of a supervisor until told to stop; returns the status."""
    # The terminal's Ctrl-C reaches every process of the group: only the supervisor's
    # SIGTERM counts here (see the module docs).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shared = _shared_from_environment(server, worker)
    try:
        trio.run(_serve_worker, server, worker, shared)
    finally:
        if shared is not None:
            shared.limits.close()
    return 0


async def _serve_worker(server: Server, worker: int, shared: _Shared | None) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, server, nursery.cancel_scope)
        if shared is not None:
            nursery.start_soon(_watch_lifeline, server, shared.lifeline)

        async def serve(task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
            await server.serve(task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(serve)
        if shared is not None:
            # Listening: tell the supervisor (a write this small is atomic on a pipe).
            os.write(shared.ready, f"{worker}\n".encode())
            os.close(shared.ready)


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

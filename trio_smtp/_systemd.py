"""systemd integration: readiness notification and socket activation, without libsystemd.

Theory of operation (sd_notify(3), sd_listen_fds(3)): when ``NOTIFY_SOCKET`` names a Unix
datagram socket (a path, or an abstract name written with a leading ``@``), the service sends
``READY=1`` to it once every listener is bound and ``STOPPING=1`` when it begins to shut down;
``Type=notify`` units then start dependants only once mail can be accepted. When
``LISTEN_PID`` is this process and ``LISTEN_FDS`` is N, descriptors 3 … 3+N-1 are listening
sockets systemd (or ``systemd-socket-activate``) opened for us: the server serves on them
instead of binding, so it can run without the privilege to bind port 25, and the socket
keeps queueing connections across restarts. Both variables are removed from the
environment once read, as ``sd_listen_fds(unset_environment=1)`` does, so that processes we
start do not take the sockets for theirs.

The workers of ``--workers`` inherit their shared listening sockets from the supervisor
the same way (same descriptor numbers), named in :data:`LISTEN_ENV` with their kind;
:func:`inherited_listeners` returns whichever of the two this process was given.
"""

from __future__ import annotations

import os
import socket
from typing import Final

from ._listeners import Listener

#: sd_listen_fds(3): the first inherited descriptor.
LISTEN_FDS_START: Final = 3
#: The listening sockets a ``--workers`` worker inherits from its supervisor:
#: ``fd:kind,...`` (kind ``unix`` for a ``--unix`` socket, ``systemd`` for one systemd
#: passed to the supervisor).
LISTEN_ENV: Final = "TRIO_SMTP_WORKER_LISTEN"


def notify(state: str) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"`` …) to the service manager.

    Returns:
        Whether a notification socket was set (and the message sent). Errors sending are
        ignored: a service manager that went away must not stop the mail server.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def listen_fds(*, unset_environment: bool = True) -> list[socket.socket]:
    """The listening sockets passed by socket activation (none if not activated).

    Returns:
        One :class:`socket.socket` per inherited descriptor, in order, marked close-on-exec.

    Raises:
        ValueError: for a malformed ``LISTEN_FDS``, or a descriptor that is not a
            listening stream socket.
    """
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if pid is None or count is None:
        return []
    if not pid.isdigit() or int(pid) != os.getpid():
        return []  # meant for another process (our parent, say)
    if not count.isdigit():
        raise ValueError(f"LISTEN_FDS must be a number, not {count!r}")
    out = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise ValueError(f"inherited descriptor {fd} is not a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ValueError(f"inherited descriptor {fd} is not listening")
        out.append(sock)
    return out


def inherited_listeners() -> list[Listener]:
    """The listeners this process inherited: from its supervisor, else from systemd.

    Raises:
        ValueError: as :func:`listen_fds`.
    """
    spec = os.environ.pop(LISTEN_ENV, None)
    if spec is None:
        out = [Listener(sock=sock, kind="systemd") for sock in listen_fds()]
    else:
        out = []
        for item in spec.split(","):
            fd, _, kind = item.partition(":")
            os.set_inheritable(int(fd), False)
            out.append(Listener(sock=socket.socket(fileno=int(fd)), kind=kind))
    for listener in out:
        listener.sock.setblocking(False)
    return out

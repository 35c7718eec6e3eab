"""What a connection needs from its server, in one frozen object.

The server builds a :class:`ConnectionSettings` when it starts serving (once the
host name is known) and gives it, with an address limiter, to each connection
task: a connection never sees the :class:`~trio_smtp.Server` itself.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._metrics import Metrics
from ._spool import Spool

if TYPE_CHECKING:
    from ._auth_guard import AuthGuard
    from ._config import ServerConfig
    from ._early_talkers import GreetingGuard
    from ._hooks import Hook
    from ._logger import LoggerLike
    from ._relay_policy import RelayPolicy
    from .engine import EngineConfig
    from .verify import Verifier

#: ``(mechanism, login, password) -> bool``, run in a worker thread.
Authenticator = Callable[[str, str, str], bool]


@attrs.frozen(kw_only=True)
class ConnectionSettings:
    """The server's settings and services as one connection uses them.

    Attributes:
        config: The server settings.
        engine_config: The protocol engine's settings (host name resolved).
        hostname: The name in the greeting and ``Received`` headers.
        hooks: The hooks by canonical event name.
        logger: The server's logger.
        deps: The ``dependencies`` given to the server (``ctx.deps``).
        sink: Where messages go when there is no ``done`` hook.
        authenticator: Checks AUTH credentials when no AUTH hook decides, or ``None``.
        ssl_context: For STARTTLS and implicit TLS, or ``None``.
        data_factory: Makes ``ctx.data`` for each connection, or ``None``.
        hook_threads: The limiter of the worker threads that run plain-function hooks.
        verifier: Runs SPF/DKIM/DMARC/ARC (``verify``), or ``None``.
        relay_policy: Who may relay to whom (checked at RCPT), or ``None`` for no check.
        auth_guard: The brakes on password guessing (failure budget, delay, threads).
        greeting: The wait before the greeting and its count of early talkers.
        metrics: The server's counters (a disabled :class:`~._metrics.Metrics` by default).
        spool: Where message bodies go, with the memory budget all connections share.
    """

    config: ServerConfig
    engine_config: EngineConfig
    hostname: str
    hooks: Mapping[str, Hook]
    logger: LoggerLike
    deps: Mapping[str, Any]
    sink: Any
    authenticator: Authenticator | None = None
    ssl_context: ssl.SSLContext | None = None
    data_factory: Callable[[], Any] | None = None
    hook_threads: trio.CapacityLimiter
    verifier: Verifier | None = None
    relay_policy: RelayPolicy | None = None
    auth_guard: AuthGuard | None = None
    greeting: GreetingGuard | None = None
    metrics: Metrics = attrs.field(factory=lambda: Metrics(enabled=False))
    spool: Spool = attrs.field(factory=Spool)

    def xclient_trusted(self, ip: str) -> bool:
        """Whether ``ip`` may send XCLIENT (``xclient_from``)."""
        return _in_networks(ip, self.config.xclient_from)

    def proxy_trusted(self, ip: str) -> bool:
        """Whether ``ip`` may send a PROXY header (``proxy_from``)."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.config.proxy_from)


def _in_networks(
    ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)

"""Who the client is, and whether it may stay: the per-address limit, PROXY and XCLIENT.

Theory of operation: a connection starts out as its socket's peer. Behind a trusted
proxy, the PROXY header (before the greeting) or XCLIENT (after it, Postfix's
XCLIENT_README) names the real client, and hooks, limits, logs and the ``Received``
header see that client from then on. ``max_connections_per_ip`` counts the real
client, not the proxy: the count moves with the client XCLIENT names, and a client
over the limit gets 421 4.7.0 and the session ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._logger import bind
from ._names import hostport
from ._proxy_reader import accept_proxy_header
from ._replies import BUSY, TOO_MANY_FROM_IP

if TYPE_CHECKING:
    import trio

    from ._limits import AddressLimiter
    from ._session import Session
    from ._settings import ConnectionSettings
    from .engine import Engine, Xclient

__all__ = ["Admission"]


class Admission:
    """One connection's client, as counted by the per-address limit.

    Args:
        session: The session whose ``peer`` is the client.
        engine: Closed with 421 4.7.0 when the client is over the limit.
        limiter: Counts connections per client address.
        settings: What the server gives every connection.
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = ("admitted", "engine", "limiter", "logger", "session", "settings")

    def __init__(
        self,
        session: Session,
        engine: Engine,
        limiter: AddressLimiter,
        settings: ConnectionSettings,
    ) -> None:
        self.session = session
        self.engine = engine
        self.limiter = limiter
        self.settings = settings
        self.logger = settings.logger
        #: The address this connection is counted for, if any.
        self.admitted: str | None = None

    def __repr__(self) -> str:
        return f"<Admission {self.session.id} admitted={self.admitted!r}>"

    def opened(self, *, implicit_tls: bool, via: str | None = None) -> None:
        """Log the connection, naming the client (and the proxy it came ``via``)."""
        self.logger.info(
            f"Connection opened: id={self.session.id} peer={hostport(self.session.peer)}"
            + (f" via={via}" if via else "")
            + (" tls=implicit" if implicit_tls else "")
        )

    async def proxy_header(self, stream: trio.abc.ReceiveStream, *, implicit_tls: bool) -> bool:
        """Read the PROXY header: ``False`` when there is none to trust (session closed)."""
        via = hostport(self.session.peer)
        failure = await accept_proxy_header(
            self.engine, stream, self.session, self.settings, self.logger
        )
        if failure is not None:
            self.engine.close(reason=failure)
            return False
        # The connection line names the client the header gave, and the proxy.
        bind(peer=hostport(self.session.peer))
        self.opened(implicit_tls=implicit_tls, via=via)
        return True

    def admit(self, ip: str, *, why: str = "") -> bool:
        """Count the connection for ``ip``; at ``max_connections_per_ip``, 421 and close."""
        if self.limiter.admit(ip):
            self.admitted = ip
            return True
        config = self.settings.config
        # A limiter shared by --workers also counts the whole server: it says which limit.
        limit = getattr(self.limiter, "refused_for", "max_connections_per_ip")
        self.settings.metrics.connection_refused(limit)
        if limit == "max_connections":
            self.logger.warn(
                f"Connection refused: peer={ip} (max_connections {config.max_connections} "
                f"reached){why}"
            )
            self.engine.close(BUSY, reason="too many connections")
            return False
        self.logger.warn(
            f"Connection refused: {ip} is at max_connections_per_ip "
            f"{config.max_connections_per_ip}{why}"
        )
        self.engine.close(TOO_MANY_FROM_IP, reason="too many connections from address")
        return False

    def release(self) -> None:
        """Stop counting this connection (it closed, or XCLIENT named another client)."""
        if self.admitted is not None:
            self.limiter.release(self.admitted)
            self.admitted = None

    def xclient(self, event: Xclient) -> None:
        """Serve the client a positively answered XCLIENT names (maybe closing: the limit)."""
        proxy = hostport(self.session.peer)
        if event.addr is not None:
            if event.addr != self.admitted:
                self.release()
                if not self.admit(event.addr, why=" (XCLIENT)"):
                    return
            self.session.peer = (event.addr, event.port if event.port is not None else 0)
        # NAME is the client's name from here on ([UNAVAILABLE]/[TEMPUNAVAIL]: none);
        # DESTADDR/DESTPORT the address it connected to. HELO and PROTO: the engine's.
        if "NAME" in event.attributes:
            self.session.client_name = event.name
        if event.destaddr is not None or event.destport is not None:
            host, port = self.session.local or ("", 0)
            self.session.local = (event.destaddr or host, event.destport or port)
        bind(peer=hostport(self.session.peer))
        self.logger.info(
            f"XCLIENT: id={self.session.id} client {hostport(self.session.peer)}"
            + (f" name={event.name}" if event.name else "")
            + (f" helo={event.helo}" if event.helo else "")
            + (f" login={event.login}" if event.login else "")
            + (f" proto={event.proto}" if event.proto else "")
            + (f" to={hostport(self.session.local)}" if event.destaddr or event.destport else "")
            + f" via {proxy}"
        )

"""Reading the PROXY protocol header before the greeting.

The engine parses the header (v1 or v2, from raw bytes in any cut) and keeps the
bytes that follow it buffered for the session, as h11 keeps ``trailing_data``: this
module only feeds it until it has the header, and turns that into a
:class:`~._session.ProxyInfo`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._names import hostport
from ._session import ProxyInfo, Session
from .engine import NEED_DATA, Engine, ProxyHeader

if TYPE_CHECKING:
    from ._logger import LoggerLike
    from ._settings import ConnectionSettings

#: Bytes asked of the stream per read while waiting for the header.
READ_SIZE = 16384


async def read_proxy_header(engine: Engine, stream: trio.abc.ReceiveStream) -> ProxyHeader | None:
    """Feed ``engine`` from ``stream`` until it emits the header.

    Returns:
        The header, or ``None`` when the engine closed the session instead (a bad
        header, or end of file). The caller bounds the wait.
    """
    event = engine.next_event()
    while event is NEED_DATA:
        engine.receive_data(await stream.receive_some(READ_SIZE))
        event = engine.next_event()
    return event if isinstance(event, ProxyHeader) else None


def apply_proxy_header(session: Session, header: ProxyHeader) -> None:
    """Record what the header says: the real client (unless ``LOCAL``/``UNKNOWN``)."""
    if not header.local and header.source is not None:
        session.peer = header.source
        session.local = header.destination
    session.proxy = ProxyInfo(
        version=header.version,
        source=header.source,
        destination=header.destination,
        tlvs=header.tlvs,
    )


async def accept_proxy_header(
    engine: Engine,
    stream: trio.abc.ReceiveStream,
    session: Session,
    settings: ConnectionSettings,
    logger: LoggerLike,
) -> str | None:
    """Read the header of a connection from a trusted proxy, within ``proxy_timeout``.

    Returns:
        ``None`` once the session knows the real client; else why the connection
        must close (``"untrusted proxy"``, ``"no valid PROXY header"``).
    """
    peer_ip = session.peer[0]
    if not settings.proxy_trusted(peer_ip):
        logger.warn(f"Connection {session.id}: {peer_ip} is not allowed to send a PROXY header")
        return "untrusted proxy"
    with trio.move_on_after(settings.config.proxy_timeout):
        header = await read_proxy_header(engine, stream)
        if header is not None:
            apply_proxy_header(session, header)
            logger.debug(
                f"PROXY v{header.version}: id={session.id} client "
                f"{hostport(session.peer)} via {peer_ip}"
            )
            return None
    if engine.session.close_reason == "proxy-error":
        logger.warn(f"Bad PROXY header: id={session.id}")
    return "no valid PROXY header"

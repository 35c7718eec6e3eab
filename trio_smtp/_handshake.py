"""TLS on a connection: the handshake (implicit, RFC 8314, or after STARTTLS, RFC 3207).

The handshake has its own timeout (``tls_handshake_timeout``), not the I/O deadline
(:meth:`~._link.Link.start_tls` lifts it). A success is logged with the version,
cipher and SNI name, counted, and becomes a session fact (``session.tls``); a
failure or a timeout is logged and counted, and ends the session (no reply: the
client is not speaking TLS that this server can answer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._tls import tls_info
from ._transport import HandshakeFailed

if TYPE_CHECKING:
    from ._link import Link
    from ._session import Session
    from ._settings import ConnectionSettings

__all__ = ["handshake"]


async def handshake(
    link: Link, settings: ConnectionSettings, session: Session, *, implicit: bool
) -> bool:
    """Make ``link`` a TLS connection; ``False`` when that failed (the session is over)."""
    context = settings.ssl_context
    assert context is not None
    logger = settings.logger
    try:
        tls_stream = await link.start_tls(context, limit=settings.config.tls_handshake_timeout)
    except HandshakeFailed as exc:
        if exc.detail is None:
            logger.warn(f"TLS handshake timed out: id={session.id}")
            link.engine.close(reason="TLS handshake timeout")
        else:
            logger.warn(f"TLS handshake failed: id={session.id} ({exc.detail})")
            link.engine.close(reason="TLS handshake failed")
        settings.metrics.tls_handshake(False)
        return False
    settings.metrics.tls_handshake(True)
    tls = session.tls = tls_info(tls_stream, implicit=implicit)
    logger.info(
        f"TLS established: id={session.id} {tls.version} {tls.cipher}"
        + (f" sni={tls.server_name}" if tls.server_name else "")
    )
    return True

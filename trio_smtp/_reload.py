"""Signals: SIGHUP loads the TLS certificates and the auth file again, without dropping
anything; SIGINT and SIGTERM shut down gracefully, a second one at once.

Theory of operation: the files are read and checked in a worker thread (a certificate
chain or a big auth file must not stall the event loop); only when every new file is good
does the server switch, through its ``ssl_context`` and ``authenticator`` setters, which
hand the new objects to connections accepted from then on. Connections already open keep
the context they started TLS with, and a transaction in progress is never disturbed. A
file that fails to load is logged at ERROR, naming it, and the old one stays in use: a
half-renewed certificate (the key written, the chain not yet) must not take mail down.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import trio

from ._auth_file import load_auth_file
from ._tls import server_ssl_context

if TYPE_CHECKING:
    from ._server import Server


async def reload(server: Server) -> bool:
    """Reload ``server``'s certificate(s) and auth file; log what happened.

    Returns:
        Whether everything configured was reloaded (``False``: the old files stay).
    """
    config = server.config
    logger = server.logger
    ok = True
    if config.tls_cert is not None and config.tls_key is not None:
        cert, key = config.tls_cert, config.tls_key
        try:
            context = await trio.to_thread.run_sync(
                lambda: server_ssl_context(
                    cert, key, sni=config.tls_sni, client_ca=config.tls_client_ca
                )
            )
        except (OSError, ValueError) as exc:
            logger.error(f"Reload: keeping the old certificate: {cert}: {exc}")
            ok = False
        else:
            server.ssl_context = context
            logger.log(f"Reload: certificate {cert} loaded")
    # An authenticator given as a dependency is the application's to reload.
    if config.auth_file is not None and "authenticator" not in server.deps:
        path = config.auth_file
        try:
            authenticator = await trio.to_thread.run_sync(load_auth_file, path)
        except (OSError, ValueError) as exc:
            logger.error(f"Reload: keeping the old auth file: {path}: {exc}")
            ok = False
        else:
            server.authenticator = authenticator
            logger.log(f"Reload: auth file {path} loaded")
    return ok


async def serve_until_signalled(server: Server) -> None:
    """:meth:`Server.serve` until SIGINT or SIGTERM, then shut down gracefully; a second
    signal stops at once, SIGHUP reloads (:meth:`Server.run`)."""
    async with trio.open_nursery() as nursery:

        async def watch(task_status: trio.TaskStatus[None]) -> None:
            stopping = False
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                # Listening for signals before the start line: a SIGHUP sent as soon as
                # it appears must reload, not kill (its default action).
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await reload(server)
                    elif not stopping:
                        stopping = True
                        server.logger.log(f"Received {signal.Signals(signum).name}")
                        server.shutdown()
                    else:
                        server.logger.warn("Second signal: stopping now")
                        nursery.cancel_scope.cancel()

        await nursery.start(watch)
        await server.serve()
        nursery.cancel_scope.cancel()

"""Who decides an AUTH: the failure guard, the ``AUTH`` hook, then the authenticator.

The guard refuses an address with too many recent failures before anything else runs.
The ``AUTH`` hook decides when it answers (``True``, ``False`` or a reply); when it
passes (``None``), a login acting for someone else is refused (RFC 4616 §2: that
needs the hook's yes), and otherwise the authenticator checks the password in a
worker thread of the guard's own. Every failure is reported to the guard, counted
and logged with the client's address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auth_guard import AUTHZID_REFUSED, TOO_MANY_AUTH_FAILURES

if TYPE_CHECKING:
    from ._hooks import HookRunner
    from ._session import Session
    from ._settings import ConnectionSettings
    from .engine import AuthCredentials, Engine, Reply

__all__ = ["answer_auth", "auth_verdict"]


async def answer_auth(
    event: AuthCredentials,
    *,
    engine: Engine,
    hooks: HookRunner,
    settings: ConnectionSettings,
    session: Session,
    mail: Any,
) -> None:
    """Answer the pending AUTH ``event``; log and count the outcome."""
    reply = await auth_verdict(event, hooks=hooks, settings=settings, session=session, mail=mail)
    engine.respond(reply)
    if engine.session.authenticated_as is not None:
        settings.logger.info(
            f"Authenticated: id={session.id} as {event.login!r} ({event.mechanism})"
        )
    else:
        settings.metrics.auth_failure()
        settings.logger.warn(
            f"Authentication failed: id={session.id} login {event.login!r} from {session.peer[0]}"
        )


async def auth_verdict(
    event: AuthCredentials,
    *,
    hooks: HookRunner,
    settings: ConnectionSettings,
    session: Session,
    mail: Any,
) -> Reply | None:
    """The reply to the credentials of ``event`` (``None``: the engine's 535)."""
    guard = settings.auth_guard
    ip = session.peer[0]
    if guard is not None and guard.blocked(ip):
        settings.logger.warn(
            f"Authentication refused: id={session.id} {ip} has too many failed "
            "authentication attempts"
        )
        return TOO_MANY_AUTH_FAILURES
    reply = await hooks.auth_reply(event, mail)
    if reply is None:
        if event.authzid and event.authzid != event.login:
            reply = AUTHZID_REFUSED
        elif settings.authenticator is not None:
            limiter = guard.limiter if guard is not None else None
            reply = await hooks.authenticate(settings.authenticator, event, limiter=limiter)
    if guard is not None and (reply is None or reply.code == 535):
        await guard.failed(ip)
    return reply

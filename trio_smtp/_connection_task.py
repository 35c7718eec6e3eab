"""One connection: its lifecycle, and the dispatch of engine events.

Theory of operation: the task loops on :meth:`Engine.next_event` and hands each
event to its handler (the ``_HANDLERS`` table). ``NEED_DATA`` means the client's
pipelined batch is exhausted: the task flushes every reply of the batch at once and
reads again. The engine owns the session's facts, its sequencing and why it closed
(this layer tells it, and reads it back); the task reads them.

Rooms, as in hypercorn: the transport moves bytes (:mod:`._transport`, TLS over it,
or any Trio stream), :mod:`._link` carries them under the one I/O deadline, this task
drives the protocol, :mod:`._delivery` holds the transaction, :mod:`._admission` the
client's identity and :mod:`._hooks` calls the application. Transport errors end only
this connection; anything a hook raises becomes 451 4.3.0 and an ``error`` event.

Graceful shutdown: :meth:`ConnectionTask.begin_shutdown` lets a transaction in
progress finish; a connection that is idle, or finishes its transaction, gets
421 4.3.2 and is closed. If the grace period runs out the task is cancelled, and
still sends a best-effort 421 and runs the ``close`` hook, bounded by
:data:`FAREWELL_TIMEOUT` past the end of the grace.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ._admission import Admission
from ._authentication import answer_auth
from ._delivery import Delivery
from ._handshake import handshake
from ._hooks import HookReturnError, HookRunner, HookTimeout
from ._limits import AddressLimiter
from ._link import FAREWELL_TIMEOUT, Link
from ._logger import bind
from ._names import hostport, loggable, new_session_id
from ._replies import (
    CONNECT_FAILED,
    DATA_TIMEOUT,
    HOOK_FAILED,
    IDLE_TIMEOUT,
    SHUTTING_DOWN,
)
from ._schema import Context
from ._session import Session
from ._settings import ConnectionSettings
from .engine import (
    NEED_DATA,
    AuthCredentials,
    Command,
    CommandRejected,
    ConnectionClosed,
    EndOfMessage,
    Engine,
    Event,
    MailFrom,
    MessageData,
    MessageRejected,
    RcptTo,
    Reply,
    StartTLS,
    State,
    TLSUpgrade,
    Xclient,
)

__all__ = ["FAREWELL_TIMEOUT", "ConnectionTask", "HookReturnError", "HookTimeout"]

#: Unsent reply bytes a connection holds while commands are pipelined; past it the task
#: flushes. A client that pipelines and never reads then blocks the task there (its
#: socket buffer is full), so its input stops being read and the output it has not read
#: stays under this many bytes plus one reply, whatever the replies' size (a count of
#: replies bounded nothing when a hook answers with long text). Postfix's smtpd holds
#: its 4 KiB stream buffer; this is the kernel's own unsent share (``_transport``'s
#: ``TCP_NOTSENT_LOWAT``).
OUTPUT_CAP: Final = 16384
#: The engine's own close reasons, as log lines say them (others are said as given).
_REASONS: Final = {
    "auth-failures": "too many authentication failures",
    "proxy-error": "no valid PROXY header",
    "rejected": "refused at connect",
}
_SHUTDOWN: Final = "server shutdown"


class ConnectionTask:
    """Serves one client connection.

    Args:
        settings: What the server gives every connection.
        stream: The accepted connection (a :class:`~._transport.SocketTransport`, or
            any Trio stream).
        peer: The client's ``(host, port)``.
        local: The server's ``(host, port)``.
        implicit_tls: Whether the TLS handshake comes first (SMTPS, RFC 8314).
        limiter: Counts connections per client address.
    """

    # Slots: one of these per connection (issue 11: memory per idle connection).
    __slots__ = (
        "_hook_bound",
        "_shutdown",
        "_shutdown_deadline",
        "admission",
        "config",
        "data",
        "delivery",
        "engine",
        "hooks",
        "implicit_tls",
        "link",
        "logger",
        "metrics",
        "session",
        "settings",
    )

    def __init__(
        self,
        settings: ConnectionSettings,
        stream: trio.abc.Stream,
        *,
        peer: tuple[str, int],
        local: tuple[str, int] | None,
        implicit_tls: bool,
        limiter: AddressLimiter,
    ) -> None:
        self.settings = settings
        config = self.config = settings.config
        self.implicit_tls = implicit_tls
        self.logger = settings.logger
        self.metrics = settings.metrics
        self.engine = Engine(settings.engine_config, tls_active=implicit_tls)
        self.link = Link(
            stream,
            self.engine,
            settings.metrics,
            command_timeout=config.command_timeout,
            data_timeout=config.data_timeout,
        )
        self.session = Session(
            id=new_session_id(),
            peer=peer,
            local=local,
            hostname=settings.hostname,
            lmtp=config.lmtp,
            facts=self.engine.session,
        )
        self.hooks = HookRunner(
            settings.hooks,
            timeout=config.hook_timeout,
            threads=settings.hook_threads,
            logger=self.logger,
            label=self.session.id,
            context=self._context,
            metrics=settings.metrics,
        )
        self.delivery = Delivery(self.link, self.hooks, settings, self.session)
        self.admission = Admission(self.session, self.engine, limiter, settings)
        self.data: Any = None
        #: How long a hook can take: itself and, if it fails, the ``error`` hook.
        self._hook_bound = 2 * config.hook_timeout
        self._shutdown = False
        self._shutdown_deadline: float | None = None

    def __repr__(self) -> str:
        return f"<ConnectionTask {self.session.id} peer={self.session.peer!r}>"

    @property
    def close_reason(self) -> str:
        """Why the connection ended (or will), as the engine recorded it."""
        reason = self.engine.session.close_reason or "closed"
        return _REASONS.get(reason, reason)

    # ------------------------------------------------------------------ lifecycle

    def begin_shutdown(self, deadline: float | None = None) -> None:
        """Finish the transaction in progress, then say 421 and close.

        Args:
            deadline: When the server's grace period ends (Trio time), if known.
        """
        self._shutdown = True
        self._shutdown_deadline = deadline
        self.link.draining = True
        if not self.engine.in_transaction:
            self.link.wake()

    async def run(self) -> None:
        """Serve the connection until it ends; never raises except ``Cancelled``."""
        bind(session=self.session.id, peer=hostport(self.session.peer))
        self.metrics.connection_opened()
        if not self.config.proxy_protocol:
            # Behind a proxy, the line waits for the PROXY header: it names the client.
            self.admission.opened(implicit_tls=self.implicit_tls)
        engine = self.engine
        cancelled = farewell = False
        try:
            await self._serve()
        except trio.Cancelled:
            cancelled = True  # the grace period is over, or the server's scope was cancelled
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            engine.close(reason="connection lost")
        except trio.TooSlowError:
            engine.close(reason="send timeout")
        except OSError as exc:
            engine.close(reason=f"socket error ({errno.errorcode.get(exc.errno or 0, exc)})")
        except Exception as exc:  # the connection boundary: nothing escapes to the server
            self.logger.error(f"Connection {self.session.id}: internal error {exc!r}")
            if engine.state is not State.CLOSED:
                # A bug, not a shutdown: do not tell the client the server is going away.
                engine.close(CONNECT_FAILED, reason="internal error")
                farewell = True
        finally:
            if engine.state is not State.CLOSED:
                engine.close(SHUTTING_DOWN, reason=_SHUTDOWN)
                farewell = True
            if farewell or "close" in self.hooks.hooks or not self.link.close_now():
                await self._finish(farewell=farewell, cancelled=cancelled)
            else:
                # Nothing left to wait for (no farewell, no hook, a plain socket): closed
                # at once, without a shielded scope and a trip through the scheduler.
                self._closed()

    def _closed(self) -> None:
        """The bookkeeping of a closed connection: the address count and log lines."""
        self.metrics.connection_closed()
        self.delivery.dropped()
        self.admission.release()
        self.logger.info(f"Connection closed: id={self.session.id} ({self.close_reason})")

    async def _finish(self, *, farewell: bool, cancelled: bool) -> None:
        """The last words (if ``farewell``), the ``close`` hook, the stream closed.

        Everything here is shielded and bounded: when the task was cancelled (grace
        over, or the server's scope), by FAREWELL_TIMEOUT from now; during a graceful
        shutdown, by FAREWELL_TIMEOUT past the end of the grace; else by hook_timeout.
        """
        with trio.CancelScope(shield=True):
            deadline: float | None = None
            if cancelled:
                deadline = trio.current_time() + FAREWELL_TIMEOUT
            elif self._shutdown_deadline is not None:
                deadline = max(self._shutdown_deadline, trio.current_time()) + FAREWELL_TIMEOUT
            if farewell:
                await self.link.last_words()
            await self.hooks.fire("close", self.session, deadline=deadline)
            await self.link.aclose()
            self._closed()

    async def _serve(self) -> None:
        if self.settings.data_factory is not None:
            # Called here, inside the connection boundary: a factory that raises ends
            # this connection with 421 4.3.0, not the server's accept loop.
            self.data = self.settings.data_factory()
        if self.config.proxy_protocol and not await self.admission.proxy_header(
            self.link.stream, implicit_tls=self.implicit_tls
        ):
            return
        ip = self.session.peer[0]
        if not self.admission.admit(ip):
            await self.link.flush()
            return
        # Postfix's XCLIENT_README: only trusted proxies may say who the client is.
        self.engine.allow_xclient = self.settings.xclient_trusted(ip)
        if self.implicit_tls and not await handshake(
            self.link, self.settings, self.session, implicit=True
        ):
            return
        if not await self._greet_delay():
            return
        self.engine.greet(await self.hooks.connect_reply(self.session))
        if self.engine.state is State.CLOSED:
            await self.link.flush()
            return
        await self._loop()

    async def _greet_delay(self) -> bool:
        """``greet_delay``: wait before the 220; a client that talks first gets 554."""
        greeting = self.settings.greeting
        if greeting is None or greeting.delay <= 0:
            return True
        if await greeting.hold(self.link.stream, self.engine, self.session, self.logger):
            return True
        await self.link.flush()
        return False

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        # One cancel scope carries every I/O deadline of the connection (see _link).
        link = self.link
        while True:
            with link.deadlines() as scope:
                await self._events()
            if not scope.cancelled_caught:
                return
            if not (self._shutdown and not self.engine.in_transaction) and link.fired_early():
                continue  # a stale deadline: read again under the exact one
            await self._timed_out()
            return

    async def _events(self) -> None:
        engine = self.engine
        link = self.link
        handlers = _HANDLERS
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                # The replies of the batch go out, then a read under the armed deadline.
                data = await link.receive()
                if data is None:
                    if engine.state is not State.CLOSED:  # shutdown: idle, nothing read
                        engine.close(SHUTTING_DOWN, reason=_SHUTDOWN)
                        await link.flush()
                    return
                engine.receive_data(data)
                continue
            if type(event) is MessageData:
                # The delivery holds the transaction: no local of this loop may.
                await self.delivery.append(event.data)
                continue
            handler = handlers.get(type(event))
            if handler is None:
                handler = _handler_for(event)
            if not await handler(self, event):
                return
            if engine.pending_output >= OUTPUT_CAP:
                await link.flush()  # the output cap: see OUTPUT_CAP

    async def _unexpected(self, event: Any) -> bool:
        """An event this layer has no handler for: a bug, logged and answered."""
        self.logger.error(f"Connection {self.session.id}: unexpected engine event {event!r}")
        if isinstance(event, Event) and event.needs_reply:
            self.engine.respond(HOOK_FAILED)
            return True
        # PAUSED, or an event that leaves nothing to do: reading on would spin.
        self.engine.close(CONNECT_FAILED, reason="internal error")
        await self.link.flush()
        return False

    async def _timed_out(self) -> None:
        """The armed deadline passed (or shutdown woke an idle read): 421 and close."""
        engine = self.engine
        if self.link.sending:
            # The client stopped reading. It would not read a 421 either, and Trio
            # forbids another send on a stream whose send_all was cancelled.
            engine.close(reason="send timeout")
            return
        if self._shutdown and not engine.in_transaction:
            engine.close(SHUTTING_DOWN, reason=_SHUTDOWN)
        else:
            engine.close(DATA_TIMEOUT if engine.reading_body else IDLE_TIMEOUT, reason="timeout")
        await self.link.last_words()

    # ------------------------------------------------------------------ commands

    def _context(self, name: str, mail: Any, **fields: Any) -> Context:
        return Context(
            command=name,
            session=self.session,
            mail=mail,
            data=self.data,
            logger=self.logger,
            deps=self.settings.deps,
            **fields,
        )

    async def _hook_reply(self, name: str, event: Command | None = None) -> Reply | None:
        """The hook's answer to a command (``None``: the default reply)."""
        if name not in self.hooks.hooks:
            return None
        self.link.disarm(self._hook_bound)
        return await self.hooks.command_reply(name, event, self.delivery.mail)

    def _refused_for_shutdown(self) -> bool:
        """During shutdown a command outside a transaction gets 421 (RFC 5321 §3.8)."""
        if self._shutdown and not self.engine.in_transaction:
            self.engine.respond(SHUTTING_DOWN, reason=_SHUTDOWN)
            return True
        return False

    async def _command(self, event: Command) -> bool:
        self.link.command_deadline = None
        engine = self.engine
        if self._shutdown and not engine.in_transaction:
            engine.respond(SHUTTING_DOWN, reason=_SHUTDOWN)  # RFC 5321 §3.8
            return True
        if type(event) is MailFrom:
            await self.delivery.start(event)
        reply = None
        policy = self.settings.relay_policy
        if policy is not None and type(event) is RcptTo:  # before any hook runs
            reply = policy.refusal(self.session, event.address, self.logger)
        if reply is None and event.verb in self.hooks.hooks:
            reply = await self._hook_reply(event.verb, event)
        engine.respond(reply, reason="closed by hook")
        in_transaction = engine.in_transaction
        self.delivery.answered(event, in_transaction=in_transaction)
        if not in_transaction:
            # A BDAT transfer ended by RSET, EHLO or a refused chunk: its deadline
            # must not carry over to the next message.
            self.link.data_deadline = None
        return True

    async def _starttls(self, event: StartTLS) -> bool:
        self.link.command_deadline = None
        if not self._refused_for_shutdown():
            # The STARTTLS hook runs after the handshake, when TLS details are known.
            self.engine.respond()
        return True

    async def _tls_upgrade(self, event: TLSUpgrade) -> bool:
        await self.link.flush()
        if not await handshake(self.link, self.settings, self.session, implicit=False):
            return False
        self.engine.tls_started()  # RFC 3207 §4.2: the engine forgets the session
        self.delivery.discard()
        reply = await self._hook_reply("STARTTLS")
        if reply is not None and not reply.is_positive:
            reply = reply if reply.code == 421 else Reply(421, reply.text)
            self.engine.close(reply, reason="refused after STARTTLS")
            await self.link.flush()
            return False
        return True

    async def _auth(self, event: AuthCredentials) -> bool:
        self.link.command_deadline = None
        if self._refused_for_shutdown():
            return True
        self.link.disarm()
        await answer_auth(
            event,
            engine=self.engine,
            hooks=self.hooks,
            settings=self.settings,
            session=self.session,
            mail=self.delivery.mail,
        )
        return True

    # ------------------------------------------------------------------ messages

    async def _end_of_message(self, event: EndOfMessage) -> bool:
        self.link.data_deadline = None
        stored = await self.delivery.finish()
        if stored and self._shutdown:
            # The message is stored: its 250 must go out even if the grace period
            # ends now, or the client, told 421 instead, sends it again (a duplicate).
            with trio.CancelScope(shield=True), trio.move_on_after(FAREWELL_TIMEOUT):
                await self.link.flush()
        return True

    async def _message_rejected(self, event: MessageRejected) -> bool:
        self.link.data_deadline = None
        self.delivery.rejected(event.reply)
        return True

    async def _xclient(self, event: Xclient) -> bool:
        """XCLIENT from a trusted proxy: what follows is about the client it names.

        Like a PROXY header, the new address is what hooks, limits, logs and the
        ``Received`` header see from now on; the engine has started the session over.
        """
        self.link.command_deadline = None
        if self._refused_for_shutdown():
            return True
        reply = await self._hook_reply(event.verb, event)
        self.engine.respond(reply)
        if reply is None or reply.is_positive:
            self.admission.xclient(event)
        return True

    async def _rejected(self, event: CommandRejected) -> bool:
        self.link.command_deadline = None
        self.link.data_deadline = None
        self.logger.debug(
            f"Command refused: id={self.session.id} {loggable(event.line)!r} -> {event.reply}"
        )
        return True

    async def _connection_closed(self, event: ConnectionClosed) -> bool:
        await self.link.flush()
        if event.reason == "starttls-injection":
            self.logger.warn(
                f"Connection {self.session.id}: data sent after STARTTLS in the same "
                "flight (command injection attempt); dropped"
            )
        return False


_Handler = Callable[[ConnectionTask, Any], Awaitable[bool]]

#: What the task does with each engine event; the handler says whether to go on.
_HANDLERS: Final[dict[type, _Handler]] = {
    StartTLS: ConnectionTask._starttls,
    AuthCredentials: ConnectionTask._auth,
    TLSUpgrade: ConnectionTask._tls_upgrade,
    EndOfMessage: ConnectionTask._end_of_message,
    MessageRejected: ConnectionTask._message_rejected,
    CommandRejected: ConnectionTask._rejected,
    Xclient: ConnectionTask._xclient,
    ConnectionClosed: ConnectionTask._connection_closed,
}


def _handler_for(event: object) -> _Handler:
    """The handler of an event type not yet in the table (found once, then cached)."""
    if isinstance(event, Command):
        # Every other command (HELO, MAIL, RCPT, DATA, BDAT, RSET, NOOP …): its hook,
        # then what the engine decides the reply means.
        _HANDLERS[type(event)] = ConnectionTask._command
        return ConnectionTask._command
    return ConnectionTask._unexpected

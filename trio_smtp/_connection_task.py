"""One connection: its lifecycle, the dispatch of engine events, and its deadlines.

Theory of operation: the task loops on :meth:`Engine.next_event` and hands each
event to its handler (the ``_HANDLERS`` table). ``NEED_DATA`` means the client's
pipelined batch is exhausted: the task flushes every reply of the batch at once and
reads again. Each wait has a deadline (RFC 5321 §4.5.3.2): ``command_timeout`` from
the moment the server starts waiting for a command until a whole line has arrived
(bytes dribbled in do not move it), ``data_timeout`` for a whole DATA body or BDAT
chunk. The engine owns the session's facts and sequencing; the task reads them.

Three rooms, as in hypercorn: the transport moves bytes (:mod:`._transport`, or a
:class:`trio.SSLStream` over it, or any Trio stream in tests), this task drives the
protocol, and :mod:`._hooks` calls the application. Transport errors end only this
connection; anything a hook raises becomes 451 4.3.0 and an ``error`` event.

Graceful shutdown: :meth:`ConnectionTask.begin_shutdown` lets a transaction in
progress finish; a connection that is idle, or finishes its transaction, gets
421 4.3.2 and is closed. If the grace period runs out the task is cancelled, and
still sends a best-effort 421 and runs the ``close`` hook, bounded by
:data:`FAREWELL_TIMEOUT` past the end of the grace.
"""

from __future__ import annotations

import errno
import math
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ._auth_guard import AUTHZID_REFUSED, TOO_MANY_AUTH_FAILURES
from ._early_talkers import TALKED_FIRST
from ._hooks import HookReturnError, HookRunner, HookTimeout
from ._limits import AddressLimiter
from ._logger import bind
from ._mail import Mail
from ._message_log import log_message
from ._names import hostport, loggable, new_session_id
from ._proxy_reader import accept_proxy_header
from ._relay_policy import RELAY_DENIED
from ._replies import (
    CONNECT_FAILED,
    DATA_TIMEOUT,
    HOOK_FAILED,
    IDLE_TIMEOUT,
    SHUTTING_DOWN,
    TOO_MANY_FROM_IP,
)
from ._schema import Context
from ._session import Session
from ._settings import ConnectionSettings
from ._tls import tls_info
from ._transaction import Transaction
from ._transport import (
    HandshakeFailed,
    SocketTransport,
    receive_nowait,
    send_nowait,
    start_tls,
)
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

#: Bytes asked of the transport per read while reading commands, and while reading a body.
COMMAND_READ_SIZE: Final = 16384
BODY_READ_SIZE: Final = 65536
#: Replies handled between two flushes while commands are pipelined. A client that
#: pipelines and never reads then blocks the task after this many replies (its socket
#: buffer is full), so the input stops being read and unsent output stays bounded
#: (a few KiB per connection) instead of growing with every command answered.
OUTPUT_BATCH: Final = 16
#: How long the last words (a 421, the ``close`` hook, TLS close_notify) may take
#: when the task is being cancelled or the shutdown grace is over.
FAREWELL_TIMEOUT: Final = 1.0
#: The engine's close reasons, as log lines say them.
_REASONS: Final = {
    "auth-failures": "too many authentication failures",
    "proxy-error": "no valid PROXY header",
}
#: Reads in a row that may skip the checkpoint when the client's bytes are already
#: there (see _receive): bounds how long one busy client holds the event loop.
MAX_READS_WITHOUT_CHECKPOINT: Final = 4
#: Seconds of slack between a lifted I/O deadline and the timeouts of what runs under it.
_DEADLINE_MARGIN: Final = 1.0
_STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# The code of each reply's last line (RFC 5321 §4.2.1: "250-" continues, "250 " ends).
_REPLY_CODE: Final = re.compile(rb"(?m)^([2-5]\d\d) ")


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
        self.config = settings.config
        self.stream: trio.abc.Stream = stream
        self.implicit_tls = implicit_tls
        self.limiter = limiter
        self.logger = settings.logger
        self.engine = Engine(settings.engine_config, tls_active=implicit_tls)
        self.session = Session(
            id=new_session_id(),
            peer=peer,
            local=local,
            hostname=settings.hostname,
            lmtp=self.config.lmtp,
            facts=self.engine.session,
        )
        self.hooks = HookRunner(
            settings.hooks,
            timeout=self.config.hook_timeout,
            threads=settings.hook_threads,
            logger=self.logger,
            label=self.session.id,
            context=self._context,
            metrics=settings.metrics,
        )
        self.metrics = settings.metrics
        self.data: Any = None
        #: The mail transaction in progress, while the engine says there is one.
        self.txn: Transaction | None = None
        #: Why the connection ended, when this layer (not the engine) decided it.
        self._end: str | None = None
        self._messages = 0
        self._command_deadline: float | None = None
        self._data_deadline: float | None = None
        self._io_scope: trio.CancelScope | None = None
        #: The exact deadline of the wait in progress (or the last one), Trio time.
        self._io_deadline = math.inf
        #: The I/O deadline was lifted for a hook, the authenticator or TLS.
        self._lifted = False
        #: A deadline fired during a receive (maybe early: see _loop).
        self._read_cancelled = False
        self._reads_without_checkpoint = 0
        self._reading = False
        #: True while a send_all is in progress, and still True if it was cancelled.
        self._sending = False
        self._shutdown = False
        self._shutdown_deadline: float | None = None
        self._admitted: str | None = None

    def __repr__(self) -> str:
        return f"<ConnectionTask {self.session.id} peer={self.session.peer!r}>"

    @property
    def close_reason(self) -> str:
        """Why the connection ended (or will): this layer's reason, else the engine's."""
        if self._end is not None:
            return self._end
        reason = self.engine.session.close_reason or "closed"
        return _REASONS.get(reason, reason)

    @property
    def mail(self) -> Any:
        """The mail of the transaction in progress, or ``None``."""
        return self.txn.mail if self.txn is not None else None

    # ------------------------------------------------------------------ lifecycle

    def begin_shutdown(self, deadline: float | None = None) -> None:
        """Finish the transaction in progress, then say 421 and close.

        Args:
            deadline: When the server's grace period ends (Trio time), if known.
        """
        self._shutdown = True
        self._shutdown_deadline = deadline
        scope = self._io_scope
        if scope is not None and self._reading and not self.engine.in_transaction:
            scope.cancel()

    async def run(self) -> None:
        """Serve the connection until it ends; never raises except ``Cancelled``."""
        log = self.logger
        bind(session=self.session.id, peer=hostport(self.session.peer))
        self.metrics.connection_opened()
        if not self.config.proxy_protocol:
            # Behind a proxy, the line waits for the PROXY header: it names the client.
            self._log_opened()
        cancelled = False
        try:
            await self._serve()
        except trio.Cancelled:
            cancelled = True
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end = "connection lost"
        except trio.TooSlowError:
            self._end = "send timeout"
        except OSError as exc:
            self._end = f"socket error ({errno.errorcode.get(exc.errno or 0, exc)})"
        except Exception as exc:  # the connection boundary: nothing escapes to the server
            self._end = "internal error"
            log.error(f"Connection {self.session.id}: internal error {exc!r}")
        finally:
            stream = self.stream
            if (
                self.engine.state is State.CLOSED
                and type(stream) is SocketTransport
                and "close" not in self.hooks.hooks
            ):
                # Nothing left to wait for (no farewell, no hook, a plain socket): close
                # now, without a shielded scope and a trip through the scheduler.
                stream.close()
                self._closed()
            else:
                with trio.CancelScope(shield=True):
                    await self._finish(cancelled)

    def _log_opened(self, via: str | None = None) -> None:
        self.logger.info(
            f"Connection opened: id={self.session.id} peer={hostport(self.session.peer)}"
            + (f" via={via}" if via else "")
            + (" tls=implicit" if self.implicit_tls else "")
        )

    def _closed(self) -> None:
        """The bookkeeping of a closed connection: the address count and log lines."""
        self.metrics.connection_closed()
        txn = self.txn
        if txn is not None and txn.body.size:
            self.logger.info(
                f"Message dropped: id={txn.mail.id} (connection ended before the final dot)"
            )
            txn.discard()
        if self._admitted is not None:
            self.limiter.release(self._admitted)
            self._admitted = None
        self.logger.info(f"Connection closed: id={self.session.id} ({self.close_reason})")

    async def _finish(self, cancelled: bool) -> None:
        # Everything here is bounded: when the task was cancelled (grace over, or the
        # server's scope), by FAREWELL_TIMEOUT from now; during a graceful shutdown,
        # by FAREWELL_TIMEOUT past the end of the grace; otherwise by hook_timeout.
        deadline: float | None = None
        if cancelled:
            deadline = trio.current_time() + FAREWELL_TIMEOUT
        elif self._shutdown_deadline is not None:
            deadline = max(self._shutdown_deadline, trio.current_time()) + FAREWELL_TIMEOUT
        engine = self.engine
        if (
            engine.state is not State.CLOSED
            and self._end != "connection lost"
            and not self._sending  # no send after a cancelled send_all (see _timed_out)
        ):
            if self._end == "internal error":
                # A bug, not a shutdown: do not tell the client the server is going away.
                engine.close(CONNECT_FAILED)
            else:
                engine.close(SHUTTING_DOWN)
                self._end = "server shutdown"
            await self._send_last_words()
        await self.hooks.fire("close", self.session, deadline=deadline)
        if type(self.stream) is SocketTransport:
            await self.stream.aclose()  # a plain socket closes at once
        else:
            # TLS may try to send close_notify to a client that no longer reads.
            with trio.move_on_after(FAREWELL_TIMEOUT):
                try:
                    await self.stream.aclose()
                except _STREAM_ERRORS:
                    pass
        self._closed()

    async def _send_last_words(self) -> None:
        with trio.move_on_after(FAREWELL_TIMEOUT):
            try:
                await self.stream.send_all(self._count_replies(self.engine.data_to_send()))
            except _STREAM_ERRORS:
                pass

    async def _serve(self) -> None:
        if self.settings.data_factory is not None:
            # Called here, inside the connection boundary: a factory that raises ends
            # this connection with 421 4.3.0, not the server's accept loop.
            self.data = self.settings.data_factory()
        if self.config.proxy_protocol and not await self._read_proxy_header():
            return
        ip = self.session.peer[0]
        if not self.limiter.admit(ip):
            self.logger.warn(
                f"Connection refused: {ip} is at max_connections_per_ip "
                f"{self.config.max_connections_per_ip}"
            )
            self.engine.close(TOO_MANY_FROM_IP)
            self._end = "too many connections from address"
            await self._flush()
            return
        self._admitted = ip
        # Postfix's XCLIENT_README: only trusted proxies may say who the client is.
        self.engine.allow_xclient = self.settings.xclient_trusted(ip)
        if self.implicit_tls and not await self._handshake(implicit=True):
            return
        if not await self._greet_delay():
            return
        self.engine.greet(await self.hooks.connect_reply(self.session))
        if self.engine.state is State.CLOSED:
            self._end = "refused at connect"
            await self._flush()
            return
        await self._loop()

    async def _greet_delay(self) -> bool:
        """``greet_delay``: wait before the 220; a client that talks first gets 554."""
        greeting = self.settings.greeting
        if greeting is None or greeting.delay <= 0:
            return True
        seen = await greeting.wait(self.stream)
        if seen is None:
            return True
        if seen.left:
            self._end = "closed before the greeting"
            self.engine.close()
            return False
        # What it sent is never parsed: the connection ends here.
        self.logger.warn(
            f"Early talker: id={self.session.id} peer={hostport(self.session.peer)} sent "
            f"{seen.sent} bytes before the greeting"
        )
        self.engine.close(TALKED_FIRST)
        self._end = "talked before greeting"
        await self._flush()
        return False

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        # One cancel scope carries every I/O deadline of the connection: it is armed
        # with the command or data deadline before each flush-and-read, and lifted
        # only around hooks, the authenticator and TLS, which have timeouts of their
        # own. One scope per connection keeps Trio's per-scope cost off the
        # per-command path.
        #
        # Over a plain socket the scope's deadline may lag behind the exact one (see
        # _arm): moving a deadline costs Trio a heap update, and each command moves it
        # later. When such a stale deadline fires during a receive, which gives up no
        # data when cancelled (SocketTransport checks before the syscall), the loop
        # goes on under a new scope armed with the exact deadline: a timeout still
        # fires exactly when it is due, at the cost of one scope per timeout period.
        while True:
            with trio.CancelScope() as scope:
                self._io_scope = scope
                await self._events()
            self._io_scope = None
            if not scope.cancelled_caught:
                return
            if self._fired_early():
                self._read_cancelled = False
                continue
            await self._timed_out()
            return

    def _fired_early(self) -> bool:
        """Whether the scope fired at a stale deadline before the exact one (see _loop)."""
        if not self._read_cancelled or (self._shutdown and not self.engine.in_transaction):
            return False
        return trio.current_time() < self._io_deadline

    async def _events(self) -> None:
        engine = self.engine
        handlers = _HANDLERS
        replies = 0
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                data = await self._receive()
                if data is None:
                    return
                engine.receive_data(data)
                replies = 0
                continue
            if type(event) is MessageData:
                await self._body_data(event.data)
                continue
            handler = handlers.get(type(event))
            if handler is None:
                handler = _handler_for(event)
            if not await handler(self, event):
                return
            replies += 1
            if replies >= OUTPUT_BATCH:
                # The output cap: see OUTPUT_BATCH.
                replies = 0
                await self._flush()

    async def _unexpected(self, event: Any) -> bool:
        """An event this layer has no handler for: a bug, logged and answered."""
        self.logger.error(f"Connection {self.session.id}: unexpected engine event {event!r}")
        if isinstance(event, Event) and event.needs_reply:
            self.engine.respond(HOOK_FAILED)
            return True
        # PAUSED, or an event that leaves nothing to do: reading on would spin.
        self.engine.close(CONNECT_FAILED)
        self._end = "internal error"
        await self._flush()
        return False

    def _arm(self) -> None:
        """Set the I/O deadline for the wait ahead: a whole command, or a whole body."""
        scope = self._io_scope
        assert scope is not None
        if self.engine.reading_body:
            if self._data_deadline is None:
                self._data_deadline = trio.current_time() + self.config.data_timeout
            deadline = self._data_deadline
        else:
            # RFC 5321 §4.5.3.2.7: the wait for a command. Set when the wait starts and
            # kept until a whole line has arrived, so dribbling bytes does not extend it.
            if self._command_deadline is None:
                self._command_deadline = trio.current_time() + self.config.command_timeout
            deadline = self._command_deadline
        self._io_deadline = deadline
        self._lifted = False
        armed = scope.deadline
        if armed > deadline or (armed != deadline and type(self.stream) is not SocketTransport):
            # Never later than the exact deadline; earlier only over a plain socket,
            # whose receive can be retried when a stale deadline fires (see _loop).
            scope.deadline = deadline

    def _exact(self) -> None:
        """Arm the exact deadline of the wait that just ended (for awaits not retried)."""
        scope = self._io_scope
        if scope is not None and not self._lifted and scope.deadline != self._io_deadline:
            scope.deadline = self._io_deadline

    @property
    def _hook_bound(self) -> float:
        """How long a hook can take: itself and, if it fails, the ``error`` hook."""
        return 2 * self.config.hook_timeout

    def _disarm(self, bound: float | None = None) -> None:
        """Lift the I/O deadline: what comes next has its own timeout.

        Args:
            bound: That timeout, in seconds. The scope's deadline is then only pushed
                past it (to twice it, while that stays below both I/O timeouts, so
                the next wait need not move it again), and left alone when it is
                already later: moving a deadline is the expensive part.
        """
        scope = self._io_scope
        if scope is None:
            return
        self._lifted = True
        if bound is not None:
            now = trio.current_time()
            if scope.deadline >= now + bound + _DEADLINE_MARGIN:
                return
            config = self.config
            if 2 * bound <= min(config.command_timeout, config.data_timeout):
                scope.deadline = now + 2 * bound
                return
        if scope.deadline != math.inf:
            scope.deadline = math.inf

    async def _receive(self) -> bytes | None:
        """Flush the replies of the batch, then read, under the armed deadline."""
        self._arm()
        await self._flush()
        engine = self.engine
        if self._shutdown and not engine.in_transaction and engine.state is State.COMMAND:
            engine.close(SHUTTING_DOWN)
            self._end = "server shutdown"
            await self._flush()
            return None
        size = BODY_READ_SIZE if engine.reading_body else COMMAND_READ_SIZE
        self._reading = True
        try:
            data: bytes | bytearray | None = None
            stream = self.stream
            if self._reads_without_checkpoint < MAX_READS_WITHOUT_CHECKPOINT:
                # The client's next bytes are often already here: take them without a
                # trip through the scheduler, a few times in a row at most.
                data = receive_nowait(stream, size)
            if data is not None:
                self._reads_without_checkpoint += 1
            else:
                if self._reads_without_checkpoint < MAX_READS_WITHOUT_CHECKPOINT and (
                    type(stream) is SocketTransport
                ):
                    # Nothing there just now: wait (a checkpoint) without trying again.
                    data = await stream.receive_when_readable(size)
                else:
                    data = await stream.receive_some(size)
                self._reads_without_checkpoint = 0
        except trio.Cancelled:
            self._read_cancelled = True
            raise
        except (ssl.SSLError, trio.BrokenResourceError):
            self._end = "connection lost"
            engine.close()
            return None
        finally:
            self._reading = False
        # The deadline stays armed while the events are handled (no awaits there but
        # hooks, the authenticator and TLS, which disarm it first): one deadline
        # change per command instead of two.
        return bytes(data)

    async def _timed_out(self) -> None:
        """The armed deadline passed (or shutdown woke an idle read): 421 and close."""
        engine = self.engine
        if self._sending:
            # The client stopped reading. It would not read a 421 either, and Trio
            # forbids another send on a stream whose send_all was cancelled.
            engine.close()
            self._end = "send timeout"
            return
        if self._shutdown and not engine.in_transaction:
            engine.close(SHUTTING_DOWN)
            self._end = "server shutdown"
        else:
            engine.close(DATA_TIMEOUT if engine.reading_body else IDLE_TIMEOUT)
            self._end = "timeout"
        await self._send_last_words()

    def _count_replies(self, data: bytes) -> bytes:
        if self.metrics.enabled and data:
            # The last line of each reply ("250 ..." after any "250-...").
            for code in _REPLY_CODE.findall(data):
                self.metrics.reply(int(code))
        return data

    async def _flush(self) -> None:
        data = self._count_replies(self.engine.data_to_send())
        if not data:
            return
        sent = send_nowait(self.stream, data)
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
        self._sending = True
        scope = self._io_scope
        if scope is not None and not self._lifted and self._io_deadline != math.inf:
            self._exact()
            await self.stream.send_all(data)  # bounded by the armed deadline
        else:
            # A client that never reads must not hold the task forever.
            with trio.fail_after(self.config.command_timeout):
                await self.stream.send_all(data)
        self._sending = False

    # ------------------------------------------------------------------ TLS and PROXY

    async def _handshake(self, *, implicit: bool) -> bool:
        context = self.settings.ssl_context
        assert context is not None
        self._disarm()
        try:
            tls_stream = await start_tls(
                self.stream, context, limit=self.config.tls_handshake_timeout
            )
        except HandshakeFailed as exc:
            if exc.detail is None:
                self.logger.warn(f"TLS handshake timed out: id={self.session.id}")
                self._end = "TLS handshake timeout"
            else:
                self.logger.warn(f"TLS handshake failed: id={self.session.id} ({exc.detail})")
                self._end = "TLS handshake failed"
            self.metrics.tls_handshake(False)
            self.engine.close()
            return False
        self.stream = tls_stream
        self.metrics.tls_handshake(True)
        tls = self.session.tls = tls_info(tls_stream, implicit=implicit)
        self.logger.info(
            f"TLS established: id={self.session.id} {tls.version} {tls.cipher}"
            + (f" sni={tls.server_name}" if tls.server_name else "")
        )
        return True

    async def _read_proxy_header(self) -> bool:
        via = hostport(self.session.peer)
        failure = await accept_proxy_header(
            self.engine, self.stream, self.session, self.settings, self.logger
        )
        if failure is not None:
            self._end = failure
            self.engine.close()
        else:
            # The connection line names the client the header gave, and the proxy.
            bind(peer=hostport(self.session.peer))
            self._log_opened(via=via)
        return failure is None

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
        self._disarm(self._hook_bound)
        return await self.hooks.command_reply(name, event, self.mail)

    def _refused_for_shutdown(self) -> bool:
        """During shutdown a command outside a transaction gets 421 (RFC 5321 §3.8)."""
        if self._shutdown and not self.engine.in_transaction:
            self.engine.respond(SHUTTING_DOWN)
            self._end = "server shutdown"
            return True
        return False

    async def _command(self, event: Command) -> bool:
        self._command_deadline = None
        engine = self.engine
        if self._shutdown and not engine.in_transaction:
            engine.respond(SHUTTING_DOWN)  # RFC 5321 §3.8
            self._end = "server shutdown"
        else:
            if type(event) is MailFrom:
                self._messages += 1
                mail_id = f"{self.session.id}.{self._messages}"
                self.txn = Transaction.start(
                    event, session=self.session, mail_id=mail_id, spool=self.settings.spool
                )
                if self.settings.verifier is not None:  # SPF, for MAIL and RCPT hooks to read
                    self._exact()
                    await self.settings.verifier.mail_started(
                        self.txn.mail, authserv_id=self.settings.hostname
                    )
            reply = self._relay_refusal(event)
            if reply is None:
                reply = await self._hook_reply(event.verb, event)
            engine.respond(reply)
            if reply is not None and reply.code == 421 and engine.state is State.CLOSED:
                self._end = "closed by hook"
        # The engine decided what the reply means; the transaction follows it.
        if not engine.in_transaction:
            if self.txn is not None:
                self.txn.discard()  # RSET, HELO, a refused MAIL or BDAT chunk: nothing kept
            self.txn = None
            # A BDAT transfer ended by RSET, EHLO or a refused chunk: its deadline
            # must not carry over to the next message.
            self._data_deadline = None
        elif type(event) is RcptTo:
            txn = self.txn
            if txn is not None and engine.session.recipients > len(txn.mail.recipients):
                txn.add_recipient(event)
        return True

    def _relay_refusal(self, event: Command) -> Reply | None:
        """554 5.7.1 for a RCPT this client may not relay to (before any hook runs)."""
        policy = self.settings.relay_policy
        if policy is None or type(event) is not RcptTo:
            return None
        client = self.session.peer[0]
        authenticated = self.engine.session.authenticated_as is not None
        if policy.allows(authenticated=authenticated, client=client, recipient=event.address):
            return None
        self.logger.warn(
            f"Relay access denied: id={self.session.id} client {client} to <{event.address[:256]}>"
        )
        return RELAY_DENIED

    async def _starttls(self, event: StartTLS) -> bool:
        self._command_deadline = None
        if not self._refused_for_shutdown():
            # The STARTTLS hook runs after the handshake, when TLS details are known.
            self.engine.respond()
        return True

    async def _tls_upgrade(self, event: TLSUpgrade) -> bool:
        await self._flush()
        if not await self._handshake(implicit=False):
            return False
        self.engine.tls_started()  # RFC 3207 §4.2: the engine forgets the session
        if self.txn is not None:
            self.txn.discard()
        self.txn = None
        reply = await self._hook_reply("STARTTLS")
        if reply is not None and not reply.is_positive:
            self.engine.close(reply if reply.code == 421 else Reply(421, reply.text))
            self._end = "refused after STARTTLS"
            await self._flush()
            return False
        return True

    async def _auth(self, event: AuthCredentials) -> bool:
        self._command_deadline = None
        if self._refused_for_shutdown():
            return True
        reply = await self._auth_reply(event)
        engine = self.engine
        engine.respond(reply)
        if engine.session.authenticated_as is not None:
            self.logger.info(
                f"Authenticated: id={self.session.id} as {event.login!r} ({event.mechanism})"
            )
        else:
            self.metrics.auth_failure()
            self.logger.warn(
                f"Authentication failed: id={self.session.id} login {event.login!r} "
                f"from {self.session.peer[0]}"
            )
        return True

    async def _auth_reply(self, event: AuthCredentials) -> Reply | None:
        """The AUTH hook decides if it answers; else the authenticator, in a thread."""
        self._disarm()
        guard = self.settings.auth_guard
        ip = self.session.peer[0]
        if guard is not None and guard.blocked(ip):
            self.logger.warn(
                f"Authentication refused: id={self.session.id} {ip} has too many failed "
                "authentication attempts"
            )
            return TOO_MANY_AUTH_FAILURES
        reply = await self.hooks.auth_reply(event, self.mail)
        if reply is None:
            if event.authzid and event.authzid != event.login:
                # RFC 4616 §2: acting as someone else needs the AUTH hook's yes.
                reply = AUTHZID_REFUSED
            elif self.settings.authenticator is not None:
                limiter = guard.limiter if guard is not None else None
                reply = await self.hooks.authenticate(
                    self.settings.authenticator, event, limiter=limiter
                )
        if guard is not None and (reply is None or reply.code == 535):
            await guard.failed(ip)
        return reply

    # ------------------------------------------------------------------ messages

    async def _body_data(self, chunk: bytes) -> None:
        # A method, not inline in the loop: no local of the loop may hold the
        # transaction, whose Mail (and spool file) must go when the message is done.
        txn = self.txn
        assert txn is not None
        if not txn.append_nowait(chunk):
            # Waits for a spool write or for room in the memory budget: no more input is
            # read meanwhile (back-pressure), under the exact data deadline (not a stale
            # one: only a receive is retried when that fires, see _loop).
            self._exact()
            await txn.append(chunk)
        if "DATA_CHUNK" in self.hooks.hooks and txn.refusal is None:
            await self._chunk_hook(txn, chunk)

    async def _chunk_hook(self, txn: Transaction, chunk: bytes) -> None:
        """The ``DATA_CHUNK`` hook: a refusal now is the reply after the final dot."""
        self._disarm(self._hook_bound)
        hooks = self.hooks
        ctx = self._context("DATA_CHUNK", txn.mail, chunk=chunk, size=txn.body.size)
        result = await hooks.call("DATA_CHUNK", hooks.hooks["DATA_CHUNK"], ctx, mail=txn.mail)
        reply = await hooks.as_reply("DATA_CHUNK", result, txn.mail)
        if reply is not None and not reply.is_positive:
            txn.refuse(reply)

    async def _end_of_message(self, event: EndOfMessage) -> bool:
        self._data_deadline = None
        txn = self.txn
        assert txn is not None
        # The verifier has timeouts of its own (DNS), not hook_timeout.
        self._disarm(self._hook_bound if self.settings.verifier is None else None)
        refusal = txn.refusal
        if refusal is None:
            try:
                mail = await txn.finish()
            except Reply as storage_full:  # the spool disk was full: nothing was kept
                refusal = storage_full
        if refusal is not None:
            # SMTP has one reply for the message, LMTP one per recipient (RFC 2033 §4.2).
            self.engine.respond([refusal] * (len(txn.mail.recipients) if self.config.lmtp else 1))
            self._message_refused(refusal, txn)
            return True
        try:
            verdict = None
            if self.settings.verifier is not None:  # DKIM, DMARC, ARC; refusal: dmarc_enforce
                verdict = await self.settings.verifier.message_received(
                    mail, authserv_id=self.settings.hostname
                )
            if verdict is not None:
                replies = await self.hooks.message_replies(verdict, mail, lmtp=self.config.lmtp)
            else:
                replies = await self.hooks.deliver(mail, self.settings.sink, lmtp=self.config.lmtp)
        finally:
            txn.release()
        self.engine.respond(replies)
        self.txn = None
        # SMTP has one reply for the whole message, LMTP one per recipient.
        per_recipient = replies if self.config.lmtp else replies * len(mail.recipients)
        accepted = [
            r.address
            for r, reply in zip(mail.recipients, per_recipient, strict=True)
            if reply.is_positive
        ]
        if not accepted:
            # Released above, not discarded: the hook saw the Mail and may keep it; its
            # spool file closes when the last reference to the Mail goes.
            self._message_refused(replies[0], None, mail)
            return True
        self.session.messages += 1
        self.metrics.message("accepted", mail.content_size)
        # A sink that logs each message itself (the print sink, the CLI's sinks) says it.
        quiet = "done" not in self.hooks.hooks and getattr(
            self.settings.sink, "logs_messages", False
        )
        await log_message(
            self.logger, "debug" if quiet else "info", mail, "accepted", recipients=accepted
        )
        if self._shutdown:
            # The message is stored: its 250 must go out even if the grace period
            # ends now, or the client, told 421 instead, sends it again (a duplicate).
            with trio.CancelScope(shield=True), trio.move_on_after(FAREWELL_TIMEOUT):
                await self._flush()
        return True

    async def _message_rejected(self, event: MessageRejected) -> bool:
        self._data_deadline = None
        self._message_refused(event.reply, self.txn)
        return True

    def _message_refused(
        self, reply: Reply, txn: Transaction | None, mail: Mail | None = None
    ) -> None:
        if txn is not None:
            mail = txn.mail
            txn.discard()
        # A temporary refusal (a failing hook or sink, a full disk) is a failure on our side.
        self.metrics.message("failed" if reply.code // 100 == 4 else "refused")
        self.logger.info(
            f"Message refused: id={mail.id if mail else self.session.id} "
            f"from=<{mail.mail_from if mail else ''}> -> {reply}"
        )
        self.txn = None

    async def _xclient(self, event: Xclient) -> bool:
        """XCLIENT from a trusted proxy: what follows is about the client it names.

        Like a PROXY header, the new address is what hooks, limits, logs and the
        ``Received`` header see from now on; the engine has started the session over.
        """
        self._command_deadline = None
        if self._refused_for_shutdown():
            return True
        reply = await self._hook_reply(event.verb, event)
        self.engine.respond(reply)
        if reply is not None and not reply.is_positive:
            return True
        proxy = hostport(self.session.peer)
        if event.addr is not None:
            new_ip = event.addr
            if new_ip != self._admitted:
                # The per-address limit counts the real client, not the proxy.
                if self._admitted is not None:
                    self.limiter.release(self._admitted)
                    self._admitted = None
                if not self.limiter.admit(new_ip):
                    self.logger.warn(
                        f"Connection refused: {new_ip} is at max_connections_per_ip "
                        f"{self.config.max_connections_per_ip} (XCLIENT)"
                    )
                    self.engine.close(TOO_MANY_FROM_IP)
                    self._end = "too many connections from address"
                    return True
                self._admitted = new_ip
            port = event.port if event.port is not None else 0
            self.session.peer = (new_ip, port)
        bind(peer=hostport(self.session.peer))
        self.logger.info(
            f"XCLIENT: id={self.session.id} client {hostport(self.session.peer)}"
            + (f" name={event.name}" if event.name else "")
            + (f" helo={event.helo}" if event.helo else "")
            + (f" login={event.login}" if event.login else "")
            + f" via {proxy}"
        )
        return True

    async def _rejected(self, event: CommandRejected) -> bool:
        self._command_deadline = None
        self._data_deadline = None
        self.logger.debug(
            f"Command refused: id={self.session.id} {loggable(event.line)!r} -> {event.reply}"
        )
        return True

    async def _connection_closed(self, event: ConnectionClosed) -> bool:
        await self._flush()
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

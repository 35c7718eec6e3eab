"""One connection: feed the engine, await hooks, write replies, enforce timeouts.

Theory of operation: the task loops on :meth:`Engine.next_event`. ``NEED_DATA``
means the client's pipelined batch is exhausted: the task flushes every reply of the
batch in one ``send_all`` and reads again. Each wait has a deadline (RFC 5321
§4.5.3.2): ``command_timeout`` from the moment the server starts waiting for a command
until a whole line has arrived (bytes dribbled in do not move it), ``data_timeout`` for
a whole DATA body or BDAT chunk. Hooks run under ``hook_timeout``. Anything a hook
raises except :class:`Reply` becomes 451 4.3.0 and an ``error`` event, and the
session goes on. Transport errors end only this connection.

Graceful shutdown: :meth:`ConnectionTask.begin_shutdown` lets a transaction in
progress finish; a connection that is idle, or finishes its transaction, gets
421 4.3.2 and is closed. If the server's grace period runs out the task is
cancelled, and still sends a best-effort 421 under a shielded, short scope.
"""

from __future__ import annotations

import errno
import itertools
import math
import secrets
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from ._mail import Mail, Recipient
from ._schema import Context, Hook, call_hook
from ._session import ProxyInfo, Session
from ._tls import tls_info
from .engine import (
    NEED_DATA,
    AuthCredentials,
    Bdat,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Engine,
    Helo,
    MailFrom,
    MessageData,
    MessageRejected,
    RcptTo,
    Reply,
    Rset,
    StartTLS,
    State,
    TLSUpgrade,
)
from .engine._proxy import ProxyHeaderError, parse_proxy_header
from .engine._state import SEQUENCE
from .sinks import PrintSink

if TYPE_CHECKING:
    from ._server import Server

#: Bytes asked of the socket per read while reading commands, and while reading a body.
COMMAND_READ_SIZE: Final = 16384
BODY_READ_SIZE: Final = 262144
#: How long the last words (a 421) may take to send when the task is being cancelled.
FAREWELL_TIMEOUT: Final = 1.0

HOOK_FAILED: Final = Reply(451, "4.3.0 local error in processing; try again later")
SHUTTING_DOWN: Final = Reply(421, "4.3.2 service shutting down, try again later")
IDLE_TIMEOUT: Final = Reply(421, "4.4.2 timeout waiting for a command; closing connection")
DATA_TIMEOUT: Final = Reply(421, "4.4.2 timeout waiting for message data; closing connection")
CONNECT_FAILED: Final = Reply(421, "4.3.0 local error in processing; try again later")
TOO_MANY_FROM_IP: Final = Reply(421, "4.7.0 too many connections from your address")

_ids = itertools.count(1)
_ID_PREFIX: Final = secrets.token_hex(3)


def new_session_id() -> str:
    """A short identifier, unique in this process, for logs and ``Received`` headers."""
    return f"{_ID_PREFIX}{next(_ids):06x}"


class HookTimeout(Exception):
    """A hook took longer than ``hook_timeout``."""

    def __init__(self, event: str, seconds: float) -> None:
        super().__init__(f"hook {event!r} did not finish within {seconds:g} s")
        self.event = event
        self.seconds = seconds


class HookReturnError(TypeError):
    """A hook returned something that is not a reply."""


class _PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream that first gives back bytes already read (after a PROXY header)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            if max_bytes is None:
                max_bytes = len(self._prefix)
            out, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return out
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class ConnectionTask:
    """Serves one client connection.

    Args:
        server: The server this connection belongs to.
        stream: The accepted stream.
        peer: The client's ``(host, port)``.
        local: The server's ``(host, port)``.
        implicit_tls: Whether the TLS handshake comes first (SMTPS, RFC 8314).
    """

    def __init__(
        self,
        server: Server,
        stream: trio.abc.Stream,
        *,
        peer: tuple[str, int],
        local: tuple[str, int] | None,
        implicit_tls: bool,
    ) -> None:
        self.server = server
        self.config = server.config
        self.stream: trio.abc.Stream = stream
        self.implicit_tls = implicit_tls
        self.session = Session(
            id=new_session_id(),
            peer=peer,
            local=local,
            hostname=server.hostname,
            lmtp=server.config.lmtp,
        )
        self.engine = Engine(server.engine_config, tls_active=False)
        self.data: Any = None
        self.hooks: Mapping[str, Hook] = server.hooks
        self.logger = server.logger
        self.mail: Mail | None = None
        self.close_reason = "closed"
        self._chunks: list[bytes] = []
        self._messages = 0
        self._command_deadline: float | None = None
        self._data_deadline: float | None = None
        self._io_scope: trio.CancelScope | None = None
        self._reading = False
        #: True while a send_all is in progress, and still True if it was cancelled.
        self._sending = False
        self._raw = _raw_socket(stream)
        self._shutdown = False
        self._counted_ip: str | None = None

    def __repr__(self) -> str:
        return f"<ConnectionTask {self.session.id} peer={self.session.peer!r}>"

    # ------------------------------------------------------------------ lifecycle

    def begin_shutdown(self) -> None:
        """Ask the connection to finish its transaction, then say 421 and close."""
        self._shutdown = True
        scope = self._io_scope
        if scope is not None and self._reading and not self.engine.in_transaction:
            scope.cancel()

    async def run(self) -> None:
        """Serve the connection until it ends; never raises except ``Cancelled``."""
        log = self.logger
        log.info(
            f"Connection opened: id={self.session.id} peer={_hostport(self.session.peer)}"
            + (" tls=implicit" if self.implicit_tls else "")
        )
        try:
            await self._serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close_reason = "connection lost"
        except trio.TooSlowError:
            self.close_reason = "send timeout"
        except OSError as exc:
            self.close_reason = f"socket error ({errno.errorcode.get(exc.errno or 0, exc)})"
        except Exception as exc:  # the connection boundary: nothing escapes to the server
            self.close_reason = "internal error"
            log.error(f"Connection {self.session.id}: internal error {exc!r}")
        finally:
            stream = self.stream
            if (
                self.engine.state is State.CLOSED
                and self._raw is not None
                and isinstance(stream, trio.SocketStream)
                and "close" not in self.hooks
            ):
                # Nothing left to wait for (no farewell, no hook, a plain socket): close
                # now, without a shielded scope and a trip through the scheduler.
                stream.socket.close()
                self._closed()
            else:
                with trio.CancelScope(shield=True):
                    await self._finish()

    def _closed(self) -> None:
        """The bookkeeping of a closed connection: per-IP count and log lines."""
        if self.mail is not None and self._chunks:
            self.logger.info(
                f"Message dropped: id={self.mail.id} (connection ended before the final dot)"
            )
        if self._counted_ip is not None:
            self.server._release_ip(self._counted_ip)
            self._counted_ip = None
        self.logger.info(f"Connection closed: id={self.session.id} ({self.close_reason})")

    async def _finish(self) -> None:
        if (
            self.engine.state is not State.CLOSED
            and self.close_reason != "connection lost"
            and not self._sending  # no send after a cancelled send_all (see _timed_out)
        ):
            if self.close_reason == "internal error":
                # A bug, not a shutdown: do not tell the client the server is going away.
                self.engine.close(CONNECT_FAILED)
            else:
                # Cancelled (grace period over, or the server's scope): say goodbye.
                self.engine.close(SHUTTING_DOWN)
                self.close_reason = "server shutdown"
            with trio.move_on_after(FAREWELL_TIMEOUT):
                try:
                    await self.stream.send_all(self.engine.data_to_send())
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        await self._fire("close", self.session)
        if self._raw is not None:
            await self.stream.aclose()  # a plain socket closes at once
        else:
            # TLS may try to send close_notify to a client that no longer reads.
            with trio.move_on_after(FAREWELL_TIMEOUT):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        self._closed()

    async def _serve(self) -> None:
        if self.server.data_factory is not None:
            # Called here, inside the connection boundary: a factory that raises ends
            # this connection with 421 4.3.0, not the server's accept loop.
            self.data = self.server.data_factory()
        if self.config.proxy_protocol:
            if not await self._read_proxy_header():
                return
        if not self.server._admit_ip(self.session.peer[0]):
            self.engine.close(TOO_MANY_FROM_IP)
            self.close_reason = "too many connections from address"
            await self._flush()
            return
        self._counted_ip = self.session.peer[0]
        if self.implicit_tls:
            if not await self._handshake(implicit=True):
                return
            self.engine.tls_active = True
        greeting = await self._connect_hook()
        self.engine.greet(greeting)
        if self.engine.state is State.CLOSED:
            self.close_reason = "refused at connect"
            await self._flush()
            return
        await self._loop()

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        # One cancel scope carries every I/O deadline of the connection: it is armed
        # with the command or data deadline before each flush-and-read, and disarmed
        # only around hooks, the authenticator and TLS, which have timeouts of their
        # own. One scope per connection keeps Trio's per-scope cost off the
        # per-command path.
        with trio.CancelScope() as scope:
            self._io_scope = scope
            await self._events()
        self._io_scope = None
        if scope.cancelled_caught:
            await self._timed_out()

    async def _events(self) -> None:
        engine = self.engine
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                data = await self._receive()
                if data is None:
                    return
                engine.receive_data(data)
                continue
            if isinstance(event, MessageData):
                self._chunks.append(event.data)
                continue
            if isinstance(event, Command):
                self._command_deadline = None
                await self._command(event)
                if not engine.in_transaction:
                    # A BDAT transfer ended by RSET, EHLO or a refused chunk: its
                    # deadline must not carry over to the next message.
                    self._data_deadline = None
            elif isinstance(event, EndOfMessage):
                self._data_deadline = None
                await self._end_of_message(event)
            elif isinstance(event, CommandRejected):
                self._command_deadline = None
                self._data_deadline = None
                self.logger.debug(
                    f"Command refused: id={self.session.id} {_loggable(event.line)!r} "
                    f"-> {event.reply}"
                )
            elif isinstance(event, MessageRejected):
                self._data_deadline = None
                self._message_refused(event.reply)
            elif isinstance(event, TLSUpgrade):
                await self._flush()
                if not await self._handshake(implicit=False):
                    return
                engine.tls_started()
                self.mail = None
                self.session.helo_name = None
                self.session.esmtp = False
                self.session.authenticated_as = None
                self.session.auth_mechanism = None
                reply = await self._hook_reply("STARTTLS")
                if reply is not None and not reply.is_positive:
                    engine.close(reply if reply.code == 421 else Reply(421, reply.text))
                    self.close_reason = "refused after STARTTLS"
                    await self._flush()
                    return
            elif isinstance(event, ConnectionClosed):
                # Keep a more precise reason set while answering the command
                # ("too many authentication failures", "closed by hook" ...).
                if self.close_reason == "closed":
                    self.close_reason = event.reason
                await self._flush()
                if event.reason == "starttls-injection":
                    self.logger.warn(
                        f"Connection {self.session.id}: data sent after STARTTLS in the same "
                        "flight (command injection attempt); dropped"
                    )
                return
            else:  # PAUSED or an event this layer does not expect
                return

    def _arm(self) -> None:
        """Set the I/O deadline for the wait ahead: a whole command, or a whole body."""
        scope = self._io_scope
        assert scope is not None
        if self.engine.reading_body:
            if self._data_deadline is None:
                self._data_deadline = trio.current_time() + self.config.data_timeout
            scope.deadline = self._data_deadline
        else:
            # RFC 5321 §4.5.3.2.7: the wait for a command. Set when the wait starts and
            # kept until a whole line has arrived, so dribbling bytes does not extend it.
            if self._command_deadline is None:
                self._command_deadline = trio.current_time() + self.config.command_timeout
            scope.deadline = self._command_deadline

    async def _receive(self) -> bytes | None:
        """Flush the replies of the batch, then read, under the armed deadline."""
        self._arm()
        await self._flush()
        engine = self.engine
        if self._shutdown and not engine.in_transaction and engine.state is State.COMMAND:
            engine.close(SHUTTING_DOWN)
            self.close_reason = "server shutdown"
            await self._flush()
            return None
        size = BODY_READ_SIZE if engine.reading_body else COMMAND_READ_SIZE
        self._reading = True
        try:
            raw = self._raw
            if raw is not None:
                data = await _raw_receive(raw, size)
            else:
                data = bytes(await self.stream.receive_some(size))
        except (ssl.SSLError, trio.BrokenResourceError):
            self.close_reason = "connection lost"
            engine.close()
            return None
        finally:
            self._reading = False
        # The deadline stays armed while the events are handled (no awaits there but
        # hooks, the authenticator and TLS, which disarm it first): one deadline
        # change per command instead of two.
        return data

    async def _timed_out(self) -> None:
        """The armed deadline passed (or shutdown woke an idle read): 421 and close."""
        engine = self.engine
        if self._sending:
            # The client stopped reading. It would not read a 421 either, and Trio
            # forbids another send on a stream whose send_all was cancelled.
            engine.close()
            self.close_reason = "send timeout"
            return
        if self._shutdown and not engine.in_transaction:
            engine.close(SHUTTING_DOWN)
            self.close_reason = "server shutdown"
        else:
            engine.close(DATA_TIMEOUT if engine.reading_body else IDLE_TIMEOUT)
            self.close_reason = "timeout"
        with trio.move_on_after(FAREWELL_TIMEOUT):
            try:
                await self.stream.send_all(engine.data_to_send())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _flush(self) -> None:
        data = self.engine.data_to_send()
        if not data:
            return
        scope = self._io_scope
        raw = self._raw
        if raw is not None:
            # Replies are small and the socket buffer is large: one send() nearly always
            # takes all of it, without a trip through Trio's scheduler.
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket send failed: {exc}") from exc
            if sent == len(data):
                return
            data = data[sent:]
        self._sending = True
        if scope is not None and scope.deadline != math.inf:
            await self.stream.send_all(data)  # bounded by the armed deadline
        else:
            # A client that never reads must not hold the task forever.
            with trio.fail_after(self.config.command_timeout):
                await self.stream.send_all(data)
        self._sending = False

    # ------------------------------------------------------------------ TLS and PROXY

    async def _handshake(self, *, implicit: bool) -> bool:
        context = self.server.ssl_context
        assert context is not None
        ssl_stream = trio.SSLStream(self.stream, context, server_side=True)
        self._disarm()
        with trio.move_on_after(self.config.tls_handshake_timeout) as scope:
            try:
                await ssl_stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                self.logger.warn(f"TLS handshake failed: id={self.session.id} ({cause})")
                self.close_reason = "TLS handshake failed"
                self.engine.close()
                return False
        if scope.cancelled_caught:
            self.logger.warn(f"TLS handshake timed out: id={self.session.id}")
            self.close_reason = "TLS handshake timeout"
            self.engine.close()
            return False
        self.stream = ssl_stream
        self._raw = None
        self.session.tls = tls_info(ssl_stream, implicit=implicit)
        tls = self.session.tls
        self.logger.info(
            f"TLS established: id={self.session.id} {tls.version} {tls.cipher}"
            + (f" sni={tls.server_name}" if tls.server_name else "")
        )
        return True

    async def _read_proxy_header(self) -> bool:
        peer_ip = self.session.peer[0]
        if not self.server._proxy_trusted(peer_ip):
            self.logger.warn(
                f"Connection {self.session.id}: {peer_ip} is not allowed to send a PROXY header"
            )
            self.close_reason = "untrusted proxy"
            self.engine.close()
            return False
        buf = bytearray()
        with trio.move_on_after(self.config.proxy_timeout):
            while True:
                chunk = await self.stream.receive_some(COMMAND_READ_SIZE)
                if not chunk:
                    break
                buf += chunk
                try:
                    header, used = parse_proxy_header(buf)
                except ProxyHeaderError as exc:
                    self.logger.warn(f"Bad PROXY header: id={self.session.id} ({exc})")
                    break
                if header is None:
                    continue
                # The engine waits for this header too (State.PROXY): hand it the same
                # octets so that it moves on to the greeting.
                self.engine.receive_data(buf[:used])
                self.engine.next_event()
                if self.engine.state is not State.CONNECTED:
                    break
                if not header.local and header.source is not None:
                    self.session.peer = header.source
                    self.session.local = header.destination
                self.session.proxy = ProxyInfo(
                    version=header.version,
                    source=header.source,
                    destination=header.destination,
                    tlvs=header.tlvs,
                )
                self.logger.debug(
                    f"PROXY v{header.version}: id={self.session.id} client "
                    f"{_hostport(self.session.peer)} via {peer_ip}"
                )
                if used < len(buf):
                    self.stream = _PrefixedStream(self.stream, bytes(buf[used:]))
                    self._raw = None
                return True
        self.close_reason = "no valid PROXY header"
        self.engine.close()
        return False

    # ------------------------------------------------------------------ hooks

    def _context(self, *, event_name: str, **fields: Any) -> Context:
        return Context(
            command=event_name,
            session=self.session,
            mail=self.mail,
            data=self.data,
            logger=self.logger,
            deps=self.server.deps,
            **fields,
        )

    async def _fire(self, name: str, *args: Any) -> None:
        """Run a lifecycle hook whose result does not matter (``close``)."""
        hook = self.hooks.get(name)
        if hook is None:
            return
        try:
            with trio.fail_after(self.config.hook_timeout):
                await call_hook(hook, *args)
        except Exception as exc:
            self.logger.error(f"Hook {name!r} failed: id={self.session.id} {exc!r}")

    async def _error(self, error: BaseException) -> None:
        self.logger.error(f"Hook failed: id={self.session.id} {error!r}")
        await self._fire("error", error, self.mail)

    def _disarm(self) -> None:
        """Lift the I/O deadline: what comes next has its own timeout."""
        scope = self._io_scope
        if scope is not None and scope.deadline != math.inf:
            scope.deadline = math.inf

    async def _call(self, name: str, hook: Callable[..., Any], *args: Any) -> Any:
        """Call a hook under ``hook_timeout``; a ``Reply`` it raises is returned."""
        self._disarm()
        try:
            with trio.fail_after(self.config.hook_timeout):
                return await call_hook(hook, *args)
        except Reply as reply:
            return reply
        except trio.TooSlowError:
            await self._error(HookTimeout(name, self.config.hook_timeout))
            return HOOK_FAILED
        except Exception as exc:
            await self._error(exc)
            return HOOK_FAILED

    async def _hook_reply(self, name: str, event: Command | None = None) -> Reply | None:
        """Run the hook for ``name``: ``None`` means the default reply.

        The context is built only when there is a hook: commands without one (the
        common case) cost nothing here.
        """
        hook = self.hooks.get(name)
        if hook is None:
            return None
        fields: dict[str, Any] = {}
        if event is not None:
            fields["argument"] = event.argument
            if isinstance(event, MailFrom | RcptTo):
                fields.update(address=event.address, params=event.params)
            elif isinstance(event, Bdat):
                fields.update(size=event.size, last=event.last)
        result = await self._call(name, hook, self._context(event_name=name, **fields))
        return await self._as_reply(name, result)

    async def _as_reply(self, name: str, result: Any) -> Reply | None:
        if result is None or result is True:
            return None
        if isinstance(result, Reply):
            return result
        if result is False:
            return Reply(550, "5.7.1 rejected")
        await self._error(HookReturnError(f"hook {name!r} returned {result!r}, not a Reply"))
        return HOOK_FAILED

    async def _connect_hook(self) -> Reply | None:
        hook = self.hooks.get("connect")
        if hook is None:
            return None
        result = await self._call("connect", hook, self.session)
        if result is HOOK_FAILED:
            return CONNECT_FAILED
        if result is None or result is True:
            return None
        if result is False:
            return Reply(554, "5.7.1 connection refused")
        if isinstance(result, Reply):
            if result.code != 220 and result.is_positive:
                return None
            return result
        await self._error(HookReturnError(f"hook 'connect' returned {result!r}, not a Reply"))
        return CONNECT_FAILED

    # ------------------------------------------------------------------ commands

    async def _command(self, event: Command) -> None:
        engine = self.engine
        if self._shutdown and not engine.in_transaction and not isinstance(event, StartTLS):
            engine.respond(SHUTTING_DOWN)
            self.close_reason = "server shutdown"
            return
        if isinstance(event, AuthCredentials):
            await self._auth(event)
            return
        if isinstance(event, StartTLS):
            # The STARTTLS hook runs after the handshake, when TLS details are known.
            engine.respond()
            return
        name = event.verb
        if isinstance(event, MailFrom):
            self.mail = self._new_mail(event)
            self._chunks = []
        reply = await self._hook_reply(name, event)
        engine.respond(reply)
        positive = reply is None or reply.is_positive
        if isinstance(event, Helo) and positive:
            self.session.helo_name = event.name
            self.session.esmtp = event.extended
            self.mail = None
        elif isinstance(event, MailFrom) and not positive:
            self.mail = None
        elif isinstance(event, RcptTo) and positive and self.mail is not None:
            self.mail.recipients.append(
                Recipient(
                    address=event.address,
                    params=event.params,
                    notify=event.notify,
                    orcpt=event.orcpt,
                )
            )
        elif isinstance(event, Data) and positive:
            self._chunks = []
        elif isinstance(event, Bdat) and not positive:
            self._chunks = []
            self.mail = None
        elif isinstance(event, Rset):
            self._chunks = []
            self.mail = None
        if engine.state is State.CLOSED and reply is not None and reply.code == 421:
            self.close_reason = "closed by hook"

    def _new_mail(self, event: MailFrom) -> Mail:
        self._messages += 1
        return Mail(
            id=f"{self.session.id}.{self._messages}",
            session=self.session,
            mail_from=event.address,
            mail_params=event.params,
            body_type=event.body,
            smtputf8=event.smtputf8,
            size=event.size,
            ret=event.ret,
            envid=event.envid,
            auth=event.auth,
        )

    async def _auth(self, event: AuthCredentials) -> None:
        ctx = self._context(
            event_name="AUTH",
            argument=event.mechanism,
            mechanism=event.mechanism,
            login=event.login,
            password=event.password,
        )
        reply: Reply | None = None
        hook = self.hooks.get("AUTH")
        decided = False
        if hook is not None:
            result = await self._call("AUTH", hook, ctx)
            if result is True:
                reply, decided = Reply(235, "2.7.0 authentication successful"), True
            elif result is False:
                reply, decided = Reply(535, "5.7.8 authentication credentials invalid"), True
            elif isinstance(result, Reply):
                reply, decided = result, True
            elif result is not None:
                await self._error(HookReturnError(f"hook 'AUTH' returned {result!r}"))
                reply, decided = HOOK_FAILED, True
        if not decided and self.server.authenticator is not None:
            self._disarm()
            ok = False
            try:
                # Bounded like a hook; a thread that overruns is abandoned, not waited for.
                with trio.fail_after(self.config.hook_timeout):
                    ok = await trio.to_thread.run_sync(
                        self.server.authenticator,
                        event.mechanism,
                        event.login,
                        event.password,
                        abandon_on_cancel=True,
                    )
            except trio.TooSlowError:
                await self._error(HookTimeout("authenticator", self.config.hook_timeout))
                reply, ok = HOOK_FAILED, False
            except Exception as exc:
                # Like a failing hook: 451 and the error event, not a dropped connection.
                await self._error(exc)
                reply, ok = HOOK_FAILED, False
            if ok:
                reply = Reply(235, "2.7.0 authentication successful")
        self.engine.respond(reply)
        if self.engine.authenticated_as is not None:
            self.session.authenticated_as = self.engine.authenticated_as
            self.session.auth_mechanism = event.mechanism
            self.logger.info(
                f"Authenticated: id={self.session.id} as {event.login!r} ({event.mechanism})"
            )
        else:
            self.logger.warn(
                f"Authentication failed: id={self.session.id} login {event.login!r} "
                f"from {self.session.peer[0]}"
            )
            if self.engine.state is State.CLOSED:
                self.close_reason = "too many authentication failures"

    # ------------------------------------------------------------------ messages

    async def _end_of_message(self, event: EndOfMessage) -> None:
        mail = self.mail
        assert mail is not None
        mail.content = b"".join(self._chunks)
        self._chunks = []
        hook = self.hooks.get("done")
        if hook is not None:
            result = await self._call("done", hook, mail)
        else:
            result = await self._call("done", self.server.sink.deliver, mail)
        replies = await self._message_replies(mail, result, event)
        self.engine.respond(replies)
        self.mail = None
        # SMTP has one reply for the whole message, LMTP one per recipient.
        per_recipient = replies if self.config.lmtp else replies * len(mail.recipients)
        accepted = [
            r.address
            for r, reply in zip(mail.recipients, per_recipient, strict=True)
            if reply.is_positive
        ]
        if accepted:
            self.session.messages += 1
            # The default print sink already logs a summary line for each message.
            quiet = hook is None and isinstance(self.server.sink, PrintSink)
            (self.logger.debug if quiet else self.logger.info)(
                f"Message accepted: id={mail.id} from=<{mail.mail_from}> "
                f"to={','.join(f'<{a}>' for a in accepted)} size={len(mail.content)}"
            )
            if self._shutdown:
                # The message is stored: its 250 must go out even if the grace period
                # ends now, or the client, told 421 instead, sends it again (a duplicate).
                with trio.CancelScope(shield=True), trio.move_on_after(FAREWELL_TIMEOUT):
                    await self._flush()
        else:
            self._message_refused(replies[0], mail)

    async def _message_replies(self, mail: Mail, result: Any, event: EndOfMessage) -> list[Reply]:
        n = len(mail.recipients)
        if self.config.lmtp:
            default = [Reply(250, f"2.1.5 <{r.address}> delivered") for r in mail.recipients]
            if isinstance(result, Mapping):
                return [
                    await self._as_reply("done", result.get(r.address)) or default[i]
                    for i, r in enumerate(mail.recipients)
                ]
            if isinstance(result, list | tuple):
                if len(result) != n:
                    await self._error(
                        HookReturnError(
                            f"hook 'done' returned {len(result)} replies for {n} recipients"
                        )
                    )
                    return [HOOK_FAILED] * n
                return [
                    await self._as_reply("done", item) or default[i]
                    for i, item in enumerate(result)
                ]
            reply = await self._as_reply("done", result)
            return default if reply is None else [reply] * n
        reply = await self._as_reply("done", result)
        return [reply or Reply(250, f"2.0.0 OK queued as {mail.id}")]

    def _message_refused(self, reply: Reply, mail: Mail | None = None) -> None:
        mail = mail or self.mail
        self._chunks = []
        self.logger.info(
            f"Message refused: id={mail.id if mail else self.session.id} "
            f"from=<{mail.mail_from if mail else ''}> -> {reply}"
        )
        self.mail = None


def _raw_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The stdlib socket under a plain :class:`trio.SocketStream`, for the fast path.

    Per command, the connection does one send and one receive. Done through the raw
    non-blocking socket (a send that completes at once needs no trip through the
    scheduler; a receive that would block waits with ``wait_readable``), they cost
    about half of what ``SocketStream``'s generic path does (profiled with cProfile
    and smtp-source). Anything else (TLS, a PROXY prefix) uses the stream's methods.
    """
    if type(stream) is not trio.SocketStream:
        return None
    raw = getattr(stream.socket, "_sock", None)  # trio's socket wraps a stdlib one
    return raw if isinstance(raw, socket.socket) else None


async def _raw_receive(raw: socket.socket, size: int) -> bytes:
    """``recv`` on a non-blocking socket: a checkpoint, like any Trio receive."""
    try:
        data = raw.recv(size)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise trio.BrokenResourceError(f"socket receive failed: {exc}") from exc
    else:
        await trio.lowlevel.checkpoint()
        return data
    while True:
        await trio.lowlevel.wait_readable(raw)
        try:
            return raw.recv(size)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket receive failed: {exc}") from exc


def _hostport(addr: tuple[str, int] | None) -> str:
    if addr is None:
        return "-"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loggable(line: str) -> str:
    """A command line safe to log: AUTH arguments (secrets) are cut off."""
    if line[:4].upper() == "AUTH":
        return line[:4] + " ..."
    # A lone word that is no command may be a SASL response sent without waiting
    # for a 334 that never came (AUTH refused): base64 credentials, never logged.
    if " " not in line and line.upper() not in SEQUENCE:
        return f"<{len(line)} characters not shown>"
    return line[:200]

"""Test servers: one builder, a Trio handle and a threaded one, with the same conveniences.

:func:`serving` runs a server in the caller's Trio run for the body of an ``async with``;
:class:`ThreadedServer` runs one in a thread of its own for synchronous code. Both are
built by :func:`build_server` (defaults for tests, the ``tls``/``auth``/``lmtp``
shortcuts, a recording logger and the failure-injection wrappers) and share
:class:`TestServerBase`: messages, assertions, failure injection and the event log.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from .._mail import Mail
from .._server import Server
from ..sinks import MemorySink
from ._client import CLIENT_TIMEOUT, SMTPClient
from ._faults import Faults
from ._logger import RecordingLogger
from ._tls import TestCertificate, shared_certificate

if TYPE_CHECKING:
    import ssl

#: How long :meth:`ThreadedServer.start` waits for the listener before giving up.
START_TIMEOUT: Final = 30.0
#: What :meth:`wait_for` waits by default: a hang guard, not a speed requirement.
WAIT_TIMEOUT: Final = 30.0
#: The configuration of a test server, under what the test gives.
TEST_CONFIG: Final[Mapping[str, Any]] = {
    "host": "127.0.0.1",
    "port": 0,
    "hostname": "localhost",
    "shutdown_grace": 1.0,
}


def build_server(
    schema: Mapping[str, Any] | None = None,
    dependencies: Mapping[str, Any] | None = None,
    *,
    tls: bool = False,
    auth: Mapping[str, str] | None = None,
    lmtp: bool = False,
    faults: bool = True,
    **config: Any,
) -> tuple[Server, Faults, TestCertificate | None]:
    """A :class:`~trio_smtp.Server` set up for a test, not yet serving.

    Args:
        schema: As for :class:`~trio_smtp.Server`.
        dependencies: As for :class:`~trio_smtp.Server`; the sink defaults to a
            :class:`~trio_smtp.sinks.MemorySink`, the logger to a :class:`RecordingLogger`.
        tls: Offer STARTTLS with a trustme certificate for ``localhost`` (add
            ``tls_port=0`` for implicit TLS too).
        auth: Users and passwords to accept with AUTH PLAIN and LOGIN. Without ``tls``,
            AUTH is allowed in the clear (``auth_insecure``) unless the test says not.
        lmtp: Speak LMTP instead of SMTP.
        faults: Wrap the hooks for failure injection and the event log (the default).
            ``False`` runs the test's hooks exactly as given, for tests of the server's
            own hook handling; :meth:`~TestServerBase.fail` and friends then refuse.
        **config: Any configuration key; wins over ``schema["config"]`` and the defaults
            (127.0.0.1, port 0, hostname ``localhost``, a 1 s shutdown grace).

    Returns:
        The server, its failure-injection plan, and the certificate when ``tls`` is set.
    """
    schema = dict(schema or {})
    cfg: dict[str, Any] = {**TEST_CONFIG, **dict(schema.get("config") or {})}
    certificate = None
    if tls:
        certificate = shared_certificate()
        cfg.setdefault("tls_cert", str(certificate.cert_file))
        cfg.setdefault("tls_key", str(certificate.key_file))
    if lmtp:
        cfg["lmtp"] = True
    deps = dict(dependencies or {})
    if auth is not None:
        deps.setdefault("authenticator", _Users(auth))
        if not tls:
            cfg.setdefault("auth_insecure", True)
    cfg.update(config)
    deps.setdefault("sink", MemorySink())
    deps.setdefault("logger", RecordingLogger())
    plan = Faults(enabled=faults)
    schema["config"] = cfg
    if faults:
        schema["events"] = plan.wrap(dict(schema.get("events") or {}), deps["sink"])
    return Server(schema, deps), plan, certificate


class _Users:
    """An ``authenticator`` that knows a fixed set of users (compared in constant time)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def __repr__(self) -> str:
        return f"<test users {sorted(self._users)}>"  # never the passwords

    def __call__(self, mechanism: str, login: str, password: str) -> bool:
        expected = self._users.get(login)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


def _summary(mail: Mail) -> str:
    subject = mail.message["Subject"]
    return f"{mail.id} from <{mail.mail_from}> to {mail.rcpt_tos} subject {subject!r}"


class TestServerBase:
    """What every test server offers: where it listens, what it received, what happened.

    Attributes:
        server: The :class:`~trio_smtp.Server`.
        faults: Its failure-injection plan (also reachable as :meth:`fail`, :meth:`delay`,
            :meth:`tempfail_rate`).
        certificate: The test certificate when started with ``tls=True``, else ``None``.
        addresses: Every bound ``(host, port)``, in the order of the listeners.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, server: Server, faults: Faults, certificate: TestCertificate | None) -> None:
        self.server = server
        self.faults = faults
        self.certificate = certificate
        self.addresses: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.addresses else "not serving"
        return f"<{type(self).__name__} {where} messages={len(self.messages)}>"

    @property
    def host(self) -> str:
        """The first listener's address."""
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        """The first listener's port."""
        return self.addresses[0][1]

    @property
    def sink(self) -> Any:
        """Where messages go (a :class:`~trio_smtp.sinks.MemorySink` unless the test said)."""
        return self.server.sink

    @property
    def logger(self) -> Any:
        """The server's logger (a :class:`RecordingLogger` unless the test said)."""
        return self.server.logger

    @property
    def log_lines(self) -> list[str]:
        """What the server logged, as ``[LEVEL] message`` (with the default logger)."""
        logger = self.server.logger
        if not isinstance(logger, RecordingLogger):
            return []
        return [f"[{level.upper()}] {message}" for level, message in logger.lines]

    @property
    def log(self) -> list[str]:
        """Each hooked event and what failure injection did to it, in order.

        For example ``["connect 127.0.0.1", "EHLO client.test", "MAIL a@example.org",
        "RCPT ann@example.com -> 451 4.3.0 try later", ...]``.
        """
        with self.faults._lock:
            return list(self.faults.log)

    @property
    def client_ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts this server's certificate (``tls=True`` only)."""
        if self.certificate is None:
            raise RuntimeError("this test server has no certificate: start it with tls=True")
        return self.certificate.client_context()

    @property
    def messages(self) -> list[Mail]:
        """The messages received so far (each a :class:`~trio_smtp.Mail`), in order."""
        return list(getattr(self.sink, "messages", []))

    def messages_to(self, address: str) -> list[Mail]:
        """The messages received for ``address`` (compared without regard to case)."""
        want = address.lower()
        return [m for m in self.messages if any(r.lower() == want for r in m.rcpt_tos)]

    def reset(self) -> None:
        """Forget the messages and the event log so far, and every pending failure."""
        self.sink.reset()
        self.faults.clear()
        with self.faults._lock:
            self.faults.log.clear()

    def fail(
        self, event: str, code: int, text: str = "", *, times: int = 1, match: str | None = None
    ) -> None:
        """Answer the next ``times`` occurrences of ``event`` with ``code`` and ``text``.

        ``match`` limits it to one address (``MAIL``/``RCPT``; for ``done`` the sender or
        a recipient), or a domain as ``"@example.com"``. See :meth:`Faults.fail`.
        """
        self.faults.fail(event, code, text, times=times, match=match)

    def delay(
        self, event: str, seconds: float, *, times: int = 1, match: str | None = None
    ) -> None:
        """Stall ``seconds`` before answering the next ``times`` occurrences of ``event``."""
        self.faults.delay(event, seconds, times=times, match=match)

    def drop(self, event: str, *, times: int = 1, match: str | None = None) -> None:
        """Close the next ``times`` connections that reach ``event``, without a reply.

        The client reads end-of-file where it waits for the reply (a crash, a cut
        network); a dropped ``done`` stores nothing. See :meth:`Faults.drop`.
        """
        self.faults.drop(event, times=times, match=match)

    def tempfail_rate(
        self, p: float, *, seed: int = 0, code: int = 451, text: str | None = None
    ) -> None:
        """Refuse a seeded fraction ``p`` of transactions at MAIL with ``code`` (451)."""
        if text is None:
            self.faults.tempfail_rate(p, seed=seed, code=code)
        else:
            self.faults.tempfail_rate(p, seed=seed, code=code, text=text)

    def _missing(self, n: int, timeout: float) -> str:
        arrived = self.messages
        lines = [f"expected {n} message(s) within {timeout} s, got {len(arrived)}"]
        lines += [f"  {_summary(m)}" for m in arrived]
        recent = self.log[-10:]
        if recent:
            lines.append("last events:")
            lines += [f"  {entry}" for entry in recent]
        return "\n".join(lines)


class SMTPTestServer(TestServerBase):
    """A test server running in the test's own Trio run (from :func:`serving`)."""

    def __init__(self, server: Server, faults: Faults, certificate: TestCertificate | None) -> None:
        super().__init__(server, faults, certificate)
        self.clients: list[SMTPClient] = []

    # The same signature as ThreadedServer.wait_for: one API for both kinds of test.
    async def wait_for(self, n: int, timeout: float = WAIT_TIMEOUT) -> None:  # noqa: ASYNC109
        """Wait until at least ``n`` messages have arrived.

        Raises:
            TimeoutError: listing what did arrive (and the last events), if they did not
                within ``timeout`` seconds.
        """
        sink = self.sink
        with trio.move_on_after(timeout):
            if hasattr(sink, "wait_for"):
                await sink.wait_for(n)
            else:
                while len(self.messages) < n:  # noqa: ASYNC110 - a sink without an event
                    await trio.sleep(0.01)
            return
        raise TimeoutError(self._missing(n, timeout))

    async def connect(
        self,
        index: int = 0,
        *,
        source: str | None = None,
        timeout: float = CLIENT_TIMEOUT,  # noqa: ASYNC109 - the client's bound on every wait
    ) -> SMTPClient:
        """A raw :class:`SMTPClient` connected to listener ``index``, closed with the server."""
        host, port = self.addresses[index]
        client = await SMTPClient.connect(host, port, source=source, timeout=timeout)
        self.clients.append(client)
        return client

    async def wait_until(self, condition: Callable[[], bool], within: float = WAIT_TIMEOUT) -> None:
        """Wait until ``condition()`` holds (checked as the server's tasks run)."""
        with trio.fail_after(within):
            while not condition():  # noqa: ASYNC110 - the server has no event for this yet
                await trio.sleep(0.005)

    async def wait_idle(self, within: float = WAIT_TIMEOUT) -> None:
        """Wait until the server holds no connection (each has ended, ``close`` hook and all)."""
        with trio.fail_after(within):
            await self.server.wait_connections(0)

    async def wait_connections(self, n: int, within: float = WAIT_TIMEOUT) -> None:
        """Wait until exactly ``n`` connections are open."""
        with trio.fail_after(within):
            await self.server.wait_connections(n)


@asynccontextmanager
async def serving(
    schema: Mapping[str, Any] | None = None,
    dependencies: Mapping[str, Any] | None = None,
    *,
    tls: bool = False,
    auth: Mapping[str, str] | None = None,
    lmtp: bool = False,
    faults: bool = True,
    **config: Any,
) -> AsyncIterator[SMTPTestServer]:
    """Serve in this Trio run for the body of the ``async with``, then stop gracefully.

    Takes what :func:`build_server` takes. On exit the raw clients from
    :meth:`SMTPTestServer.connect` are closed, the server shuts down gracefully and
    ``serve`` has returned.
    """
    server, plan, certificate = build_server(
        schema, dependencies, tls=tls, auth=auth, lmtp=lmtp, faults=faults, **config
    )
    handle = SMTPTestServer(server, plan, certificate)
    async with trio.open_nursery() as nursery:
        handle.addresses = await nursery.start(server.serve)
        try:
            yield handle
        finally:
            for client in handle.clients:
                await client.aclose()
            server.shutdown()


class ThreadedServer(TestServerBase):
    """An SMTP test server in a background thread, for synchronous code.

    ::

        with ThreadedServer() as smtp:
            smtplib.SMTP(smtp.host, smtp.port).sendmail("a@x.org", ["b@y.org"], b"hi")
            smtp.wait_for(1)
            assert smtp.messages[0].rcpt_tos == ["b@y.org"]

    Unlike aiosmtpd's ``Controller`` it never connects to itself to see that it is up,
    and a port that cannot be bound raises at once from :meth:`start`.

    Takes what :func:`build_server` takes.
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
        *,
        tls: bool = False,
        auth: Mapping[str, str] | None = None,
        lmtp: bool = False,
        faults: bool = True,
        **config: Any,
    ) -> None:
        server, plan, certificate = build_server(
            schema, dependencies, tls=tls, auth=auth, lmtp=lmtp, faults=faults, **config
        )
        super().__init__(server, plan, certificate)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._arrived = threading.Condition()

    def start(self) -> ThreadedServer:
        """Start serving; returns once every port is bound.

        Raises:
            OSError: at once, if an address cannot be bound.
            RuntimeError: if the server did not come up within :data:`START_TIMEOUT`.
        """
        if self._thread is not None:
            raise RuntimeError("this ThreadedServer is already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name="trio_smtp-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"test SMTP server did not start within {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            error, self._error = self._error, None
            raise error
        return self

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
                await self.server.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # and with it the message watcher

            self.addresses = await nursery.start(serve)
            nursery.start_soon(self._watch_messages)
            self._ready.set()

    async def _watch_messages(self) -> None:
        # Mirrors deliveries into a threading.Condition so wait_for() works from threads.
        sink = self.sink
        if not hasattr(sink, "wait_for"):
            return
        seen = 0
        while True:
            await sink.wait_for(seen + 1)
            seen = len(sink.messages)
            with self._arrived:
                self._arrived.notify_all()

    def wait_for(self, n: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Block until at least ``n`` messages have arrived.

        Raises:
            TimeoutError: listing what did arrive (and the last events), if they did not
                within ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(self._missing(n, timeout))

    def stop(self) -> None:
        """Shut the server down gracefully and wait for its thread."""
        thread = self._thread
        if thread is None:
            return
        self.server.shutdown()
        thread.join(START_TIMEOUT + self.server.config.shutdown_grace)
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

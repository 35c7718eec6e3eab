"""Test helpers for applications that send mail.

Two ways to get a throw-away SMTP server on a free port that keeps what it receives:

* the pytest fixtures (registered as a pytest plugin under the name ``trio_smtp``):
  ``smtp_server`` for Trio tests (the server runs in the test's own event loop), and
  ``threaded_smtp_server`` for synchronous tests (Django, Flask, plain ``smtplib``)::

      def test_signup_sends_mail(threaded_smtp_server):
          app.config["SMTP_PORT"] = threaded_smtp_server.port
          app.signup("ann@example.com")
          assert threaded_smtp_server.messages[0].message["Subject"] == "Welcome"

* :class:`ThreadedServer`, a context manager for any synchronous code.

Unlike aiosmtpd's ``Controller``, :class:`ThreadedServer` does not probe its own
port with a test connection, and a port that cannot be bound raises at once from
:meth:`ThreadedServer.start` instead of hanging.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

import trio

from ._mail import Mail
from ._server import Server
from .sinks import MemorySink

#: How long :meth:`ThreadedServer.start` waits for the listener before giving up.
START_TIMEOUT: Final = 10.0
_TEST_CONFIG: Final[dict[str, Any]] = {
    "host": "127.0.0.1",
    "port": 0,
    "hostname": "localhost",
    "shutdown_grace": 1.0,
    "log_level": "warn",
}


class _QuietLogger:
    """Keeps log lines in memory; only errors reach stderr."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, level: str, message: str) -> None:
        self.lines.append(f"[{level.upper()}] {message}")
        del self.lines[:-1000]

    def fatal(self, message: str) -> None:
        self._keep("fatal", message)

    def error(self, message: str) -> None:
        self._keep("error", message)

    def warn(self, message: str) -> None:
        self._keep("warn", message)

    def info(self, message: str) -> None:
        self._keep("info", message)

    def log(self, message: str) -> None:
        self._keep("log", message)

    def debug(self, message: str) -> None:
        self._keep("debug", message)


def _build(
    schema: Mapping[str, Any] | None, dependencies: Mapping[str, Any] | None
) -> tuple[Server, MemorySink]:
    schema = dict(schema or {})
    config = {**_TEST_CONFIG, **dict(schema.get("config") or {})}
    schema["config"] = config
    deps = dict(dependencies or {})
    sink = deps.get("sink")
    if sink is None:
        sink = MemorySink()
        deps["sink"] = sink
    deps.setdefault("logger", _QuietLogger())
    server = Server(schema, deps)
    return server, sink


class SMTPTestServer:
    """A running test server: where it listens and what it received.

    Attributes:
        server: The :class:`~trio_smtp.Server`.
        host: The listening address.
        port: The listening port.
        sink: The :class:`~trio_smtp.sinks.MemorySink` collecting messages.
    """

    def __init__(self, server: Server, sink: Any, address: tuple[str, int]) -> None:
        self.server = server
        self.sink = sink
        self.host, self.port = address

    def __repr__(self) -> str:
        return f"<SMTPTestServer {self.host}:{self.port} messages={len(self.messages)}>"

    @property
    def messages(self) -> list[Mail]:
        """The messages received so far (each a :class:`~trio_smtp.Mail`)."""
        return list(getattr(self.sink, "messages", []))

    def reset(self) -> None:
        """Forget the messages received so far."""
        self.sink.reset()

    @property
    def log_lines(self) -> list[str]:
        """What the server logged (when it uses the default test logger)."""
        logger = self.server.logger
        return list(logger.lines) if isinstance(logger, _QuietLogger) else []


class ThreadedServer(SMTPTestServer):
    """An SMTP server in a background thread, for synchronous code.

    ::

        with ThreadedServer() as smtp:
            smtplib.SMTP(smtp.host, smtp.port).sendmail("a@x.org", ["b@y.org"], b"hi")
            smtp.wait_for(1)
            assert smtp.messages[0].rcpt_tos == ["b@y.org"]

    Args:
        schema: As for :class:`~trio_smtp.Server`; ``config`` defaults to port 0 on
            127.0.0.1, hostname ``localhost``, a 1 s shutdown grace.
        dependencies: As for :class:`~trio_smtp.Server`; the sink defaults to a
            :class:`~trio_smtp.sinks.MemorySink`, the logger to one that keeps lines in
            memory (:attr:`log_lines`).
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
    ) -> None:
        server, sink = _build(schema, dependencies)
        self.server = server
        self.sink = sink
        self.host, self.port = "", 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def start(self) -> ThreadedServer:
        """Start serving; returns once the port is bound.

        Raises:
            OSError: at once, if the address cannot be bound.
            RuntimeError: if the server did not come up within :data:`START_TIMEOUT`.
        """
        if self._thread is not None:
            raise RuntimeError("this ThreadedServer is already started")
        self._thread = threading.Thread(target=self._main, name="trio_smtp-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"test SMTP server did not start within {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join()
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

            addresses = await nursery.start(serve)
            self.host, self.port = addresses[0]
            nursery.start_soon(self._watch_messages)
            self._ready.set()

    async def _watch_messages(self) -> None:
        # Mirrors deliveries into a threading.Condition so wait_for() works from threads.
        seen = 0
        while True:
            await self.sink.wait_for(seen + 1)
            seen = len(self.sink.messages)
            with self._arrived:
                self._arrived.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` messages have arrived.

        Raises:
            TimeoutError: naming how many arrived, if they did not within ``timeout``.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.sink.messages) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} message(s) within {timeout} s, got {len(self.sink.messages)}"
                )

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


if importlib.util.find_spec("pytest") is not None:
    # The fixtures need pytest; ThreadedServer and SMTPTestServer do not.
    import pytest

    @pytest.fixture
    async def smtp_server() -> AsyncIterator[SMTPTestServer]:
        """A server on a free port in the Trio test's own event loop, collecting messages."""
        server, sink = _build(None, None)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.serve)
            yield SMTPTestServer(server, sink, addresses[0])
            server.shutdown()

    @pytest.fixture
    def threaded_smtp_server() -> Iterator[ThreadedServer]:
        """A server on a free port in a background thread, for synchronous tests."""
        with ThreadedServer() as smtp:
            yield smtp

"""Test helpers for applications that send mail, and the pytest plugin that serves them.

Installing trio_smtp registers this module as a pytest plugin (entry point ``trio_smtp``)
with these fixtures, each a server on a free port of 127.0.0.1 that keeps what it
receives and stops at the end of the test:

* ``threaded_smtp_server`` — a :class:`ThreadedServer`, for synchronous code (Django,
  Flask, plain :mod:`smtplib`); ``threaded_smtp_server_factory(...)`` starts more, with
  options;
* ``smtp_server`` — an :class:`SMTPTestServer` in a Trio test's own event loop (needs
  pytest-trio: ``trio_mode = true`` or ``@pytest.mark.trio``);
  ``await smtp_server_factory(...)`` starts more, with options.

The options (:func:`build_server`): a ``schema`` and ``dependencies`` as for
:class:`~trio_smtp.Server`, ``tls=True`` (a trustme certificate; the test gets
``server.client_ssl_context``), ``auth={"user": "password"}``, ``lmtp=True``, and any
configuration key. Every test server can inject failures (``fail``, ``delay``,
``drop``, ``tempfail_rate``) and records what happened in ``server.log``.

Outside pytest, :class:`ThreadedServer` is a context manager and :func:`serving` an
async one. :class:`SMTPClient` is a byte-exact client for testing servers
(:class:`BlockingSMTPClient` its twin for synchronous tests);
:class:`RecordingLogger` keeps what a server logs.

This module is loaded by every pytest run in an environment where trio_smtp is
installed, so it imports neither Trio nor the server until a fixture or helper is used:
the helpers live in ``trio_smtp._testing`` and are re-exported here lazily.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._testing._blocking_client import BlockingSMTPClient as BlockingSMTPClient
    from ._testing._client import CLIENT_TIMEOUT as CLIENT_TIMEOUT
    from ._testing._client import ServerClosed as ServerClosed
    from ._testing._client import ServerReply as ServerReply
    from ._testing._client import SMTPClient as SMTPClient
    from ._testing._client import auth_plain as auth_plain
    from ._testing._client import parse_replies as parse_replies
    from ._testing._faults import Faults as Faults
    from ._testing._logger import RecordingLogger as RecordingLogger
    from ._testing._server import START_TIMEOUT as START_TIMEOUT
    from ._testing._server import SMTPTestServer as SMTPTestServer
    from ._testing._server import TestServerBase as TestServerBase
    from ._testing._server import ThreadedServer as ThreadedServer
    from ._testing._server import build_server as build_server
    from ._testing._server import serving as serving
    from ._testing._tls import TestCertificate as TestCertificate

_LAZY = {
    "BlockingSMTPClient": "._testing._blocking_client",
    "CLIENT_TIMEOUT": "._testing._client",
    "ServerClosed": "._testing._client",
    "ServerReply": "._testing._client",
    "SMTPClient": "._testing._client",
    "auth_plain": "._testing._client",
    "parse_replies": "._testing._client",
    "Faults": "._testing._faults",
    "RecordingLogger": "._testing._logger",
    "START_TIMEOUT": "._testing._server",
    "SMTPTestServer": "._testing._server",
    "TestServerBase": "._testing._server",
    "ThreadedServer": "._testing._server",
    "build_server": "._testing._server",
    "serving": "._testing._server",
    "TestCertificate": "._testing._tls",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_smtp.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


# No module __dir__ listing the lazy names: pytest walks dir() of every plugin for hooks
# and fixtures, and would import them all.


class SMTPServerFactory:
    """``await smtp_server_factory(...)``: start a Trio test server; it stops with the test.

    Takes what :func:`build_server` takes: ``schema``, ``dependencies``, ``tls``,
    ``auth``, ``lmtp`` and any configuration key.
    """

    def __init__(self, nursery: Any) -> None:
        self._nursery = nursery
        self._stop: Any = None

    async def __call__(
        self,
        schema: Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
        *,
        tls: bool = False,
        auth: Mapping[str, str] | None = None,
        lmtp: bool = False,
        **config: Any,
    ) -> SMTPTestServer:
        import trio

        from ._testing._server import serving

        if self._stop is None:
            self._stop = trio.Event()
        stop = self._stop

        async def run(task_status: trio.TaskStatus[SMTPTestServer]) -> None:
            async with serving(
                schema, dependencies, tls=tls, auth=auth, lmtp=lmtp, **config
            ) as server:
                task_status.started(server)
                await stop.wait()

        server: SMTPTestServer = await self._nursery.start(run)
        return server

    def _stop_all(self) -> None:
        if self._stop is not None:
            self._stop.set()


class ThreadedServerFactory:
    """``threaded_smtp_server_factory(...)``: start a :class:`ThreadedServer` for this test.

    Takes what :func:`build_server` takes; every server it started stops with the test.
    """

    def __init__(self) -> None:
        self.started: list[ThreadedServer] = []

    def __call__(
        self,
        schema: Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
        *,
        tls: bool = False,
        auth: Mapping[str, str] | None = None,
        lmtp: bool = False,
        **config: Any,
    ) -> ThreadedServer:
        from ._testing._server import ThreadedServer

        server = ThreadedServer(schema, dependencies, tls=tls, auth=auth, lmtp=lmtp, **config)
        server.start()
        self.started.append(server)
        return server

    def _stop_all(self) -> None:
        errors: list[BaseException] = []
        for server in reversed(self.started):
            try:
                server.stop()
            except Exception as exc:  # stop every server, then report
                errors.append(exc)
        if errors:
            raise errors[0]


# The fixtures need pytest, and only a pytest run loads this module as a plugin: a
# program that imports it for ThreadedServer does not pay for importing pytest.
if "pytest" in sys.modules:
    import pytest

    _TRIO_FIXTURES = frozenset({"smtp_server", "smtp_server_factory"})

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(fixturedef: Any, request: Any) -> None:
        """Say what a Trio fixture needs, instead of pytest's "async fixture, no plugin"."""
        if fixturedef.argname not in _TRIO_FIXTURES:
            return
        if not request.config.pluginmanager.hasplugin("trio"):
            pytest.fail(
                f"{fixturedef.argname} is a Trio fixture and needs pytest-trio: "
                'pip install "trio_smtp[testing]" (or use threaded_smtp_server)',
                pytrace=False,
            )
        if request.node.get_closest_marker("trio") is None:
            pytest.fail(
                f"{fixturedef.argname} runs in the test's Trio event loop: make the test "
                "`async def` and mark it @pytest.mark.trio, or set trio_mode = true under "
                "[tool.pytest.ini_options] (synchronous tests: threaded_smtp_server)",
                pytrace=False,
            )

    @pytest.fixture
    async def smtp_server() -> AsyncIterator[SMTPTestServer]:
        """A server on a free port in the Trio test's own event loop, collecting messages."""
        from ._testing._server import serving

        async with serving() as server:
            yield server

    @pytest.fixture
    async def smtp_server_factory() -> AsyncIterator[SMTPServerFactory]:
        """``await smtp_server_factory(tls=True, auth={...}, ...)`` starts a Trio test server."""
        import trio

        async with trio.open_nursery() as nursery:
            factory = SMTPServerFactory(nursery)
            try:
                yield factory
            finally:
                factory._stop_all()

    @pytest.fixture
    def threaded_smtp_server() -> Iterator[ThreadedServer]:
        """A server on a free port in a background thread, for synchronous tests."""
        from ._testing._server import ThreadedServer

        with ThreadedServer() as server:
            yield server

    @pytest.fixture
    def threaded_smtp_server_factory() -> Iterator[ThreadedServerFactory]:
        """``threaded_smtp_server_factory(tls=True, ...)`` starts a threaded test server."""
        factory = ThreadedServerFactory()
        try:
            yield factory
        finally:
            factory._stop_all()

"""The connection task's dispatch table: an event it has no handler for is logged."""

from __future__ import annotations

from typing import Any

import pytest
from _live_server import make_server, memory_connection

import trio_smtp
import trio_smtp._connection_task as connection_task
from trio_smtp.engine import Engine, Noop, ProxyHeader


class _OddEngine(Engine):
    """Emits a PROXY header event in the middle of a session (a bug in the engine)."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, Noop):
            self.respond()
            return ProxyHeader(version=1, local=True, source=None, destination=None)
        return event


async def test_an_event_without_a_handler_is_logged_and_closes_with_421(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_task, "Engine", _OddEngine)
    server, _, logger = make_server()
    async with memory_connection(server) as (client, run):
        assert (await client.reply())[0] == 220
        await client.send(b"NOOP\r\n")
        assert await client.reply() == (250, "2.0.0 OK")
        assert await client.reply() == (421, "4.3.0 local error in processing; try again later")
        await run.finished.wait()
    [line] = logger.find("unexpected engine event", "error")
    assert "ProxyHeader" in line
    assert logger.find("(internal error)")


def test_the_package_exports_what_users_catch() -> None:
    from trio_smtp._auth_file import AuthFileError
    from trio_smtp._hooks import HookReturnError, HookTimeout
    from trio_smtp._tls import TLSConfigError

    assert trio_smtp.HookTimeout is HookTimeout
    assert trio_smtp.HookReturnError is HookReturnError
    assert trio_smtp.TLSConfigError is TLSConfigError
    assert trio_smtp.AuthFileError is AuthFileError
    names = dir(trio_smtp)
    assert {"Server", "HookTimeout", "TLSConfigError", "__version__"} <= set(names)
    assert set(trio_smtp.__all__) <= set(names)
    assert trio_smtp.__version__.count(".") >= 2

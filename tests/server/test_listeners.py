"""Listening and accepting: errors Trio retries, and no listener left open on failure."""

from __future__ import annotations

import errno
import gc
import socket
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import trio
from _live_server import make_server, running_server


@pytest.mark.parametrize("name", ["ECONNABORTED", "EPERM", "EPROTO", "ECONNRESET"])
async def test_an_accept_error_trio_retries_does_not_stop_the_server(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux reports a connection that died in the listen queue (or one a firewall
    # denied) as an error from accept(); trio's SocketListener.accept retries these.
    real_accept: Callable[[socket.socket], Any] = socket.socket.accept
    raised: list[int] = []

    def accept(sock: socket.socket) -> Any:
        if not raised:
            raised.append(1)
            code = getattr(errno, name)
            raise OSError(code, f"injected {name}")
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    async with running_server() as live:
        client = await live.connect()
        assert (await client.reply())[0] == 220
        await client.expect("NOOP", 250)
        await client.expect("QUIT", 221)
    assert raised == [1]


async def test_an_unexpected_accept_error_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def accept(sock: socket.socket) -> Any:
        raise OSError(errno.EINVAL, "injected EINVAL")

    monkeypatch.setattr(socket.socket, "accept", accept)
    server, _, _ = make_server()
    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
    assert info.group_contains(OSError, match="EINVAL")


class _BlockingResolver(trio.abc.HostnameResolver):
    """Resolves every name by waiting forever (until cancelled)."""

    def __init__(self) -> None:
        self.entered = trio.Event()

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await trio.sleep_forever()

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def test_listeners_opened_before_a_cancellation_are_all_closed() -> None:
    # Two listeners are open when resolving the third host is cancelled: both must be
    # closed at once, not left for the garbage collector ("unclosed socket").
    resolver = _BlockingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    server, _, _ = make_server(config={"host": ["127.0.0.1", "127.0.0.1", "mx.invalid"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve)
            await resolver.entered.wait()
            nursery.cancel_scope.cancel()
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


async def test_a_later_bind_failure_closes_the_listeners_already_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The first host binds a free port; the second is in use.
        server, _, _ = make_server(config={"host": ["127.0.0.2", "127.0.0.1"], "port": port})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
                await server.serve()
            gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    # Nothing listens on the first address any more.
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.2", port))

"""The socket transport: Trio's checkpoint order, so a cancelled read loses nothing."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trio_smtp._transport import SocketTransport


def _pair() -> tuple[SocketTransport, socket.socket]:
    ours, theirs = socket.socketpair()
    return SocketTransport(ours), theirs


async def test_a_cancelled_receive_leaves_the_bytes_for_the_next_one() -> None:
    transport, peer = _pair()
    with peer:
        peer.sendall(b"EHLO client.test\r\n")
        async with transport:
            with trio.CancelScope() as scope:
                scope.cancel()
                await transport.receive_some(1024)  # raises Cancelled before recv()
            assert scope.cancelled_caught
            assert await transport.receive_some(1024) == b"EHLO client.test\r\n"


async def test_a_receive_that_succeeds_is_not_cancelled_after_the_fact() -> None:
    # The scope is cancelled while the receive yields after recv(): the bytes are
    # returned (cancel_shielded_checkpoint), the cancellation hits the next checkpoint.
    transport, peer = _pair()
    got: list[bytes] = []
    with peer:
        peer.sendall(b"NOOP\r\n")
        async with transport:
            with trio.CancelScope() as scope:

                async def cancel_soon() -> None:
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_soon)
                    got.append(await transport.receive_some(1024))
                    await trio.lowlevel.checkpoint()
            assert scope.cancelled_caught
            assert got == [b"NOOP\r\n"]


async def test_receive_send_and_eof() -> None:
    transport, peer = _pair()
    with peer:
        async with transport:
            with trio.testing.assert_checkpoints():
                await transport.send_all(b"220 hi\r\n")
            assert peer.recv(100) == b"220 hi\r\n"
            big = b"x" * 4_000_000  # more than the socket buffers hold: waits to write

            async def drain() -> None:
                received = 0
                while received < len(big):
                    received += len(await trio.to_thread.run_sync(peer.recv, 1 << 20))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await transport.send_all(big)
            await transport.send_eof()
            assert peer.recv(10) == b""
            peer.sendall(b"QUIT\r\n")
            peer.shutdown(socket.SHUT_WR)
            with trio.testing.assert_checkpoints():
                assert await transport.receive_some() == b"QUIT\r\n"
            assert await transport.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await transport.send_all(b"late")


async def test_receive_nowait_takes_what_is_there_and_never_waits() -> None:
    transport, peer = _pair()
    async with transport:
        assert transport.receive_nowait(1024) is None  # nothing yet: no wait, no data
        peer.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
        assert transport.receive_nowait(22) == b"MAIL FROM:<a@x.test>\r\n"
        assert transport.receive_nowait(1024) == b"RCPT TO:<b@y.test>\r\n"
        assert transport.receive_nowait(1024) is None
        peer.close()
        assert transport.receive_nowait(1024) == b""  # end of file

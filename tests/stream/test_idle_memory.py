"""What an idle connection costs the server: issue 11 wants at most 7.8 KiB (bench: RSS)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

import trio
import trio.testing

from trio_smtp.testing import serving

#: Idle connections opened by the client process.
IDLE: int = 300
#: Bytes of Python objects the server may hold per idle connection.
PER_CONNECTION: int = 7800

#: Opens N connections, waits for every greeting, says so, and holds them until stdin ends.
CLIENTS = textwrap.dedent(
    """
    import socket, sys
    port, n = int(sys.argv[1]), int(sys.argv[2])
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        data = b""
        while not data.endswith(b"\\r\\n"):
            data += s.recv(1024)
        socks.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_an_idle_connection_costs_the_server_under_7_8_kib() -> None:
    config: dict[str, Any] = {"max_connections_per_ip": 2 * IDLE, "max_connections": 2 * IDLE}
    async with serving(faults=False, **config) as srv:
        # A first session pays for lazy imports and first-use caches.
        client = await srv.connect()
        await client.greet()
        await client.aclose()
        await srv.wait_idle()
        tracemalloc.start()
        try:
            before = _traced()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENTS, str(srv.port), str(IDLE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                with trio.fail_after(60):
                    assert await proc.stdout.receive_some() == b"ready\n"
                await trio.testing.wait_all_tasks_blocked(cushion=0.1)
                per_connection = (_traced() - before) / IDLE
            finally:
                await proc.stdin.aclose()
                with trio.fail_after(60):
                    await proc.wait()
        finally:
            tracemalloc.stop()
    assert per_connection <= PER_CONNECTION, f"{per_connection:.0f} bytes per idle connection"

"""``--metrics``: Prometheus text at /metrics, read with curl after real SMTP traffic."""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from _proc import TIMEOUT, Cli, cli
from conftest import require_tool

from trio_smtp import Server
from trio_smtp._metrics import Metrics
from trio_smtp.sinks import MemorySink

SAMPLE = re.compile(r"^(trio_smtp_\w+)(\{[^}]*\})? (\S+)$")


def scrape(url: str) -> dict[str, float]:
    curl = require_tool("curl")
    result = subprocess.run(
        [curl, "-sf", url], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    out = {}
    for line in result.stdout.splitlines():
        m = SAMPLE.match(line)
        if m and not m[1].endswith("_created"):
            out[m[1] + (m[2] or "")] = float(m[3])
    return out


def metrics_url(server: Cli) -> str:
    return server.wait_err(r"Metrics on (http://\S+/metrics)")[1]


def wait_closed(url: str, total: int) -> dict[str, float]:
    """Scrape until every one of ``total`` connections has been counted closed."""
    for _ in range(200):
        values = scrape(url)
        if (
            values.get("trio_smtp_connections_total") == total
            and values.get("trio_smtp_connections_open") == 0
        ):
            return values
        trio.run(trio.sleep, 0.05)
    raise AssertionError(f"connections never settled: {values}")


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("swaks"), "--server", "127.0.0.1", "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_curl_sees_exact_counts_after_swaks_traffic(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:secret\n")
    with cli(
        "--port", "0", "--hostname", "mx.test", "--metrics", "127.0.0.1:0",
        "--auth-file", str(users), "--auth-insecure", "--max-message-size", "2000",
    ) as server:  # fmt: skip
        url = metrics_url(server)
        port = server.port()
        before = scrape(url)
        assert before["trio_smtp_connections_total"] == 0
        assert before['trio_smtp_messages_total{outcome="accepted"}'] == 0
        for n in range(3):
            assert swaks(port, "--to", f"r{n}@y.test").returncode == 0
        ok = swaks(port, "--to", "a@y.test", "--auth", "PLAIN", "--auth-user", "alice",
                   "--auth-password", "secret")  # fmt: skip
        assert ok.returncode == 0, ok.stdout
        bad = swaks(port, "--to", "a@y.test", "--auth", "PLAIN", "--auth-user", "alice",
                    "--auth-password", "wrong")  # fmt: skip
        assert bad.returncode != 0
        big = swaks(port, "--to", "a@y.test", "--body", ("x" * 70 + "\n") * 40)
        assert "552" in big.stdout
        values = wait_closed(url, 6)
        sizes = [
            int(m) for m in re.findall(r"Message accepted: .* size=(\d+)", "\n".join(server.err))
        ]
        assert server.stop() == 0
    sizes = [
        int(m)
        for line in server.err
        for m in re.findall(r"INFO\] - Message accepted: \S+ \S+ \S+ size=(\d+)", line)
    ]
    assert len(sizes) == 4
    assert values['trio_smtp_messages_total{outcome="accepted"}'] == 4
    assert values['trio_smtp_messages_total{outcome="refused"}'] == 1
    assert values['trio_smtp_messages_total{outcome="failed"}'] == 0
    assert values["trio_smtp_message_bytes_total"] == sum(sizes)
    assert values["trio_smtp_auth_failures_total"] == 1
    assert values['trio_smtp_replies_total{code="220"}'] == 6
    assert values['trio_smtp_replies_total{code="221"}'] == 6
    assert values['trio_smtp_replies_total{code="235"}'] == 1
    assert values['trio_smtp_replies_total{code="535"}'] == 1
    assert values['trio_smtp_replies_total{code="552"}'] == 1
    assert values['trio_smtp_replies_total{code="354"}'] == 5
    assert values['trio_smtp_hook_duration_seconds_count{hook="done"}'] == 4


def test_workers_report_the_whole_servers_numbers() -> None:
    with cli(
        "--port", "0", "--hostname", "mx.test", "--metrics", "127.0.0.1:0", "--workers", "2",
        "--max-connections-per-ip", "100",
    ) as server:  # fmt: skip
        url = metrics_url(server)
        port = int(server.wait_err(r"starting 2 workers on port (\d+)")[1])
        server.wait_err(r"worker: \d")
        server.wait_err(r"worker: \d")
        for n in range(8):
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("a@x.test", [f"r{n}@y.test"], b"Subject: w\r\n\r\nx\r\n")
        values = wait_closed(url, 8)
        workers = {
            line.split("pid: ")[1].split()[0] for line in server.err if "Connection opened" in line
        }
        assert server.stop() == 0
    assert values['trio_smtp_messages_total{outcome="accepted"}'] == 8
    assert values['trio_smtp_replies_total{code="250"}'] >= 8 * 3
    del workers


def test_metrics_flag_errors_exit_2() -> None:
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "trio_smtp", "--port", "0", "--metrics", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"--metrics cannot listen on 127.0.0.1:{port}" in line


async def test_the_library_exposes_the_same_counters() -> None:
    metrics = Metrics()
    sink = MemorySink()
    server = Server(
        {"config": {"port": 0, "hostname": "mx.test"}}, {"metrics": metrics, "sink": sink}
    )
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)

        def send() -> None:
            with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
                client.sendmail("a@x.test", ["b@y.test"], b"Subject: lib\r\n\r\nx\r\n")

        await trio.to_thread.run_sync(send)
        await server.wait_connections(0)
        server.shutdown()
    assert metrics.value("trio_smtp_messages_total", outcome="accepted") == 1
    assert metrics.value("trio_smtp_connections_total") == 1
    assert metrics.value("trio_smtp_connections_open") == 0
    assert metrics.value("trio_smtp_replies_total", code="250") == 4  # EHLO MAIL RCPT DATA
    with pytest.raises(TypeError, match="metrics"):
        Server(None, {"metrics": object()})


def test_tls_handshakes_are_counted(tls_files: dict[str, Path]) -> None:

    openssl = require_tool("openssl")
    with cli(
        "--port", "0", "--tls-port", "0", "--hostname", "mx.test", "--metrics", "127.0.0.1:0",
        "--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]),
    ) as server:  # fmt: skip
        url = metrics_url(server)
        tls_port = int(server.wait_err(r"port: (\d+) \(smtps\)")[1])
        ok = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{tls_port}", "-quiet"],
            input="QUIT\r\n", capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert "220 " in ok.stdout
        with socket.create_connection(("127.0.0.1", tls_port), timeout=TIMEOUT) as plain:
            plain.sendall(b"EHLO not-tls\r\n")  # not a ClientHello
            plain.recv(100)
        values = wait_closed(url, 2)
        assert server.stop() == 0
    assert values['trio_smtp_tls_handshakes_total{result="ok"}'] == 1
    assert values['trio_smtp_tls_handshakes_total{result="failed"}'] == 1


def _first_reply(source: str, port: int) -> tuple[bytes, socket.socket]:
    """Connect from ``source`` (a loopback address); the first reply line, socket kept."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0)
    )
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[0], sock


def test_connections_refused_for_a_limit_are_counted_by_limit() -> None:
    with cli(
        "--port", "0", "--hostname", "mx.test", "--metrics", "127.0.0.1:0",
        "--max-connections", "3", "--max-connections-per-ip", "1",
    ) as server:  # fmt: skip
        url = metrics_url(server)
        port = server.port()
        socks = []
        try:
            replies = []
            for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
                reply, sock = _first_reply(source, port)
                replies.append(reply)
                socks.append(sock)
            assert replies == [
                b"220 mx.test ESMTP trio_smtp",
                b"421 4.7.0 too many connections from your address",  # the second from .1
                b"220 mx.test ESMTP trio_smtp",
                b"220 mx.test ESMTP trio_smtp",
                b"421 4.7.0 too many connections, try again later",  # the fourth open
            ]
        finally:
            for sock in socks:
                sock.close()
        values = wait_closed(url, 5)  # every accepted connection, refused ones included
        assert server.stop() == 0
    assert values['trio_smtp_connections_refused_total{reason="max_connections"}'] == 1
    assert values['trio_smtp_connections_refused_total{reason="max_connections_per_ip"}'] == 1
    assert values['trio_smtp_replies_total{code="421"}'] == 1  # the accept loop's is not a task's


def test_workers_refuse_a_full_server_with_its_own_text_and_count_it() -> None:
    with cli(
        "--port", "0", "--hostname", "mx.test", "--metrics", "127.0.0.1:0", "--workers", "2",
        "--max-connections", "2", "--max-connections-per-ip", "100",
    ) as server:  # fmt: skip
        url = metrics_url(server)
        port = int(server.wait_err(r"starting 2 workers on port (\d+)")[1])
        server.wait_err(r"worker: \d")
        server.wait_err(r"worker: \d")
        socks = []
        try:
            replies = []
            for _ in range(8):  # the kernel spreads them over both workers
                reply, sock = _first_reply("127.0.0.1", port)
                replies.append(reply)
                socks.append(sock)
        finally:
            for sock in socks:
                sock.close()
        values = wait_closed(url, 8)
        assert server.stop() == 0
    assert replies[:2] == [b"220 mx.test ESMTP trio_smtp"] * 2
    # The whole server is full, whichever worker the kernel picked: not the per-address text.
    assert replies[2:] == [b"421 4.7.0 too many connections, try again later"] * 6
    assert values['trio_smtp_connections_refused_total{reason="max_connections"}'] == 6
    assert values['trio_smtp_connections_refused_total{reason="max_connections_per_ip"}'] == 0


async def test_a_stream_refused_for_max_connections_is_counted() -> None:
    metrics = Metrics()
    config = {"port": 0, "hostname": "mx.test", "max_connections": 1}
    server = Server({"config": config}, {"metrics": metrics})
    first_client, first = trio.testing.memory_stream_pair()
    second_client, second = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.serve_stream, first, peer=("192.0.2.1", 1000)))
        assert (await first_client.receive_some()).startswith(b"220 ")
        await server.serve_stream(second, peer=("192.0.2.2", 1000))
        assert await second_client.receive_some() == (
            b"421 4.7.0 too many connections, try again later\r\n"
        )
        await first_client.aclose()
    assert metrics.value("trio_smtp_connections_refused_total", reason="max_connections") == 1
    assert metrics.value("trio_smtp_connections_total") == 2

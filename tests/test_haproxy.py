"""trio_smtp behind a real HAProxy speaking PROXY protocol v1 (send-proxy) and v2 (send-proxy-v2).

The client connects from 127.0.0.2 (a distinct loopback address) to HAProxy, which
connects to trio_smtp from 127.0.0.1. Hooks, per-address limits and the Received header
must see 127.0.0.2: the real client, not the proxy. Without HAProxy, the same server
must close a connection that brings no valid header, or brings one from an address
not in ``proxy_from``, without ever greeting it.
"""

from __future__ import annotations

import contextlib
import email
import smtplib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import require_tool

sys.path.insert(0, str(Path(__file__).parent / "abuse"))
from _abuse_harness import HANG, make_message, running_server

from trio_smtp import Mail
from trio_smtp.sinks import MaildirSink
from trio_smtp.testing import SMTPClient

CLIENT_IP = "127.0.0.2"
VERSIONS = {"send-proxy": 1, "send-proxy-v2": 2}


def _listener() -> socket.socket:
    """A bound, listening socket on a free port, for HAProxy to inherit (``fd@N``).

    Handing HAProxy a socket it need not bind leaves no window in which another
    program could take a port picked for it, and connections wait in the socket's
    queue until HAProxy accepts them: no need to watch for it to start listening.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@contextlib.asynccontextmanager
async def haproxy(tmp_path: Path, server_port: int) -> AsyncIterator[dict[str, int]]:
    """Run HAProxy in the foreground with one frontend per PROXY version.

    Yields the frontend port for each of ``send-proxy`` and ``send-proxy-v2``.
    """
    binary = require_tool("haproxy")
    with contextlib.ExitStack() as sockets:
        listeners = {option: sockets.enter_context(_listener()) for option in VERSIONS}
        ports = {option: int(sock.getsockname()[1]) for option, sock in listeners.items()}
        fds = tuple(sock.fileno() for sock in listeners.values())
        sections = [
            "global\n    maxconn 256\n",
            "defaults\n    mode tcp\n    timeout connect 30s\n"
            "    timeout client 60s\n    timeout server 60s\n",
        ]
        for i, (option, sock) in enumerate(listeners.items()):
            sections.append(
                f"frontend smtp{i}\n    bind fd@{sock.fileno()}\n    default_backend trio{i}\n"
                f"backend trio{i}\n    server s1 127.0.0.1:{server_port} {option}\n"
            )
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text("\n".join(sections))
        check = await trio.run_process(
            [binary, "-c", "-f", str(cfg)],
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
            pass_fds=fds,
        )
        assert check.returncode == 0, check.stdout.decode()
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log:
            proc = await trio.lowlevel.open_process(
                [binary, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT, pass_fds=fds
            )
            # Only HAProxy holds the listeners now: should it stop, clients are refused.
            sockets.close()
            try:
                yield ports
                assert proc.poll() is None, log_path.read_text()
            finally:
                proc.terminate()
                with trio.move_on_after(HANG):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


class RecordingMaildir(MaildirSink):
    """A Maildir sink that also keeps the Mail objects it stored."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.mails: list[Mail] = []

    async def deliver(self, mail: Mail) -> None:
        await super().deliver(mail)
        self.mails.append(mail)


def _send_from(source: str, port: int, subject: str) -> None:
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="client.test", timeout=HANG, source_address=(source, 0)
    ) as smtp:
        smtp.sendmail("ann@example.org", ["bob@example.net"], make_message(subject))


@pytest.mark.needs_tool("haproxy")
@pytest.mark.parametrize("option", list(VERSIONS))
async def test_mail_through_haproxy_carries_the_real_client_address(
    tmp_path: Path, option: str
) -> None:
    seen: dict[str, list[Any]] = {"connect": [], "MAIL": [], "RCPT": []}
    events = {
        "connect": lambda session: seen["connect"].append(session.peer),
        "MAIL": lambda ctx: seen["MAIL"].append(ctx.session.peer),
        "RCPT": lambda ctx: seen["RCPT"].append(ctx.session.proxy),
    }
    sink = RecordingMaildir(tmp_path / "Maildir")
    config = {"proxy_protocol": True}
    async with running_server(config, events=events, sink=sink) as srv:
        async with haproxy(tmp_path, srv.port) as ports:
            front = ports[option]
            await trio.to_thread.run_sync(_send_from, CLIENT_IP, front, option)
    assert [peer[0] for peer in seen["connect"]] == [CLIENT_IP]
    assert [peer[0] for peer in seen["MAIL"]] == [CLIENT_IP]
    (proxy,) = seen["RCPT"]
    assert proxy.version == VERSIONS[option]
    # The header names the client and the address it reached: HAProxy's frontend.
    assert proxy.source[0] == CLIENT_IP
    assert proxy.destination == ("127.0.0.1", front)
    (mail,) = sink.mails
    assert mail.session.peer[0] == CLIENT_IP
    assert mail.session.local == ("127.0.0.1", front)
    (stored,) = list((tmp_path / "Maildir" / "new").iterdir())
    message = email.message_from_bytes(stored.read_bytes())
    received = str(message["Received"])
    assert received.startswith(f"from client.test ([{CLIENT_IP}])"), received
    assert "127.0.0.1" not in received


@pytest.mark.needs_tool("haproxy")
async def test_per_address_limit_counts_the_real_client_behind_haproxy(tmp_path: Path) -> None:
    config = {"proxy_protocol": True, "max_connections_per_ip": 1}
    async with running_server(config) as srv:
        async with haproxy(tmp_path, srv.port) as ports:
            front = ports["send-proxy-v2"]
            first = await SMTPClient.connect("127.0.0.1", front, source=CLIENT_IP)
            assert (await first.reply()).code == 220
            # The same client again: over its quota, though HAProxy's address is shared.
            again = await SMTPClient.connect("127.0.0.1", front, source=CLIENT_IP)
            reply = await again.reply()
            assert reply.lines == [b"421 4.7.0 too many connections from your address"]
            # Another client through the same HAProxy is not counted against the first.
            other = await SMTPClient.connect("127.0.0.1", front, source="127.0.0.3")
            assert (await other.reply()).code == 220
            for client in (first, again, other):
                await client.aclose()
            await srv.wait_idle()


# ---------------------------------------------------------------------- without HAProxy

V1_HEADER = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n"


def _v2_header() -> bytes:
    body = socket.inet_aton("192.0.2.7") + socket.inet_aton("198.51.100.1")
    body += (40000).to_bytes(2, "big") + (25).to_bytes(2, "big")
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body


@contextlib.contextmanager
def _no_greeting_expected(seen: list[object]) -> Iterator[None]:
    yield
    assert seen == [], "the connect hook ran: the client was about to be greeted"


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
        b"PROXY TCP4 " + b"9" * 200,
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff" + b"\x00" * 64,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    ids=["smtp-without-header", "v1-missing-port", "v1-oversized", "v2-oversized", "tls"],
)
async def test_connection_without_a_valid_header_is_closed_without_greeting(
    first_bytes: bytes,
) -> None:
    seen: list[object] = []
    # Closed at once, long before the (hang-sized) proxy_timeout could close it.
    config = {"proxy_protocol": True, "proxy_timeout": 2 * HANG}
    async with running_server(config, events={"connect": seen.append}) as srv:
        with _no_greeting_expected(seen):
            client = await srv.connect()
            await client.send(first_bytes)
            assert await client.expect_closed(within=HANG) == b""
            await srv.wait_idle()
    assert srv.logger.matching("no valid PROXY header")


async def test_connection_that_sends_nothing_is_closed_at_the_proxy_timeout() -> None:
    seen: list[object] = []
    config = {"proxy_protocol": True, "proxy_timeout": 0.3}
    async with running_server(config, events={"connect": seen.append}) as srv:
        with _no_greeting_expected(seen):
            client = await srv.connect()
            assert await client.expect_closed(within=HANG) == b""
            await srv.wait_idle()


@pytest.mark.parametrize("header", [V1_HEADER, _v2_header()], ids=["v1", "v2"])
async def test_header_from_an_untrusted_address_is_closed_without_greeting(header: bytes) -> None:
    seen: list[object] = []
    config = {"proxy_protocol": True, "proxy_from": ["10.9.9.9/32"]}
    async with running_server(config, events={"connect": seen.append}) as srv:
        with _no_greeting_expected(seen):
            client = await srv.connect()
            with contextlib.suppress(trio.BrokenResourceError):
                await client.send(header + b"EHLO client.test\r\n")
            assert await client.expect_closed(within=HANG) == b""
            await srv.wait_idle()
    assert srv.logger.matching("is not allowed to send a PROXY header")


@pytest.mark.parametrize("header", [V1_HEADER, _v2_header()], ids=["v1", "v2"])
async def test_valid_header_from_a_trusted_address_is_greeted_and_names_the_client(
    header: bytes,
) -> None:
    """The positive control for the refusals above, with the header and EHLO in one write."""
    peers: list[tuple[str, int]] = []
    async with running_server(
        {"proxy_protocol": True}, events={"connect": lambda s: peers.append(s.peer)}
    ) as srv:
        client = await srv.connect()
        await client.send(header + b"EHLO client.test\r\n")
        assert (await client.reply()).code == 220
        assert (await client.reply()).code == 250
        assert (await client.command(b"QUIT")).code == 221
    assert peers == [("192.0.2.7", 40000)]

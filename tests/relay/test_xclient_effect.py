"""XCLIENT's NAME, HELO, PROTO, DESTADDR and DESTPORT are what hooks and Received see.

Driven with swaks's ``--xclient-*`` options over a real socket: after XCLIENT, swaks greets
again with its own ``--helo`` (the proxy's name), which must not replace the client's.
"""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_smtp import Server
from trio_smtp.sinks import MaildirSink
from trio_smtp.testing import RecordingLogger


async def _serve_swaks(tmp_path: Path, *xclient: str) -> tuple[dict[str, Any], str, str]:
    from conftest import require_tool

    swaks = require_tool("swaks")
    seen: dict[str, Any] = {}

    def rcpt(ctx: Any) -> None:
        s = ctx.session
        seen.update(
            peer=s.peer,
            client_name=s.client_name,
            helo_name=s.helo_name,
            protocol=s.protocol,
            local=s.local,
        )

    logger = RecordingLogger()
    server = Server(
        {
            "events": {"RCPT": rcpt},
            "config": {"port": 0, "hostname": "mx.test", "xclient_from": ["127.0.0.0/8"]},
        },
        {"sink": MaildirSink(tmp_path / "Maildir"), "logger": logger},
    )
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)
        argv = [swaks, "--server", f"{host}:{port}", "--helo", "proxy.test", *xclient]
        argv += ["--from", "a@x.test", "--to", "b@y.test", "--body", "via a proxy"]
        done = await trio.run_process(
            argv,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        await server.wait_connections(0)
        server.shutdown()
    transcript = done.stdout.decode(errors="replace")
    assert done.returncode == 0, transcript
    [message] = list(mailbox.Maildir(str(tmp_path / "Maildir"), create=False))
    received = message["Received"]
    log = "\n".join(text for _, text in logger.lines)
    return seen, " ".join(str(received).split()), log


@pytest.mark.needs_tool("swaks")
async def test_name_helo_proto_and_destination_are_the_clients(tmp_path: Path) -> None:
    seen, received, log = await _serve_swaks(
        tmp_path,
        "--xclient-addr", "203.0.113.7", "--xclient-port", "4000",
        "--xclient-name", "client.example", "--xclient-helo", "helo.client.example",
        "--xclient-proto", "SMTP",
        "--xclient-destaddr", "198.51.100.2", "--xclient-destport", "587",
    )  # fmt: skip
    assert seen == {
        "peer": ("203.0.113.7", 4000),
        "client_name": "client.example",
        "helo_name": "helo.client.example",  # not swaks's own second EHLO proxy.test
        "protocol": "SMTP",  # the client said HELO, whatever the proxy says
        "local": ("198.51.100.2", 587),
    }
    assert received.startswith(
        "from helo.client.example (client.example [203.0.113.7]) by mx.test with SMTP id "
    ), received
    assert "proxy.test" not in received
    assert "127.0.0.1" not in received
    assert "XCLIENT: id=" in log
    assert "name=client.example helo=helo.client.example" in log


@pytest.mark.needs_tool("swaks")
async def test_unavailable_name_and_helo_name_nobody(tmp_path: Path) -> None:
    seen, received, _ = await _serve_swaks(
        tmp_path,
        "--xclient-addr", "203.0.113.9",
        "--xclient-name", "[TEMPUNAVAIL]", "--xclient-helo", "[UNAVAILABLE]",
        "--xclient-proto", "ESMTP",
    )  # fmt: skip
    assert seen["client_name"] is None
    assert seen["helo_name"] is None  # unknown: not the proxy's name either
    assert seen["protocol"] == "ESMTP"
    # No name to give: the address literal alone, as without XCLIENT.
    assert received.startswith("from [203.0.113.9] ([203.0.113.9]) by mx.test with ESMTP id ")

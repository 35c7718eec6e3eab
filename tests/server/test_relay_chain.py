"""RelaySink between two trio_smtp servers: the message arrives, with our trace header."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import pytest
import trio

from trio_smtp import Reply, Server
from trio_smtp.sinks import MemorySink, RelaySink


class _Quiet:
    def __getattr__(self, _name: str) -> object:
        return lambda _message: None


def _send(port: int, to: list[str]) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        return s.sendmail(
            "ann@example.org", to, b"Subject: relayed\r\n\r\n.leading dot\r\nbody\r\n"
        )


async def test_relay_into_a_second_trio_smtp_over_starttls(tls_files: dict[str, Path]) -> None:
    downstream_sink = MemorySink()

    def rcpt(ctx: object) -> Reply | None:
        address = getattr(ctx, "address", "")
        return Reply(550, "5.1.1 no such user") if address.startswith("nobody@") else None

    downstream = Server(
        {
            "events": {"RCPT": rcpt},
            "config": {
                "port": 0,
                "hostname": "downstream.test",
                "tls_cert": str(tls_files["cert"]),
                "tls_key": str(tls_files["key"]),
            },
        },
        {"sink": downstream_sink, "logger": _Quiet()},
    )
    async with trio.open_nursery() as nursery:
        (_, down_port), *_ = await nursery.start(downstream.serve)
        context = ssl.create_default_context(cafile=str(tls_files["ca"]))
        relay = RelaySink(
            "127.0.0.1", down_port, starttls="require", ssl_context=context, timeout=10
        )
        upstream = Server(
            # Relaying is closed by default: this client (loopback) is allowed.
            {"config": {"port": 0, "hostname": "upstream.test", "relay_from": ["127.0.0.0/8"]}},
            {"sink": relay, "logger": _Quiet()},
        )
        (_, up_port), *_ = await nursery.start(upstream.serve)

        refused = await trio.to_thread.run_sync(_send, up_port, ["bob@example.com"])
        assert refused == {}
        [mail] = downstream_sink.messages
        assert mail.mail_from == "ann@example.org"
        assert mail.rcpt_tos == ["bob@example.com"]
        assert mail.session.tls is not None  # the relay hop used STARTTLS
        assert mail.message["Subject"] == "relayed"
        received = mail.message.get_all("Received")
        assert received is not None
        assert any("by upstream.test" in r for r in received)
        # Dot-stuffing survives two hops: the content is exactly what the client sent.
        assert mail.content.endswith(b"\r\n\r\n.leading dot\r\nbody\r\n")

        # The downstream's refusal comes back to our client with the same code, at the
        # final dot (we accepted RCPT before the relay knew), and nothing is delivered.
        with pytest.raises(smtplib.SMTPDataError) as refusal:
            await trio.to_thread.run_sync(_send, up_port, ["nobody@example.com"])
        assert refusal.value.smtp_code == 550
        assert b"5.1.1" in refusal.value.smtp_error
        assert len(downstream_sink.messages) == 1

        upstream.shutdown()
        downstream.shutdown()

"""Testing mail from Trio code, with pytest-trio.

``smtp_server`` runs in the test's own event loop. pytest-trio (brought by
``pip install "trio_smtp[testing]"``) must run the test: either set ``trio_mode = true``
under ``[tool.pytest.ini_options]`` or mark each test with ``@pytest.mark.trio`` as here.
Run with ``pytest examples/testing/test_async_mail.py``.
"""

from __future__ import annotations

import smtplib

import pytest
import trio

from trio_smtp.testing import SMTPServerFactory, SMTPTestServer


# ---- the application under test: Trio code that sends mail (smtplib in a thread) ----
async def notify(port: int, *recipients: str) -> None:
    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for to in recipients:
                smtp.sendmail("app@example.org", [to], f"Subject: ping {to}\r\n\r\nping\r\n")

    await trio.to_thread.run_sync(send)


# ---- the tests ----
@pytest.mark.trio
async def test_notify(smtp_server: SMTPTestServer) -> None:
    await notify(smtp_server.port, "ann@example.com", "bob@example.com")
    await smtp_server.wait_for(2)
    assert [m.headers["Subject"] for m in smtp_server.messages] == [
        "ping ann@example.com",
        "ping bob@example.com",
    ]
    smtp_server.reset()
    assert smtp_server.messages == []


@pytest.mark.trio
async def test_two_servers_do_not_share_mail(smtp_server_factory: SMTPServerFactory) -> None:
    first = await smtp_server_factory()
    second = await smtp_server_factory(lmtp=False, max_message_size=1_000_000)
    await notify(first.port, "ann@example.com")
    await first.wait_for(1)
    assert second.messages == []

"""Testing an application's mail with plain pytest and smtplib (Django / Flask style).

The ``threaded_smtp_server`` fixture comes with trio_smtp (``pip install
"trio_smtp[testing]"``): a real SMTP server on a free port, in a thread of its own.
Run with ``pytest examples/testing/test_signup_mail.py``.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from trio_smtp.testing import ThreadedServer, ThreadedServerFactory


# ---- the application under test (in real life: your code, pointed at SMTP_PORT) ----
def send_welcome(port: int, to: str, report: bytes | None = None) -> None:
    msg = EmailMessage()
    msg["From"] = "app@example.org"
    msg["To"] = to
    msg["Subject"] = "Welcome"
    msg.set_content("Hello, and welcome!")
    if report is not None:
        msg.add_attachment(report, maintype="application", subtype="pdf", filename="terms.pdf")
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(msg)


# ---- the tests ----
def test_welcome_mail(threaded_smtp_server: ThreadedServer) -> None:
    send_welcome(threaded_smtp_server.port, "ann@example.com", report=b"%PDF-1.4 terms")
    threaded_smtp_server.wait_for(1)
    [mail] = threaded_smtp_server.messages_to("ann@example.com")
    assert mail.headers["subject"] == "Welcome"
    assert mail.text == "Hello, and welcome!\n"
    assert [(a.filename, a.content) for a in mail.attachments] == [("terms.pdf", b"%PDF-1.4 terms")]


def test_mail_over_tls_with_a_login(threaded_smtp_server_factory: ThreadedServerFactory) -> None:
    server = threaded_smtp_server_factory(tls=True, auth={"app": "s3cret"}, auth_required=True)
    with smtplib.SMTP(server.host, server.port) as smtp:
        smtp.starttls(context=server.client_ssl_context)
        smtp.login("app", "s3cret")
        smtp.sendmail("app@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
    server.wait_for(1)
    assert server.messages[0].session.authenticated_as == "app"

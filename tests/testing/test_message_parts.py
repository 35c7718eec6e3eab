"""Mail.headers, Mail.text and Mail.attachments: what tests ask of a received message."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from trio_smtp import Mail, Session


def _mail(message: EmailMessage | bytes) -> Mail:
    content = message if isinstance(message, bytes) else message.as_bytes()
    return Mail(id="M1", session=Session(id="S1", peer=("127.0.0.1", 1)), content=content)


def test_headers_are_decoded_and_ignore_case() -> None:
    raw = (
        b"Received: from a\r\nReceived: from b\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nTo: ann@example.com\r\n\r\nbody\r\n"
    )
    headers = _mail(raw).headers
    assert headers["SUBJECT"] == "café"
    assert headers.get_all("received") == ["from a", "from b"]
    assert list(headers) == ["Received", "Subject", "To"]
    assert len(headers) == 3
    assert "to" in headers
    with pytest.raises(KeyError):
        headers["Cc"]


def test_text_prefers_plain_then_html() -> None:
    msg = EmailMessage()
    msg["Subject"] = "both"
    msg.set_content("plain ☃\n")
    msg.add_alternative("<p>html</p>\n", subtype="html")
    assert _mail(msg).text == "plain ☃\n"
    html_only = EmailMessage()
    html_only.set_content("<p>only</p>\n", subtype="html")
    assert _mail(html_only).text == "<p>only</p>\n"
    assert _mail(b"Subject: x\r\nContent-Type: image/png\r\n\r\nxx\r\n").text == ""


def test_text_decodes_the_transfer_encoding() -> None:
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 au lait\r\nline two\r\n"
    )
    assert _mail(raw).text == "café au lait\nline two\n"


def test_attachments() -> None:
    msg = EmailMessage()
    msg.set_content("see attached")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment("col1,col2\n", subtype="csv", filename="b.csv")
    [pdf, csv] = _mail(msg).attachments
    assert (pdf.filename, pdf.content_type, pdf.content) == (
        "a.pdf",
        "application/pdf",
        b"\x00\x01binary",
    )
    assert (csv.filename, csv.content_type) == ("b.csv", "text/csv")
    assert csv.content.replace(b"\r\n", b"\n") == b"col1,col2\n"
    assert _mail(b"Subject: none\r\n\r\nplain\r\n").attachments == []

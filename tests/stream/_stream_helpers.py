"""Shared by the streaming-body tests: spooled bodies and a look at open spool files."""

from __future__ import annotations

import os
from pathlib import Path

from trio_smtp._mail import Mail, Recipient
from trio_smtp._session import Session
from trio_smtp._spool import Body, Spool


def big_content(size: int) -> bytes:
    """A message of about ``size`` bytes, CRLF lines that differ (a shifted copy shows)."""
    head = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: big\r\n\r\n"
    lines = []
    n = len(head)
    i = 0
    while n < size:
        line = b"line %08d " % i + b"x" * 60 + b"\r\n"
        # mbox quoting must round-trip these.
        if i % 97 == 0:
            line = b">" * (i % 3) + b"From the middle of a line %d\r\n" % i
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines)


async def spooled_body(content: bytes, spool: Spool, *, piece: int = 65536) -> Body:
    """A finished body filled with ``content`` in pieces, as the engine would hand it."""
    body = spool.body()
    for i in range(0, len(content), piece):
        await body.append(content[i : i + piece])
    await body.finish()
    return body


def spool_fds(spool_dir: Path) -> list[str]:
    """What this process's open descriptors name inside ``spool_dir`` (deleted or not)."""
    found = []
    prefix = str(spool_dir) + "/"
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def mail_with_body(body: Body | None = None, *, content: bytes | None = None) -> Mail:
    session = Session(
        id="S1", peer=("192.0.2.7", 40000), hostname="mx.example.org", helo_name="c.example"
    )
    kwargs: dict[str, object] = {}
    if body is not None:
        kwargs["body"] = body
    if content is not None:
        kwargs["content"] = content
    return Mail(
        id="Q1",
        session=session,
        mail_from="a@example.com",
        recipients=[Recipient(address="b@example.org")],
        **kwargs,  # type: ignore[arg-type]
    )

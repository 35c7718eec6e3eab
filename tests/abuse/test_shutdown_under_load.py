"""Graceful shutdown while twenty clients send as fast as they can.

SPEC §6: a message is acknowledged only once the sink has it (a Maildir sink has
fsynced it), and a broken transaction delivers nothing. So after ``server.shutdown()``
the set of messages the clients saw a 250 for must be exactly the set of files in the
Maildir's ``new/``: none lost, none stored without its 250, nothing left in ``tmp/``.
"""

from __future__ import annotations

import mailbox
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import trio
from _abuse_harness import HANG, make_message, running_server, settle

from trio_smtp.sinks import MaildirSink

SENDERS = 20


def _sender(port: int, n: int, acknowledged: list[str], lock: threading.Lock) -> str:
    """Send messages over one connection after another until the server turns us away.

    Returns how the sender was turned away.
    """
    i = 0
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=HANG) as smtp:
                while True:
                    i += 1
                    tag = f"sender{n}-msg{i}"
                    smtp.sendmail("ann@example.org", ["bob@example.net"], make_message(tag))
                    # sendmail returned: the server answered 250 to the final dot.
                    with lock:
                        acknowledged.append(tag)
                    if i % 3 == 0:
                        break  # also exercise connections that end and new ones
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:
                return "421"
            raise
        except smtplib.SMTPServerDisconnected:
            return "disconnected"
        except ConnectionRefusedError:
            return "refused"


async def test_graceful_shutdown_under_load_stores_exactly_the_acknowledged_messages(
    tmp_path: Path,
) -> None:
    maildir = tmp_path / "Maildir"
    acknowledged: list[str] = []
    lock = threading.Lock()
    outcomes: list[str] = []
    config = {"shutdown_grace": 5.0}
    async with running_server(config, sink=MaildirSink(maildir)) as srv:
        port = srv.port

        async def sender(n: int) -> None:
            outcomes.append(await trio.to_thread.run_sync(_sender, port, n, acknowledged, lock))

        async with trio.open_nursery() as clients:
            for n in range(SENDERS):
                clients.start_soon(sender, n)
            await settle(lambda: len(acknowledged) >= 3 * SENDERS)
            srv.server.shutdown()
        with trio.fail_after(HANG):
            await srv.wait_idle()

    assert len(outcomes) == SENDERS
    # Some sessions were cut at a command (421), some found the port closed.
    assert set(outcomes) <= {"421", "disconnected", "refused"}
    box = mailbox.Maildir(maildir, create=False)
    stored = sorted(str(msg["Subject"]) for msg in box)
    assert stored == sorted(acknowledged)
    assert len(set(stored)) == len(stored)  # no duplicates either
    assert list((maildir / "tmp").iterdir()) == []
    log = srv.logger.matching("Server shutting down")
    assert len(log) == 1


class SlowDiskMaildir(MaildirSink):
    """A Maildir on a disk so slow that the grace period runs out mid-write."""

    def _store(self, *args: Any) -> None:
        time.sleep(0.3)  # in the worker thread, where cancellation cannot reach
        super()._store(*args)


async def test_grace_running_out_during_a_slow_write_still_acknowledges_what_was_stored(
    tmp_path: Path,
) -> None:
    """A message the sink stored while the grace period ran out still gets its 250.

    Otherwise the client, told 421, sends it again: a duplicate.
    """
    maildir = tmp_path / "Maildir"
    acknowledged: list[str] = []
    lock = threading.Lock()
    async with running_server({"shutdown_grace": 0.1}, sink=SlowDiskMaildir(maildir)) as srv:
        port = srv.port

        async def sender(n: int) -> None:
            await trio.to_thread.run_sync(_sender, port, n, acknowledged, lock)

        async with trio.open_nursery() as clients:
            for n in range(SENDERS):
                clients.start_soon(sender, n)
            await settle(lambda: len(acknowledged) >= SENDERS)
            # Every sender is now (or soon) inside a 0.3 s write; the grace is 0.1 s.
            srv.server.shutdown()
    box = mailbox.Maildir(maildir, create=False)
    stored = sorted(str(msg["Subject"]) for msg in box)
    assert stored == sorted(acknowledged)
    assert list((maildir / "tmp").iterdir()) == []

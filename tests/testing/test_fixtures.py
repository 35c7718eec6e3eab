"""trio_smtp.testing: the pytest fixtures and ThreadedServer, used the way an app's tests would."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest
import trio

from trio_smtp import Context, Reply
from trio_smtp.testing import SMTPTestServer, ThreadedServer


def _send(
    host: str, port: int, subject: str, to: list[str] | None = None
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(host, port, timeout=10) as s:
        return s.sendmail(
            "app@example.org",
            to or ["user@example.com"],
            f"Subject: {subject}\r\n\r\nbody\r\n".encode(),
        )


def test_threaded_fixture_collects_messages_from_sync_code(
    threaded_smtp_server: ThreadedServer,
) -> None:
    _send(threaded_smtp_server.host, threaded_smtp_server.port, "Welcome")
    threaded_smtp_server.wait_for(1)
    [mail] = threaded_smtp_server.messages
    assert mail.message["Subject"] == "Welcome"
    assert mail.rcpt_tos == ["user@example.com"]
    threaded_smtp_server.reset()
    assert threaded_smtp_server.messages == []


def _task_names(task: trio.lowlevel.Task) -> list[str]:
    names = [task.name]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            names += _task_names(child)
    return names


async def test_trio_fixture_runs_in_the_tests_event_loop(smtp_server: SMTPTestServer) -> None:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    tasks = _task_names(root)
    assert any(name.endswith("Server.serve") for name in tasks)
    await trio.to_thread.run_sync(_send, smtp_server.host, smtp_server.port, "Hi")
    assert [m.message["Subject"] for m in smtp_server.messages] == ["Hi"]
    smtp_server.reset()
    assert smtp_server.messages == []


def test_threaded_server_starts_fast_and_stops_cleanly() -> None:
    before = threading.active_count()
    connects: list[object] = []
    with ThreadedServer({"events": {"connect": connects.append}}) as smtp:
        # Unlike aiosmtpd's Controller, starting does not probe the port with a connection.
        assert connects == []
        assert smtp.port > 0
        _send(smtp.host, smtp.port, "one")
        smtp.wait_for(1)
    assert len(connects) == 1
    assert threading.active_count() == before
    with pytest.raises(OSError):
        socket.create_connection((smtp.host, smtp.port), timeout=1).close()


def test_threaded_server_raises_at_once_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The bind error itself, not the RuntimeError of a start that timed out.
        with pytest.raises(OSError, match="Address already in use"):
            ThreadedServer({"config": {"port": port}}).start()


def test_threaded_server_takes_hooks_like_server() -> None:
    def rcpt(ctx: Context) -> None:
        if ctx.address != "known@example.com":
            raise Reply(550, "5.1.1 no such user")

    with ThreadedServer({"events": {"RCPT": rcpt}}) as smtp:
        refused = _send(smtp.host, smtp.port, "x", ["known@example.com", "other@example.com"])
        assert refused == {"other@example.com": (550, b"5.1.1 no such user")}
        smtp.wait_for(1)
        assert smtp.messages[0].rcpt_tos == ["known@example.com"]


def test_wait_for_names_what_arrived_on_timeout() -> None:
    with ThreadedServer() as smtp, pytest.raises(TimeoutError, match=r"expected 1 message.*got 0"):
        smtp.wait_for(1, timeout=0.05)

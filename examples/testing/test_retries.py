"""Testing retry logic: the server fails on purpose, the client must retry.

Every trio_smtp test server injects failures: ``fail(event, code, text, times=,
match=)``, ``delay(event, seconds)`` and ``tempfail_rate(p, seed=)``; ``server.log``
tells, in order, what happened to each command. Run with
``pytest examples/testing/test_retries.py``.
"""

from __future__ import annotations

import smtplib

import pytest

from trio_smtp.testing import ThreadedServer


# ---- the application under test: send, retrying transient (4xx) failures ----
def send_with_retries(port: int, to: str, attempts: int = 3) -> int:
    """Send one message; return how many attempts it took."""
    for attempt in range(1, attempts + 1):
        try:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.sendmail("app@example.org", [to], b"Subject: invoice\r\n\r\nattached\r\n")
            return attempt
        except smtplib.SMTPRecipientsRefused as exc:
            code = exc.recipients[to][0]
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
        if not 400 <= code < 500:
            raise RuntimeError(f"permanent failure {code}")
    raise RuntimeError(f"gave up after {attempts} attempts")


# ---- the tests ----
def test_a_temporary_rcpt_failure_is_retried(threaded_smtp_server: ThreadedServer) -> None:
    threaded_smtp_server.fail("RCPT", 451, "4.3.0 try again later", times=2)
    assert send_with_retries(threaded_smtp_server.port, "ann@example.com") == 3
    threaded_smtp_server.wait_for(1)
    rcpts = [line for line in threaded_smtp_server.log if line.startswith("RCPT")]
    assert rcpts == [
        "RCPT ann@example.com -> 451 4.3.0 try again later",
        "RCPT ann@example.com -> 451 4.3.0 try again later",
        "RCPT ann@example.com",
    ]


def test_a_permanent_failure_is_not_retried(threaded_smtp_server: ThreadedServer) -> None:
    threaded_smtp_server.fail("RCPT", 550, "5.1.1 no such user", match="bob@example.com")
    with pytest.raises(RuntimeError, match="permanent failure 550"):
        send_with_retries(threaded_smtp_server.port, "bob@example.com")
    assert threaded_smtp_server.messages == []


def test_retries_survive_a_flaky_server(threaded_smtp_server: ThreadedServer) -> None:
    threaded_smtp_server.tempfail_rate(0.3, seed=7)  # the same 30% fail in every run
    for n in range(10):
        send_with_retries(threaded_smtp_server.port, f"user{n}@example.com", attempts=10)
    threaded_smtp_server.wait_for(10)
    assert any("-> 451" in line for line in threaded_smtp_server.log)

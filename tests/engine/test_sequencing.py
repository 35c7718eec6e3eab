"""Command order (RFC 5321 §4.1.4, §4.3.2; RFC 3030; RFC 2920): 503s and what state follows."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    NEED_DATA,
    CommandRejected,
    Data,
    EngineConfig,
    MailFrom,
    Phase,
    RcptTo,
    Reply,
)
from trio_smtp.engine._state import SEQUENCE, check_sequence

from ._helpers import Driver, merge_message_data, session

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.org>\r\n"
RCPT = b"RCPT TO:<b@example.net>\r\n"


def ready() -> Driver:
    driver = Driver()
    driver.feed(EHLO)
    return driver


def test_mail_before_helo_is_503() -> None:
    driver = Driver()
    assert driver.send(MAIL) == b"503 5.5.1 send HELO or EHLO first\r\n"
    assert driver.events == [
        CommandRejected(
            line="MAIL FROM:<a@example.org>", reply=Reply(503, "5.5.1 send HELO or EHLO first")
        )
    ]
    assert driver.engine.phase is Phase.INITIAL


def test_nested_mail_is_503_and_keeps_the_first_transaction() -> None:
    driver = ready()
    driver.feed(MAIL)
    assert driver.send(b"MAIL FROM:<other@x>\r\n") == b"503 5.5.1 nested MAIL command\r\n"
    assert driver.engine.phase is Phase.MAIL
    assert driver.send(RCPT) == b"250 2.1.5 recipient OK\r\n"


def test_rcpt_before_mail_is_503() -> None:
    driver = ready()
    assert driver.send(RCPT) == b"503 5.5.1 need MAIL before RCPT\r\n"
    assert driver.engine.session.recipients == 0


def test_rcpt_before_helo_is_503() -> None:
    assert Driver().send(RCPT) == b"503 5.5.1 need MAIL before RCPT\r\n"


def test_data_before_mail_is_503() -> None:
    assert ready().send(b"DATA\r\n") == b"503 5.5.1 need MAIL before DATA\r\n"


def test_data_before_rcpt_is_503() -> None:
    driver = ready()
    driver.feed(MAIL)
    assert driver.send(b"DATA\r\n") == b"503 5.5.1 need RCPT before DATA (no valid recipients)\r\n"


def test_data_after_all_recipients_were_refused_is_503() -> None:
    driver = Driver(answer=lambda e: Reply(550, "5.1.1 no") if isinstance(e, RcptTo) else None)
    out = driver.send(EHLO + MAIL + RCPT + b"DATA\r\n")
    assert out.endswith(
        b"550 5.1.1 no\r\n503 5.5.1 need RCPT before DATA (no valid recipients)\r\n"
    )
    assert not driver.of_type(Data)


def test_data_after_bdat_is_503() -> None:
    driver = ready()
    driver.feed(MAIL + RCPT)
    assert driver.send(b"BDAT 3\r\nabc") == b"250 2.0.0 3 octets received\r\n"
    assert driver.send(b"DATA\r\n") == b"503 5.5.1 DATA is not allowed after BDAT\r\n"
    assert driver.engine.phase is Phase.CHUNKING


def test_rcpt_after_bdat_is_503() -> None:
    driver = ready()
    driver.feed(MAIL + RCPT + b"BDAT 3\r\nabc")
    assert driver.send(RCPT) == b"503 5.5.1 RCPT is not allowed after BDAT\r\n"


def test_bdat_before_mail_and_before_rcpt_is_503() -> None:
    driver = ready()
    assert driver.send(b"BDAT 0 LAST\r\n") == b"503 5.5.1 need MAIL before BDAT\r\n"
    driver.feed(MAIL)
    assert driver.send(b"BDAT 0 LAST\r\n") == (
        b"503 5.5.1 need RCPT before BDAT (no valid recipients)\r\n"
    )


def test_auth_before_ehlo_is_503() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True)
    assert Driver(config).send(b"AUTH PLAIN\r\n") == b"503 5.5.1 send EHLO first\r\n"


def test_auth_inside_a_transaction_is_503() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True)
    driver = Driver(config)
    driver.feed(EHLO + MAIL)
    assert (
        driver.send(b"AUTH PLAIN\r\n") == b"503 5.5.1 AUTH is not allowed in a mail transaction\r\n"
    )


def test_starttls_inside_a_transaction_is_503() -> None:
    driver = Driver(EngineConfig(starttls=True))
    driver.feed(EHLO + MAIL)
    assert driver.send(b"STARTTLS\r\n") == (
        b"503 5.5.1 STARTTLS is not allowed in a mail transaction\r\n"
    )


def test_second_ehlo_resets_the_transaction() -> None:
    # RFC 5321 §4.1.4: EHLO in a transaction is like RSET.
    driver = ready()
    driver.feed(MAIL + RCPT)
    driver.feed(EHLO)
    assert driver.engine.phase is Phase.READY
    assert driver.engine.session.recipients == 0
    assert driver.send(RCPT) == b"503 5.5.1 need MAIL before RCPT\r\n"


def test_refused_mail_keeps_no_transaction() -> None:
    driver = Driver(answer=lambda e: Reply(550, "5.7.1 no") if isinstance(e, MailFrom) else None)
    driver.feed(EHLO)
    assert driver.send(MAIL) == b"550 5.7.1 no\r\n"
    assert driver.engine.phase is Phase.READY
    assert driver.send(RCPT) == b"503 5.5.1 need MAIL before RCPT\r\n"


def test_refused_rcpt_is_not_counted() -> None:
    driver = Driver(answer=lambda e: Reply(550, "5.1.1 no") if isinstance(e, RcptTo) else None)
    driver.feed(EHLO + MAIL + RCPT)
    assert driver.engine.session.recipients == 0
    assert driver.engine.phase is Phase.MAIL


def test_transaction_after_a_message_starts_fresh() -> None:
    driver = ready()
    driver.feed(MAIL + RCPT + b"DATA\r\nhi\r\n.\r\n")
    assert driver.engine.phase is Phase.READY
    assert not driver.engine.in_transaction
    assert driver.send(RCPT) == b"503 5.5.1 need MAIL before RCPT\r\n"
    assert driver.send(MAIL + RCPT) == b"250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n"


def test_commands_allowed_in_every_phase() -> None:
    driver = ready()
    driver.feed(MAIL + RCPT)
    out = driver.send(b"NOOP\r\nVRFY x\r\nHELP\r\n")
    assert out.startswith(b"250 2.0.0 OK\r\n252 ")
    assert driver.engine.phase is Phase.RCPT


def test_whole_pipelined_session_in_one_chunk() -> None:
    driver = session(EHLO + MAIL + RCPT + RCPT + b"DATA\r\nbody\r\n.\r\nQUIT\r\n")
    tail = driver.output.split(b"250 DSN\r\n", 1)[1]
    assert tail == (
        b"250 2.1.0 sender OK\r\n"
        b"250 2.1.5 recipient OK\r\n"
        b"250 2.1.5 recipient OK\r\n"
        b"354 end data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 OK message accepted\r\n"
        b"221 2.0.0 localhost closing connection\r\n"
    )
    assert driver.content() == b"body\r\n"
    assert driver.closed is not None
    assert driver.closed.reason == "quit"


def test_need_data_only_once_the_input_is_exhausted() -> None:
    driver = Driver()
    driver.engine.receive_data(EHLO + MAIL + RCPT + b"NOOP\r\nNOO")
    kinds = []
    while True:
        event = driver.engine.next_event()
        if event is NEED_DATA:
            break
        kinds.append(type(event).__name__)
        driver.engine.respond()
    assert kinds == ["Helo", "MailFrom", "RcptTo", "Noop"]
    assert driver.engine.buffered == 3  # "NOO" waits for its end
    driver.engine.receive_data(b"P\r\n")
    assert type(driver.engine.next_event()).__name__ == "Noop"


@pytest.mark.parametrize("verb", sorted(SEQUENCE))
def test_every_verb_has_a_sequencing_rule_for_every_phase(verb: str) -> None:
    allowed = [p for p in Phase if check_sequence(verb, p) is None]
    refused = [check_sequence(verb, p) for p in Phase if check_sequence(verb, p) is not None]
    assert allowed, verb
    assert all(r is not None and r.code == 503 for r in refused)


def test_rich_pipelined_session_byte_by_byte_equals_one_chunk() -> None:
    config = EngineConfig(auth_mechanisms=("LOGIN",), auth_insecure=True)
    data = (
        b"EHLO client.example\r\nAUTH LOGIN\r\nYm9i\r\ncHc=\r\nFOO\r\n"
        b"MAIL FROM:<a@b> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\n"
        b"RCPT TO:<postmaster>\r\nDATA\r\n..x\r\nbare\nlf\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<e@f>\r\nBDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\n"
        b"RSET\r\nVRFY x\r\nQUIT\r\n"
    )
    whole = Driver(config)
    whole.feed(data)
    assert whole.closed is not None
    assert whole.closed.reason == "quit"
    assert whole.output.count(b"250 2.0.0 OK message accepted\r\n") == 2
    for size in (1, 2, 3, 7, 64):
        pieces = Driver(config)
        pieces.feed_chunks([data[i : i + size] for i in range(0, len(data), size)])
        assert pieces.output == whole.output, size
        assert merge_message_data(pieces.events) == merge_message_data(whole.events), size

"""Each command's event, default reply and syntax errors, with exact bytes."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    NEED_DATA,
    PAUSED,
    CommandRejected,
    ConnectionClosed,
    Engine,
    EngineConfig,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    MailFrom,
    Noop,
    Phase,
    Quit,
    RcptTo,
    Reply,
    Rset,
    State,
    Vrfy,
)

from ._helpers import EHLO_REPLY, GREETING, Driver


def ehloed(config: EngineConfig | None = None) -> Driver:
    driver = Driver(config)
    driver.feed(b"EHLO client.example\r\n")
    return driver


# ---------------------------------------------------------------- greeting and HELO/EHLO


def test_default_greeting_has_no_enhanced_code() -> None:
    assert Driver().output == GREETING


def test_greeting_uses_hostname_and_banner() -> None:
    config = EngineConfig(hostname="mx.example.com", banner="ESMTP ready")
    assert Driver(config).output == b"220 mx.example.com ESMTP ready\r\n"


def test_engine_is_paused_until_greeted() -> None:
    engine = Engine()
    engine.receive_data(b"NOOP\r\n")
    assert engine.next_event() is PAUSED
    assert engine.data_to_send() == b""
    engine.greet()
    assert isinstance(engine.next_event(), Noop)


def test_greeting_with_a_rejection_closes_the_session() -> None:
    # RFC 5321 §3.1: a server may refuse the connection with 554 instead of 220.
    engine = Engine()
    engine.greet(Reply(554, "5.7.1 no service for you"))
    assert engine.data_to_send() == b"554 5.7.1 no service for you\r\n"
    assert engine.next_event() == ConnectionClosed(reason="rejected")
    assert engine.state is State.CLOSED


def test_greeting_twice_is_a_local_error() -> None:
    engine = Engine()
    engine.greet()
    with pytest.raises(LocalProtocolError):
        engine.greet()


def test_ehlo_default_reply_lists_the_extensions_without_enhanced_codes() -> None:
    driver = Driver()
    assert driver.send(b"EHLO client.example\r\n") == EHLO_REPLY
    [event] = driver.events
    assert isinstance(event, Helo)
    assert (event.verb, event.name, event.extended) == ("EHLO", "client.example", True)
    assert driver.engine.session.helo_name == "client.example"
    assert driver.engine.session.esmtp is True
    assert driver.engine.phase is Phase.READY


def test_helo_default_reply_is_the_hostname_alone() -> None:
    driver = Driver(EngineConfig(hostname="mx.example.com"))
    assert driver.send(b"HELO client.example\r\n") == b"250 mx.example.com\r\n"
    [event] = driver.events
    assert isinstance(event, Helo)
    assert (event.verb, event.name, event.extended) == ("HELO", "client.example", False)
    assert driver.engine.session.esmtp is False


def test_helo_accepts_an_address_literal_and_lowercase_verb() -> None:
    driver = Driver()
    assert driver.send(b"ehlo [192.0.2.1]\r\n").startswith(b"250-localhost\r\n")
    assert driver.engine.session.helo_name == "[192.0.2.1]"


@pytest.mark.parametrize("line", [b"HELO", b"EHLO", b"HELO a b", b"EHLO   "])
def test_helo_without_a_single_name_is_a_syntax_error(line: bytes) -> None:
    driver = Driver()
    verb = line[:4].decode()
    assert driver.send(line + b"\r\n") == f"501 5.5.4 syntax: {verb} hostname\r\n".encode()
    assert driver.engine.phase is Phase.INITIAL


def test_hook_refusing_ehlo_gets_no_enhanced_code_and_keeps_the_phase() -> None:
    driver = Driver(answer=lambda e: Reply(550, "go away") if isinstance(e, Helo) else None)
    assert driver.send(b"EHLO spammer\r\n") == b"550 go away\r\n"
    assert driver.engine.phase is Phase.INITIAL
    assert driver.engine.session.helo_name is None


def test_hook_custom_ehlo_reply_is_sent_verbatim() -> None:
    driver = Driver(answer=lambda e: Reply(250, "mx says hi\nPIPELINING"))
    assert driver.send(b"EHLO c\r\n") == b"250-mx says hi\r\n250 PIPELINING\r\n"


# ---------------------------------------------------------------- the other commands


def test_mail_default_reply_and_event() -> None:
    driver = ehloed()
    assert driver.send(b"MAIL FROM:<a@example.org>\r\n") == b"250 2.1.0 sender OK\r\n"
    event = driver.events[-1]
    assert isinstance(event, MailFrom)
    assert event.address == "a@example.org"
    assert event.params == {}
    assert (event.size, event.body, event.smtputf8) == (None, "7BIT", False)
    assert driver.engine.phase is Phase.MAIL
    assert driver.engine.in_transaction


def test_rcpt_default_reply_and_event() -> None:
    driver = ehloed()
    driver.feed(b"MAIL FROM:<a@example.org>\r\n")
    assert driver.send(b"RCPT TO:<b@example.net>\r\n") == b"250 2.1.5 recipient OK\r\n"
    event = driver.events[-1]
    assert isinstance(event, RcptTo)
    assert (event.address, event.params, event.notify, event.orcpt) == (
        "b@example.net",
        {},
        None,
        None,
    )
    assert driver.engine.session.recipients == 1
    assert driver.engine.phase is Phase.RCPT


def test_mail_and_rcpt_keywords_are_case_insensitive() -> None:
    driver = ehloed()
    out = driver.send(b"mail from:<a@b>\r\nrcpt to:<c@d>\r\n")
    assert out == b"250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n"


def test_space_after_the_colon_is_tolerated() -> None:
    driver = ehloed()
    out = driver.send(b"MAIL FROM: <a@b>\r\nRCPT TO: <c@d>\r\n")
    assert out == b"250 2.1.0 sender OK\r\n250 2.1.5 recipient OK\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL", b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"),
        (b"MAIL TO:<a@b>", b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"),
        (b"MAIL FROM", b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"),
        (b"MAIL FROM:", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"MAIL FROM:<a@b", b"501 5.1.7 bad sender address syntax\r\n"),
    ],
)
def test_mail_syntax_errors(line: bytes, reply: bytes) -> None:
    driver = ehloed()
    assert driver.send(line + b"\r\n") == reply
    assert isinstance(driver.events[-1], CommandRejected)
    assert driver.engine.phase is Phase.READY


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT", b"501 5.5.4 syntax: RCPT TO:<address>\r\n"),
        (b"RCPT FROM:<a@b>", b"501 5.5.4 syntax: RCPT TO:<address>\r\n"),
        (b"RCPT TO:<>", b"501 5.1.3 bad recipient address syntax\r\n"),
        (b"RCPT TO:", b"501 5.1.3 bad recipient address syntax\r\n"),
    ],
)
def test_rcpt_syntax_errors(line: bytes, reply: bytes) -> None:
    driver = ehloed()
    driver.feed(b"MAIL FROM:<a@b>\r\n")
    assert driver.send(line + b"\r\n") == reply
    assert driver.engine.session.recipients == 0
    assert driver.engine.phase is Phase.MAIL


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"DATA now", b"501 5.5.4 syntax: DATA\r\n"),
        (b"RSET all", b"501 5.5.4 syntax: RSET\r\n"),
        (b"QUIT now", b"501 5.5.4 syntax: QUIT\r\n"),
        (b"VRFY", b"501 5.5.4 syntax: VRFY address\r\n"),
        (b"EXPN", b"501 5.5.4 syntax: EXPN list\r\n"),
    ],
)
def test_argument_syntax_errors(line: bytes, reply: bytes) -> None:
    driver = ehloed()
    driver.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert driver.send(line + b"\r\n") == reply
    assert driver.engine.state is State.COMMAND
    assert driver.closed is None


def test_rset_default_reply_ends_the_transaction() -> None:
    driver = ehloed()
    driver.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert driver.send(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert isinstance(driver.events[-1], Rset)
    assert driver.engine.phase is Phase.READY
    assert driver.engine.session.recipients == 0
    assert driver.send(b"MAIL FROM:<x@y>\r\n") == b"250 2.1.0 sender OK\r\n"


def test_rset_before_helo_keeps_the_initial_phase() -> None:
    driver = Driver()
    assert driver.send(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert driver.engine.phase is Phase.INITIAL


def test_noop_default_reply_with_and_without_argument() -> None:
    driver = Driver()
    assert driver.send(b"NOOP\r\nNOOP anything at all\r\n") == b"250 2.0.0 OK\r\n" * 2
    assert [e.argument for e in driver.of_type(Noop)] == ["", "anything at all"]


def test_quit_default_reply_then_connection_closed() -> None:
    driver = Driver(EngineConfig(hostname="mx.example.com"))
    assert driver.send(b"QUIT\r\nNOOP\r\n") == b"221 2.0.0 mx.example.com closing connection\r\n"
    assert isinstance(driver.events[0], Quit)
    assert driver.events[1] == ConnectionClosed(reason="quit")
    assert len(driver.events) == 2
    # The session is over: more input is ignored, and the close is repeated.
    driver.engine.receive_data(b"NOOP\r\n")
    assert driver.engine.next_event() == ConnectionClosed(reason="quit")
    assert driver.engine.data_to_send() == b""


def test_vrfy_default_reply_is_252() -> None:
    driver = Driver()
    assert driver.send(b"VRFY postmaster\r\n") == (
        b"252 2.0.0 cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    event = driver.events[-1]
    assert isinstance(event, Vrfy)
    assert event.argument == "postmaster"


def test_expn_default_reply_is_502() -> None:
    driver = Driver()
    assert driver.send(b"EXPN staff\r\n") == b"502 5.5.1 EXPN not available\r\n"
    event = driver.events[-1]
    assert isinstance(event, Expn)
    assert event.argument == "staff"


def test_help_default_reply() -> None:
    driver = Driver()
    expected = (
        b"214 2.0.0 commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP"
        b" STARTTLS AUTH\r\n"
    )
    assert driver.send(b"HELP\r\nHELP MAIL\r\n") == expected * 2
    assert [e.argument for e in driver.of_type(Help)] == ["", "MAIL"]


def test_help_in_lmtp_names_lhlo() -> None:
    driver = Driver(EngineConfig(lmtp=True))
    assert driver.send(b"HELP\r\n").startswith(b"214 2.0.0 commands: LHLO MAIL ")


def test_hook_can_answer_vrfy_positively() -> None:
    driver = Driver(answer=lambda e: Reply(250, "2.1.5 <bob@example.org>"))
    assert driver.send(b"VRFY bob\r\n") == b"250 2.1.5 <bob@example.org>\r\n"


# ---------------------------------------------------------------- errors the engine answers


def test_unknown_command_is_500_5_5_2() -> None:
    driver = Driver()
    assert driver.send(b"FOO bar\r\n") == b"500 5.5.2 command not recognized\r\n"
    assert driver.events == [
        CommandRejected(line="FOO bar", reply=Reply(500, "5.5.2 command not recognized"))
    ]


def test_empty_line_is_500_empty_command() -> None:
    driver = Driver()
    assert driver.send(b"\r\n") == b"500 5.5.2 empty command\r\n"
    assert driver.send(b"   \r\n") == b"500 5.5.2 empty command\r\n"


@pytest.mark.parametrize("verb", [b"TURN", b"ETRN", b"ATRN", b"SEND", b"SOML", b"SAML", b"VERB"])
def test_known_but_not_implemented_commands_get_502(verb: bytes) -> None:
    driver = Driver()
    assert driver.send(verb + b" x\r\n") == b"502 5.5.1 command not implemented\r\n"


def test_starttls_and_auth_not_configured_get_502() -> None:
    driver = ehloed()
    assert driver.send(b"STARTTLS\r\n") == b"502 5.5.1 STARTTLS not available\r\n"
    assert driver.send(b"AUTH PLAIN\r\n") == b"502 5.5.1 authentication not enabled\r\n"


def test_bdat_with_chunking_disabled_gets_502() -> None:
    driver = ehloed(EngineConfig(chunking=False))
    driver.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    # The 502 comes once the chunk has been read (and thrown away).
    assert driver.send(b"BDAT 1 LAST\r\nX") == b"502 5.5.1 command not implemented\r\n"


def test_lhlo_in_smtp_mode_is_an_unknown_command() -> None:
    driver = Driver()
    assert driver.send(b"LHLO client\r\n") == b"500 5.5.2 command not recognized\r\n"


def test_invalid_utf8_command_is_500() -> None:
    driver = Driver()
    assert driver.send(b"NOOP \xff\xfe\r\n") == b"500 5.5.2 command is not valid UTF-8\r\n"


@pytest.mark.parametrize("line", [b"NOOP a\rb", b"NOOP \x00", b"MAIL FROM:<a@b>\r\r"])
def test_cr_or_nul_inside_a_command_line_is_501(line: bytes) -> None:
    driver = ehloed()
    assert driver.send(line + b"\r\n") == b"501 5.5.2 control characters in command\r\n"


def test_bare_lf_ends_a_command_line() -> None:
    driver = Driver()
    assert driver.send(b"NOOP\nNOOP\r\n") == b"250 2.0.0 OK\r\n" * 2


def test_command_split_across_reads_is_answered_once_complete() -> None:
    driver = Driver()
    assert driver.send(b"NO") == b""
    assert driver.send(b"OP\r") == b""
    assert driver.engine.next_event() is NEED_DATA
    assert driver.send(b"\n") == b"250 2.0.0 OK\r\n"


# ---------------------------------------------------------------- API misuse


def test_next_event_before_answering_is_a_local_error() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"NOOP\r\nNOOP\r\n")
    event = engine.next_event()
    assert isinstance(event, Noop)
    assert engine.awaiting_reply
    with pytest.raises(LocalProtocolError, match="Noop"):
        engine.next_event()
    engine.respond()
    assert not engine.awaiting_reply
    assert isinstance(engine.next_event(), Noop)


def test_respond_without_a_pending_event_is_a_local_error() -> None:
    engine = Engine()
    engine.greet()
    with pytest.raises(LocalProtocolError):
        engine.respond()


def test_receive_after_eof_is_a_local_error() -> None:
    engine = Engine()
    engine.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        engine.receive_data(b"NOOP\r\n")


def test_tls_started_without_starttls_is_a_local_error() -> None:
    engine = Engine()
    engine.greet()
    with pytest.raises(LocalProtocolError):
        engine.tls_started()


def test_smtp_end_of_message_takes_exactly_one_reply() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n")
    for _ in range(4):
        engine.next_event()
        engine.respond()
    engine.next_event()
    with pytest.raises(LocalProtocolError):
        engine.respond([Reply(250, "a"), Reply(250, "b")])


def test_respond_with_a_bad_argument_leaves_the_event_pending() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nRSET\r\n")
    for _ in range(3):
        engine.next_event()
        engine.respond()
    engine.data_to_send()
    engine.next_event()  # Data
    with pytest.raises(LocalProtocolError):
        engine.respond("354 go ahead")  # type: ignore[arg-type]
    # The DATA command has not been answered: it must still be waiting for a reply,
    # rather than the engine reading the body ("RSET") as a command.
    assert engine.awaiting_reply
    engine.respond()
    assert engine.data_to_send() == b"354 end data with <CR><LF>.<CR><LF>\r\n"


def test_close_sends_the_reply_and_ends_the_session() -> None:
    engine = Engine()
    engine.greet()
    engine.data_to_send()
    engine.close(Reply(421, "4.4.2 idle timeout"))
    assert engine.data_to_send() == b"421 4.4.2 idle timeout\r\n"
    assert engine.next_event() == ConnectionClosed(reason="closed")
    engine.close(Reply(421, "again"))  # a second close does nothing
    assert engine.data_to_send() == b""


def test_close_while_an_event_awaits_its_reply() -> None:
    engine = Engine()
    engine.greet()
    engine.receive_data(b"NOOP\r\n")
    engine.next_event()
    engine.close()
    assert not engine.awaiting_reply
    assert engine.next_event() == ConnectionClosed(reason="closed")


def test_engine_repr_names_state_and_phase() -> None:
    assert repr(ehloed().engine) == "<Engine state=command phase=ready>"


# ---------------------------------------------------------------- ASCII verbs only


@pytest.mark.parametrize(
    "line",
    [
        "ma\u0131l FROM:<a@x>",  # dotless i: "ma\u0131l".upper() == "MAIL"
        "r\u017fet",  # long s: "r\u017fet".upper() == "RSET"
        "\ufb06ARTTLS",  # the "st" ligature upper-cases to "ST"
        "\ufb06ARTTL\u017f",
        "e\u0127lo x",
        "NOO\u1d18",
        "\u0131",
    ],
)
def test_verbs_are_matched_in_ascii_only(line: str) -> None:
    # RFC 5321 §2.4: verbs are ASCII, case-insensitive in ASCII alone; Unicode case
    # mapping would let look-alikes through filters that compare the raw line.
    driver = Driver(EngineConfig(starttls=True))
    driver.feed(b"EHLO c\r\n")
    out = driver.send(line.encode() + b"\r\n")
    assert out == b"500 5.5.2 command not recognized\r\n"
    assert isinstance(driver.events[-1], CommandRejected)
    assert driver.engine.phase is Phase.READY


def test_ascii_verbs_stay_case_insensitive() -> None:
    driver = Driver()
    out = driver.send(b"eHlO c\r\nmail from:<a@x>\r\nrSeT\r\n")
    assert out.endswith(b"250 2.1.0 sender OK\r\n250 2.0.0 OK\r\n")


def test_auth_mechanism_is_matched_in_ascii_only() -> None:
    driver = Driver(EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True))
    driver.feed(b"EHLO c\r\n")
    out = driver.send("AUTH PLA\u0131N\r\n".encode())
    assert out == b"504 5.5.4 unrecognized authentication type\r\n"


@pytest.mark.parametrize(
    "line",
    ["MAIL \ufb00ROM:<a@x>", "MAIL \ufb01ROM:<a@x>", "MAIL FRO\u1d0d:<a@x>", "RCPT \ufb05O:<b@y>"],
)
def test_from_and_to_keywords_have_no_look_alikes(line: str) -> None:
    driver = Driver()
    driver.feed(b"EHLO c\r\n")
    if line.startswith("RCPT"):
        driver.feed(b"MAIL FROM:<a@x>\r\n")
    out = driver.send(line.encode() + b"\r\n")
    assert out.startswith(b"501 5.5.4 syntax: ")

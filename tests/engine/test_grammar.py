"""RFC 5321 paths and ESMTP parameters: SIZE, BODY, SMTPUTF8, DSN, AUTH=, address forms."""

from __future__ import annotations

import pytest

from trio_smtp.engine import (
    CommandRejected,
    EngineConfig,
    MailFrom,
    RcptTo,
    RemoteProtocolError,
    Reply,
)
from trio_smtp.engine._grammar import decode_xtext, parse_params, parse_path

from ._helpers import Driver


def ready(config: EngineConfig | None = None) -> Driver:
    driver = Driver(config)
    driver.feed(b"EHLO client.example\r\n")
    return driver


def mail(line: bytes, config: EngineConfig | None = None) -> tuple[bytes, MailFrom | None]:
    """Send one MAIL line after EHLO; return the reply and the MailFrom event if any."""
    driver = ready(config)
    out = driver.send(line + b"\r\n")
    event = driver.events[-1]
    return out, event if isinstance(event, MailFrom) else None


def rcpt(
    line: bytes, config: EngineConfig | None = None, *, mail_line: bytes = b"MAIL FROM:<a@b>"
) -> tuple[bytes, RcptTo | None]:
    """Send one RCPT line inside a transaction; return the reply and the RcptTo event."""
    driver = ready(config)
    assert driver.send(mail_line + b"\r\n") == b"250 2.1.0 sender OK\r\n"
    out = driver.send(line + b"\r\n")
    event = driver.events[-1]
    return out, event if isinstance(event, RcptTo) else None


OK_MAIL = b"250 2.1.0 sender OK\r\n"
OK_RCPT = b"250 2.1.5 recipient OK\r\n"


# ---------------------------------------------------------------- SIZE (RFC 1870)


def test_size_is_parsed() -> None:
    out, event = mail(b"MAIL FROM:<a@b> SIZE=12345")
    assert out == OK_MAIL
    assert event is not None
    assert event.size == 12345
    assert event.params == {"SIZE": "12345"}


def test_size_equal_to_the_limit_is_accepted() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> SIZE=1000", EngineConfig(max_message_size=1000))
    assert out == OK_MAIL


def test_size_over_the_limit_is_refused_at_mail() -> None:
    out, event = mail(b"MAIL FROM:<a@b> SIZE=1001", EngineConfig(max_message_size=1000))
    assert out == b"552 5.3.4 message size exceeds fixed maximum message size\r\n"
    assert event is None


def test_size_without_a_limit_accepts_anything() -> None:
    out, event = mail(b"MAIL FROM:<a@b> SIZE=99999999999", EngineConfig(max_message_size=None))
    assert out == OK_MAIL
    assert event is not None
    assert event.size == 99999999999


@pytest.mark.parametrize("value", [b"SIZE=x", b"SIZE=-1", b"SIZE=1.5", b"SIZE=" + b"9" * 21])
def test_bad_size_value_is_501(value: bytes) -> None:
    out, _ = mail(b"MAIL FROM:<a@b> " + value)
    assert out == b"501 5.5.4 bad SIZE value\r\n"


def test_size_without_value_is_501() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> SIZE")
    assert out == b"501 5.5.4 SIZE needs a value\r\n"


# ---------------------------------------------------------------- BODY (RFC 6152, RFC 3030)


@pytest.mark.parametrize(
    ("value", "body"),
    [(b"7BIT", "7BIT"), (b"8bitmime", "8BITMIME"), (b"BINARYMIME", "BINARYMIME")],
)
def test_body_values(value: bytes, body: str) -> None:
    out, event = mail(b"MAIL FROM:<a@b> BODY=" + value)
    assert out == OK_MAIL
    assert event is not None
    assert event.body == body


def test_unknown_body_value_is_501() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> BODY=9BIT")
    assert out == b"501 5.5.4 unsupported BODY=9BIT\r\n"


def test_body_8bitmime_refused_when_not_offered() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> BODY=8BITMIME", EngineConfig(eightbitmime=False))
    assert out == b"501 5.5.4 unsupported BODY=8BITMIME\r\n"


@pytest.mark.parametrize(
    "config", [EngineConfig(binarymime=False), EngineConfig(chunking=False)], ids=["nobin", "nochk"]
)
def test_body_binarymime_refused_when_not_offered(config: EngineConfig) -> None:
    out, _ = mail(b"MAIL FROM:<a@b> BODY=BINARYMIME", config)
    assert out == b"501 5.5.4 unsupported BODY=BINARYMIME\r\n"


# ---------------------------------------------------------------- unknown and malformed params


def test_unknown_mail_parameter_is_555() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> FOO=bar")
    assert out == b"555 5.5.4 unsupported parameter FOO\r\n"
    out, _ = mail(b"MAIL FROM:<a@b> XYZZY")
    assert out == b"555 5.5.4 unsupported parameter XYZZY\r\n"


def test_unknown_rcpt_parameter_is_555() -> None:
    out, _ = rcpt(b"RCPT TO:<c@d> FOO=bar")
    assert out == b"555 5.5.4 unsupported parameter FOO\r\n"


def test_parameters_of_disabled_extensions_are_555() -> None:
    config = EngineConfig(dsn=False, smtputf8=False)
    assert mail(b"MAIL FROM:<a@b> RET=FULL", config)[0] == (
        b"555 5.5.4 unsupported parameter RET\r\n"
    )
    assert mail(b"MAIL FROM:<a@b> SMTPUTF8", config)[0] == (
        b"555 5.5.4 unsupported parameter SMTPUTF8\r\n"
    )
    assert rcpt(b"RCPT TO:<c@d> NOTIFY=NEVER", config)[0] == (
        b"555 5.5.4 unsupported parameter NOTIFY\r\n"
    )
    # AUTH= is only known when AUTH is offered (RFC 4954 §5).
    assert mail(b"MAIL FROM:<a@b> AUTH=<>")[0] == b"555 5.5.4 unsupported parameter AUTH\r\n"


def test_parameters_must_follow_a_space() -> None:
    out, _ = mail(b"MAIL FROM:<a@b>SIZE=1")
    assert out == b"501 5.5.4 parameters must be separated from the address by a space\r\n"


def test_repeated_parameter_is_501() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> SIZE=1 size=2")
    assert out == b"501 5.5.4 repeated parameter SIZE\r\n"


def test_bad_parameter_keyword_is_501() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> -X=1")
    assert out == b"501 5.5.4 bad parameter syntax: '-X=1'\r\n"


def test_parameter_keywords_are_upper_cased_and_values_kept() -> None:
    out, event = mail(b"MAIL FROM:<a@b> size=10 body=8BITMIME")
    assert out == OK_MAIL
    assert event is not None
    assert event.params == {"SIZE": "10", "BODY": "8BITMIME"}


# ---------------------------------------------------------------- SMTPUTF8 (RFC 6531)


def test_utf8_sender_without_smtputf8_is_553_5_6_7() -> None:
    out, event = mail("MAIL FROM:<jösé@example.org>".encode())
    assert out == b"553 5.6.7 non-ASCII addresses need the SMTPUTF8 parameter\r\n"
    assert event is None


def test_utf8_sender_with_smtputf8_is_accepted() -> None:
    out, event = mail("MAIL FROM:<jösé@exämple.org> SMTPUTF8".encode())
    assert out == OK_MAIL
    assert event is not None
    assert event.address == "jösé@exämple.org"
    assert event.smtputf8 is True
    assert event.params == {"SMTPUTF8": None}


def test_utf8_recipient_needs_smtputf8_on_mail() -> None:
    out, _ = rcpt("RCPT TO:<usér@example.net>".encode())
    assert out == b"553 5.6.7 non-ASCII addresses need the SMTPUTF8 parameter\r\n"
    out, event = rcpt("RCPT TO:<usér@example.net>".encode(), mail_line=b"MAIL FROM:<a@b> SMTPUTF8")
    assert out == OK_RCPT
    assert event is not None
    assert event.address == "usér@example.net"


def test_smtputf8_takes_no_value() -> None:
    out, _ = mail(b"MAIL FROM:<a@b> SMTPUTF8=yes")
    assert out == b"501 5.5.4 SMTPUTF8 takes no value\r\n"


def test_smtputf8_state_does_not_leak_into_the_next_transaction() -> None:
    driver = ready()
    driver.feed(b"MAIL FROM:<a@b> SMTPUTF8\r\nRSET\r\nMAIL FROM:<a@b>\r\n")
    assert driver.send("RCPT TO:<ü@example.net>\r\n".encode()) == (
        b"553 5.6.7 non-ASCII addresses need the SMTPUTF8 parameter\r\n"
    )


# ---------------------------------------------------------------- DSN (RFC 3461)


def test_ret_and_envid_are_parsed_and_xtext_decoded() -> None:
    out, event = mail(b"MAIL FROM:<a@b> RET=hdrs ENVID=QQ+2Bid+3Dx")
    assert out == OK_MAIL
    assert event is not None
    assert event.ret == "HDRS"
    assert event.envid == "QQ+id=x"
    assert event.params == {"RET": "hdrs", "ENVID": "QQ+2Bid+3Dx"}


def test_bad_ret_is_501() -> None:
    assert mail(b"MAIL FROM:<a@b> RET=SOME")[0] == b"501 5.5.4 RET must be FULL or HDRS\r\n"


@pytest.mark.parametrize("value", [b"a+2", b"a+zz", b"a+2b", b"a+"])
def test_bad_envid_xtext_is_501(value: bytes) -> None:
    assert mail(b"MAIL FROM:<a@b> ENVID=" + value)[0] == b"501 5.5.4 bad ENVID value\r\n"


def test_envid_over_100_octets_is_501() -> None:
    assert mail(b"MAIL FROM:<a@b> ENVID=" + b"e" * 101)[0] == b"501 5.5.4 ENVID too long\r\n"
    assert mail(b"MAIL FROM:<a@b> ENVID=" + b"e" * 100)[0] == OK_MAIL


def test_notify_and_orcpt_are_parsed() -> None:
    out, event = rcpt(b"RCPT TO:<c@d> NOTIFY=success,FAILURE ORCPT=rfc822;c+2Bx@d")
    assert out == OK_RCPT
    assert event is not None
    assert event.notify == ("SUCCESS", "FAILURE")
    assert event.orcpt == ("rfc822", "c+x@d")


def test_notify_never_alone() -> None:
    out, event = rcpt(b"RCPT TO:<c@d> NOTIFY=NEVER")
    assert out == OK_RCPT
    assert event is not None
    assert event.notify == ("NEVER",)


@pytest.mark.parametrize(
    "value", [b"NEVER,SUCCESS", b"SUCCESS,SUCCESS", b"SOMETIMES", b"", b"DELAY,"]
)
def test_bad_notify_is_501(value: bytes) -> None:
    out, _ = rcpt(b"RCPT TO:<c@d> NOTIFY=" + value)
    assert out.startswith(b"501 5.5.4 ")


@pytest.mark.parametrize("value", [b"rfc822", b";a@b", b"rfc822;", b"rfc822;a+zz"])
def test_bad_orcpt_is_501(value: bytes) -> None:
    out, _ = rcpt(b"RCPT TO:<c@d> ORCPT=" + value)
    assert out.startswith(b"501 5.5.4 ")


# ---------------------------------------------------------------- AUTH= (RFC 4954 §5)


def test_auth_parameter_is_xtext_decoded_when_auth_is_offered() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",))
    out, event = mail(b"MAIL FROM:<a@b> AUTH=joe+2Bsmtp@example.org", config)
    assert out == OK_MAIL
    assert event is not None
    assert event.auth == "joe+smtp@example.org"
    out, event = mail(b"MAIL FROM:<a@b> AUTH=<>", config)
    assert out == OK_MAIL
    assert event is not None
    assert event.auth == "<>"


# ---------------------------------------------------------------- address forms


def test_null_sender() -> None:
    out, event = mail(b"MAIL FROM:<> SIZE=10")
    assert out == OK_MAIL
    assert event is not None
    assert event.address == ""
    assert event.size == 10


def test_null_recipient_is_refused() -> None:
    assert rcpt(b"RCPT TO:<>")[0] == b"501 5.1.3 bad recipient address syntax\r\n"


@pytest.mark.parametrize("name", [b"postmaster", b"Postmaster", b"POSTMASTER"])
def test_bare_postmaster_is_a_valid_recipient(name: bytes) -> None:
    out, event = rcpt(b"RCPT TO:<" + name + b">")
    assert out == OK_RCPT
    assert event is not None
    assert event.address == name.decode()


def test_bare_postmaster_is_not_a_valid_sender() -> None:
    assert mail(b"MAIL FROM:<postmaster>")[0] == b"501 5.1.7 bad sender address syntax\r\n"


@pytest.mark.parametrize(
    ("path", "address"),
    [
        (b'<"john doe"@example.org>', '"john doe"@example.org'),
        (b'<"a\\"b"@example.org>', '"a\\"b"@example.org'),
        (b'<"odd@local"@example.org>', '"odd@local"@example.org'),
        (b"<first.last+tag@example.org>", "first.last+tag@example.org"),
        (b"<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        (b"<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
        (b"<a@[tag:general-literal]>", "a@[tag:general-literal]"),
        (b"<@relay.example,@other.example:user@example.org>", "user@example.org"),
        (b"<@relay.example:user@example.org>", "user@example.org"),
    ],
)
def test_valid_address_forms(path: bytes, address: str) -> None:
    out, event = mail(b"MAIL FROM:" + path)
    assert out == OK_MAIL
    assert event is not None
    assert event.address == address
    out, revent = rcpt(b"RCPT TO:" + path)
    assert out == OK_RCPT
    assert revent is not None
    assert revent.address == address


@pytest.mark.parametrize(
    ("path", "reply"),
    [
        (b"<a@[192.0.2.300]>", b"501 5.1.7 bad IPv4 address literal\r\n"),
        (b"<a@[1.2.3]>", b"501 5.1.7 bad IPv4 address literal\r\n"),
        (b"<a@[IPv6:2001:db8::g]>", b"501 5.1.7 bad IPv6 address literal\r\n"),
        (b"<a@[IPv6:1.2.3.4]>", b"501 5.1.7 bad IPv6 address literal\r\n"),
        (b"<a@[]>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<a b@c>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<a..b@c>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<.a@c>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<a@-c>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<a@c.>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<a>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<@c>", b"501 5.1.7 bad sender address syntax\r\n"),
        (b'<"unterminated@c>', b"501 5.1.7 bad sender address syntax\r\n"),
        (b"<<a@c>>", b"501 5.1.7 bad sender address syntax\r\n"),
    ],
)
def test_invalid_sender_addresses(path: bytes, reply: bytes) -> None:
    assert mail(b"MAIL FROM:" + path)[0] == reply


def test_invalid_recipient_uses_5_1_3() -> None:
    assert rcpt(b"RCPT TO:<a@[192.0.2.300]>")[0] == b"501 5.1.3 bad IPv4 address literal\r\n"
    assert rcpt(b"RCPT TO:<a b@c>")[0] == b"501 5.1.3 bad recipient address syntax\r\n"


def test_control_characters_in_an_address_are_refused() -> None:
    # CR and NUL are caught for the whole line; a TAB by the path grammar.
    assert mail(b"MAIL FROM:<a\rb@c>")[0] == b"501 5.5.2 control characters in command\r\n"
    assert mail(b"MAIL FROM:<a@b\x00c>")[0] == b"501 5.5.2 control characters in command\r\n"
    assert mail(b"MAIL FROM:<a\tb@c>")[0] == b"501 5.1.7 control characters in sender address\r\n"
    assert rcpt(b"RCPT TO:<a\x01b@c>")[0] == (
        b"501 5.1.3 control characters in recipient address\r\n"
    )


def test_a_lf_can_never_be_part_of_an_address() -> None:
    # A LF ends the command line: the rest is a new (unknown) command, not the address.
    driver = ready()
    out = driver.send(b"MAIL FROM:<a\nb@c>\r\n")
    assert out == b"501 5.1.7 bad sender address syntax\r\n500 5.5.2 command not recognized\r\n"
    assert not driver.of_type(MailFrom)


def test_path_longer_than_256_octets_is_refused() -> None:
    # RFC 5321 §4.5.3.1.3: 256 octets including the angle brackets.
    domain = b".".join([b"d" * 60] * 4)  # 243 octets
    fits = b"a" * (254 - len(domain) - 1) + b"@" + domain
    assert len(fits) + 2 == 256
    assert mail(b"MAIL FROM:<" + fits + b">")[0] == OK_MAIL
    assert mail(b"MAIL FROM:<a" + fits + b">")[0] == b"501 5.1.7 sender address too long\r\n"


def test_recipient_local_part_over_64_octets_is_refused() -> None:
    # RFC 5321 §4.5.3.1.1
    assert rcpt(b"RCPT TO:<" + b"l" * 64 + b"@d>")[0] == OK_RCPT
    assert rcpt(b"RCPT TO:<" + b"l" * 65 + b"@d>")[0] == b"501 5.1.3 local part too long\r\n"


def test_rejected_commands_are_reported_with_their_line() -> None:
    driver = ready()
    driver.feed(b"MAIL FROM:<a b@c>\r\n")
    assert driver.events[-1] == CommandRejected(
        line="MAIL FROM:<a b@c>", reply=Reply(501, "5.1.7 bad sender address syntax")
    )


# ---------------------------------------------------------------- the grammar helpers directly


def test_parse_path_returns_the_mailbox_and_the_rest() -> None:
    assert parse_path(
        " <a@b> SIZE=1", utf8=False, allow_null=True, allow_postmaster=False, sender=True
    ) == ("a@b", " SIZE=1")


def test_parse_params_and_decode_xtext() -> None:
    assert parse_params(" A=1 b", utf8=False) == {"A": "1", "B": None}
    assert decode_xtext("a+2Bb+3D", "X") == "a+b="
    with pytest.raises(RemoteProtocolError) as info:
        decode_xtext("a+2", "ENVID")
    assert info.value.reply == Reply(501, "5.5.4 bad ENVID value")


# ---------------------------------------------------------------- brackets (RFC 5321 §4.1.2)

LENIENT = EngineConfig(lenient_addresses=True)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:a@x.example", b"501 5.1.7 sender address must be enclosed in <>\r\n"),
        (b"MAIL FROM: a@x.example", b"501 5.1.7 sender address must be enclosed in <>\r\n"),
        (b"MAIL FROM:<ilo.@x.example>", b"501 5.1.7 bad sender address syntax\r\n"),
    ],
)
def test_mail_needs_angle_brackets_and_a_proper_local_part(line: bytes, reply: bytes) -> None:
    assert mail(line) == (reply, None)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"RCPT TO:b@y.example", b"501 5.1.3 recipient address must be enclosed in <>\r\n"),
        (b"RCPT TO:<ilo.@y.example>", b"501 5.1.3 bad recipient address syntax\r\n"),
    ],
)
def test_rcpt_needs_angle_brackets_and_a_proper_local_part(line: bytes, reply: bytes) -> None:
    assert rcpt(line) == (reply, None)


@pytest.mark.parametrize(
    ("path", "address"),
    [
        (b"bare@example.org", "bare@example.org"),
        (b" bare@example.org", "bare@example.org"),
        (b"<ilo.@example.org>", "ilo.@example.org"),
        (b"ilo.@example.org", "ilo.@example.org"),
        (b"<a@example.org>", "a@example.org"),
    ],
)
def test_lenient_addresses_accept_what_old_devices_send(path: bytes, address: str) -> None:
    out, event = mail(b"MAIL FROM:" + path + b" SIZE=10", LENIENT)
    assert out == OK_MAIL
    assert event is not None
    assert (event.address, event.size) == (address, 10)
    out, revent = rcpt(b"RCPT TO:" + path, LENIENT)
    assert out == OK_RCPT
    assert revent is not None
    assert revent.address == address


@pytest.mark.parametrize(
    "path", [b"<.a@example.org>", b"<a..b@example.org>", b"<a..@example.org>", b"a b@x.example"]
)
def test_lenient_addresses_stay_strict_about_the_rest(path: bytes) -> None:
    out, event = mail(b"MAIL FROM:" + path, LENIENT)
    assert out.startswith(b"501 5.1.7")
    assert event is None


# ---------------------------------------------------------------- xtext (RFC 3461 §4)


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@b> ENVID=x+0D+0ABcc:+20evil@x+00",
        b"MAIL FROM:<a@b> ENVID=a+0Ab",
        b"MAIL FROM:<a@b> ENVID=a+09b",
        b"MAIL FROM:<a@b> ENVID=a+7Fb",
        b"MAIL FROM:<a@b> ENVID=a+1Bb",
        b"MAIL FROM:<a@b> ENVID=a+C2+9Bb",
    ],
)
def test_envid_that_decodes_to_controls_is_refused(line: bytes) -> None:
    out, event = mail(line)
    assert out == b"501 5.5.4 ENVID value decodes to control or non-ASCII characters\r\n"
    assert event is None


def test_orcpt_that_decodes_to_controls_is_refused() -> None:
    out, event = rcpt(b"RCPT TO:<b@c> ORCPT=rfc822;b+0D+0Ax@c")
    assert out == b"501 5.5.4 ORCPT value decodes to control or non-ASCII characters\r\n"
    assert event is None


def test_auth_parameter_that_decodes_to_controls_is_refused() -> None:
    config = EngineConfig(auth_mechanisms=("PLAIN",), auth_insecure=True)
    out, event = mail(b"MAIL FROM:<a@b> AUTH=<x+00@y>", config)
    assert out == b"501 5.5.4 AUTH value decodes to control or non-ASCII characters\r\n"
    assert event is None


def test_xtext_of_printable_characters_still_decodes() -> None:
    assert decode_xtext("a+2Bb+3Dc+20d", "ENVID") == "a+b=c d"


# ---------------------------------------------------------------- ASCII keywords only


@pytest.mark.parametrize(
    ("param", "reply"),
    [
        ("BODY=8b\u0131tm\u0131me", b"501 5.5.4 unsupported BODY=8b\xc4\xb1tm\xc4\xb1me\r\n"),
        ("RET=FULL\u0131", b"501 5.5.4 RET must be FULL or HDRS\r\n"),
        ("RET=hdr\u017f", b"501 5.5.4 RET must be FULL or HDRS\r\n"),
    ],
)
def test_parameter_values_are_matched_in_ascii_only(param: str, reply: bytes) -> None:
    out, event = mail(b"MAIL FROM:<a@b> " + param.encode(), EngineConfig())
    assert (out, event) == (reply, None)


def test_notify_keywords_are_ascii_only() -> None:
    utf8 = b"MAIL FROM:<a@b> SMTPUTF8"
    out, event = rcpt("RCPT TO:<b@c> NOTIFY=\u017fUCCESS".encode(), mail_line=utf8)
    assert out == b"501 5.5.4 bad NOTIFY value\r\n"
    assert event is None


def test_orcpt_type_is_ascii_only() -> None:
    utf8 = b"MAIL FROM:<a@b> SMTPUTF8"
    out, event = rcpt("RCPT TO:<b@c> ORCPT=rfc\u212a;b@c".encode(), mail_line=utf8)
    assert out == b"501 5.5.4 bad ORCPT value\r\n"
    assert event is None


# Moved from test_review_regressions.py


def test_size_with_a_non_ascii_digit_is_a_501_not_a_crash() -> None:
    # "²".isdigit() is True but int("²") raises: the engine must answer, not raise.
    from trio_smtp.engine import NEED_DATA, CommandRejected, Engine

    engine = Engine()
    engine.greet()
    engine.receive_data("EHLO x\r\nMAIL FROM:<a@b.test> SIZE=\u00b2\r\n".encode())
    engine.next_event()
    engine.respond()
    event = engine.next_event()
    assert isinstance(event, CommandRejected)
    assert event.reply.code == 501
    assert engine.next_event() is NEED_DATA
    assert engine.data_to_send().endswith(b"501 5.5.4 bad SIZE value\r\n")

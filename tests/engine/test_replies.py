"""Reply: validation, wire formatting, enhanced status codes and the reply-code table."""

from __future__ import annotations

import re

import pytest

import trio_smtp.engine as engine
from trio_smtp.engine import REPLY_CODES, EngineConfig, Noop, Reply

from ._helpers import Driver

# The seed's codes (SPEC §5).
SEED_CODES = [220, 221, 250, 251, 252, 354, 421, 450, 451, 452, 500, 501, 502, 503, 504]
SEED_CODES += [521, 541, 550, 551, 552, 553, 554, 555]


@pytest.mark.parametrize("code", SEED_CODES)
def test_every_seed_code_has_a_description(code: int) -> None:
    assert REPLY_CODES[code]


def test_codes_are_not_duplicated_as_int_constants() -> None:
    # A Reply carries its code; REPLY_CODES carries the meaning. No third spelling.
    assert not hasattr(engine, "EXCEEDED_STORAGE")
    assert not hasattr(engine, "OK")


def test_reply_code_descriptions_keep_their_standard_meaning() -> None:
    assert REPLY_CODES[354].startswith("Start mail input")
    assert "Bad sequence" in REPLY_CODES[503]
    assert "closing transmission channel" in REPLY_CODES[421]
    assert "not recognized" in REPLY_CODES[555]


@pytest.mark.parametrize("code", [0, 199, 600, 1000, -250])
def test_reply_code_out_of_range_is_refused(code: int) -> None:
    with pytest.raises(ValueError, match=repr(code)):
        Reply(code, "x")


@pytest.mark.parametrize("code", [True, 250.0, "250", None])
def test_reply_code_must_be_an_int(code: object) -> None:
    with pytest.raises(ValueError, match="reply code"):
        Reply(code, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["a\rb", "a\x00b", "bell\x07", "esc\x1b[1m", "del\x7f", "\r\n"])
def test_reply_text_with_control_characters_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        Reply(250, text)


def test_reply_text_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        Reply(250, b"ok")  # type: ignore[arg-type]


def test_reply_is_an_exception_with_equality_and_hash() -> None:
    with pytest.raises(Reply) as info:
        raise Reply(550, "5.1.1 no such user")
    assert info.value == Reply(550, "5.1.1 no such user")
    assert info.value != Reply(550, "5.1.1 no such user!")
    assert len({Reply(250, "ok"), Reply(250, "ok"), Reply(251, "ok")}) == 2
    assert str(Reply(250, "2.0.0 OK")) == "250 2.0.0 OK"
    assert repr(Reply(250, "OK")) == "Reply(250, 'OK')"


def test_reply_classification() -> None:
    assert Reply(354, "go").is_positive
    assert not Reply(421, "bye").is_positive
    assert Reply(451, "later").is_transient
    assert not Reply(550, "never").is_transient
    assert Reply(550, "5.1.1 no").enhanced_code == "5.1.1"
    assert Reply(550, "no").enhanced_code is None


def test_single_line_reply_without_enhanced_code_gets_the_class_default() -> None:
    assert Reply(250, "fine").to_bytes() == b"250 2.0.0 fine\r\n"
    assert Reply(451, "later").to_bytes() == b"451 4.0.0 later\r\n"
    assert Reply(550, "no").to_bytes() == b"550 5.0.0 no\r\n"


def test_reply_keeps_its_own_enhanced_code() -> None:
    assert Reply(550, "5.1.1 no such user").to_bytes() == b"550 5.1.1 no such user\r\n"


def test_enhanced_code_of_the_wrong_class_is_fixed_to_the_reply_class() -> None:
    # RFC 3463 §2: the class digit must match the reply code's first digit.
    assert Reply(550, "4.2.2 mailbox full").to_bytes() == b"550 5.2.2 mailbox full\r\n"
    assert Reply(450, "5.2.2 mailbox full").to_bytes() == b"450 4.2.2 mailbox full\r\n"


def test_empty_reply_text() -> None:
    assert Reply(250).to_bytes() == b"250 2.0.0\r\n"
    assert Reply(250).to_bytes(enhanced=False) == b"250\r\n"


def test_multi_line_reply_puts_the_enhanced_code_on_every_line() -> None:
    # RFC 5321 §4.2.1 continuation lines; RFC 2034 §3 a status code on each line.
    assert Reply(550, "5.7.1 first\nsecond\nthird").to_bytes() == (
        b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
    )
    assert Reply(250, "a\nb").to_bytes() == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"


def test_multi_line_reply_with_codes_on_later_lines_uses_the_first() -> None:
    assert Reply(550, "4.1.1 x\n5.2.2 y\nz").to_bytes() == (
        b"550-5.1.1 x\r\n550-5.1.1 y\r\n550 5.1.1 z\r\n"
    )


def test_multi_line_reply_without_enhanced_codes() -> None:
    assert Reply(250, "a\nb").to_bytes(enhanced=False) == b"250-a\r\n250 b\r\n"


def test_intermediate_replies_never_get_an_enhanced_code() -> None:
    assert Reply(354, "go ahead").to_bytes() == b"354 go ahead\r\n"
    assert Reply(334, "VXNlcm5hbWU6").to_bytes() == b"334 VXNlcm5hbWU6\r\n"


def test_reply_lines_without_code() -> None:
    assert Reply(250, "x\ny").lines() == ["2.0.0 x", "2.0.0 y"]
    assert Reply(250, "x\ny").lines(enhanced=False) == ["x", "y"]


def test_hook_style_reply_without_enhanced_code_gets_one_on_the_wire() -> None:
    driver = Driver(answer=lambda e: Reply(550, "no") if isinstance(e, Noop) else None)
    assert driver.send(b"NOOP\r\n") == b"550 5.0.0 no\r\n"


def test_hook_style_multi_line_reply_on_the_wire() -> None:
    driver = Driver(answer=lambda e: Reply(250, "one\ntwo") if isinstance(e, Noop) else None)
    assert driver.send(b"NOOP\r\n") == b"250-2.0.0 one\r\n250 2.0.0 two\r\n"


def test_every_reply_but_greeting_helo_and_intermediate_ones_has_an_enhanced_code() -> None:
    # RFC 2034 §3: all replies except the greeting and the HELO/EHLO replies.
    config = EngineConfig(
        auth_mechanisms=("PLAIN", "LOGIN"), auth_insecure=True, max_message_size=100
    )
    driver = Driver(config)
    greeting = driver.output
    helo = driver.send(b"HELO c\r\n")
    ehlo = driver.send(b"EHLO c\r\n")
    rest = driver.send(
        b"FOO\r\n\r\nTURN\r\nRCPT TO:<a@b>\r\nMAIL FROM:<a b>\r\nMAIL FROM:<a@b> X=1\r\n"
        b"MAIL FROM:<a@b> SIZE=1000\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nxyBDAT 200 LAST\r\n"
        + b"z"
        * 200
        + b"RSET\r\n"
        b"AUTH LOGIN\r\n*\r\nAUTH PLAIN AGEAYg==\r\nAUTH CRAM\r\nVRFY x\r\nEXPN y\r\nHELP\r\n"
        b"NOOP\r\nSTARTTLS\r\nDATA\r\nQUIT\r\n"
    )
    assert greeting == b"220 localhost ESMTP trio_smtp\r\n"
    assert helo == b"250 localhost\r\n"
    assert all(not re.match(rb"250[ -]\d\.\d", line) for line in ehlo.splitlines())
    lines = rest.splitlines()
    assert len(lines) >= 25
    for line in lines:
        if line[:3] in (b"334", b"354"):
            continue
        assert re.fullmatch(rb"(\d)\d\d [245]\.\d{1,3}\.\d{1,3}( .*)?", line), line
        assert line[0] == line[4], line  # the class matches the code


# ---------------------------------------------------------------- line length (RFC 5321 §4.5.3.1.5)


def _wire_lines(wire: bytes) -> list[bytes]:
    return wire.split(b"\r\n")[:-1]


@pytest.mark.parametrize("size", [505, 506, 507, 1000, 100_000])
def test_long_reply_text_is_split_into_lines_of_at_most_512_octets(size: int) -> None:
    text = "5.7.1 " + "".join(f"word{i} " for i in range(size))[:size]
    wire = Reply(550, text).to_bytes()
    lines = _wire_lines(wire)
    assert all(len(line) + 2 <= 512 for line in lines)
    assert all(line.startswith((b"550-5.7.1 ", b"550 5.7.1 ")) for line in lines)
    assert all(line[3:4] == b"-" for line in lines[:-1])
    assert lines[-1][3:4] == b" "
    # Nothing lost but the spaces where lines were cut.
    joined = b"".join(line[10:] for line in lines).replace(b" ", b"")
    assert joined == text[6:].replace(" ", "").encode()


def test_split_never_cuts_a_utf8_sequence() -> None:
    wire = Reply(550, "5.7.1 " + "\u00e9" * 1000).to_bytes()
    lines = _wire_lines(wire)
    assert len(lines) > 1
    for line in lines:
        assert len(line) + 2 <= 512
        line.decode("utf-8")  # each line is whole UTF-8


def test_split_applies_without_enhanced_codes_too() -> None:
    wire = Reply(220, "mx.example " + "x" * 1000).to_bytes(enhanced=False)
    lines = _wire_lines(wire)
    assert [len(line) + 2 <= 512 for line in lines] == [True] * len(lines)
    assert lines[0].startswith(b"220-mx.example ")


def test_a_long_hook_reply_goes_out_as_a_multiline_reply() -> None:
    driver = Driver(
        answer=lambda event: Reply(250, "x" * 2000) if isinstance(event, Noop) else None
    )
    out = driver.send(b"NOOP\r\n")
    lines = _wire_lines(out)
    assert len(lines) == 4
    assert all(len(line) + 2 <= 512 for line in lines)
    assert lines[-1].startswith(b"250 2.0.0 ")


def test_short_replies_are_unchanged() -> None:
    assert Reply(250, "2.1.0 sender OK").to_bytes() == b"250 2.1.0 sender OK\r\n"
    assert Reply(334, "").to_bytes() == b"334 \r\n"

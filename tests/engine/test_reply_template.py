"""ReplyTemplate: the per-message reply formatted from a checked prefix, and Reply's
control-character check (a regex now, not a loop over each character)."""

from __future__ import annotations

import pytest

from trio_smtp.engine import Reply
from trio_smtp.engine._replies import ReplyTemplate

QUEUED = ReplyTemplate(250, "2.0.0 OK queued as ")


@pytest.mark.parametrize("word", ["a1b2c3000001.1", "x", "id-with_punct.42!"])
def test_a_template_reply_is_the_reply_built_from_the_whole_text(word: str) -> None:
    made = QUEUED(word)
    plain = Reply(250, "2.0.0 OK queued as " + word)
    assert made == plain
    assert (made.code, made.text, made.args) == (plain.code, plain.text, plain.args)
    assert str(made) == str(plain)
    assert repr(made) == repr(plain)
    assert made.to_bytes() == plain.to_bytes() == f"250 2.0.0 OK queued as {word}\r\n".encode()
    assert made.to_bytes(enhanced=False) == plain.to_bytes(enhanced=False)
    assert type(made) is Reply
    assert made.is_positive


@pytest.mark.parametrize("word", ["a\rb", "a\x00b", "del\x7f", "a\nb"])
def test_a_word_with_control_characters_is_refused_as_reply_text_is(word: str) -> None:
    if word == "a\nb":
        # LF is a line break in reply text: the general path makes a two-line reply.
        assert QUEUED(word).to_bytes() == Reply(250, "2.0.0 OK queued as " + word).to_bytes()
        return
    with pytest.raises(ValueError, match="control characters"):
        QUEUED(word)


@pytest.mark.parametrize("word", ["two words", "naïve", "x" * 600])
def test_an_unusual_word_takes_the_general_path_with_the_same_result(word: str) -> None:
    assert QUEUED(word).to_bytes() == Reply(250, "2.0.0 OK queued as " + word).to_bytes()


@pytest.mark.parametrize("text", ["OK queued as ", "2.0.0 two\nlines ", "2.0.0 \x07 "])
def test_a_template_needs_one_line_of_valid_text_with_an_enhanced_code(text: str) -> None:
    with pytest.raises(ValueError):
        ReplyTemplate(250, text)


@pytest.mark.parametrize("text", ["tab\there", "unit\x1f", "vt\x0b", "cr\r"])
def test_reply_refuses_every_control_character_but_lf(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        Reply(250, text)


@pytest.mark.parametrize("text", ["two\nlines", "naïve é", "~ printable !"])
def test_reply_accepts_lf_and_non_ascii_text(text: str) -> None:
    assert Reply(250, text).text == text

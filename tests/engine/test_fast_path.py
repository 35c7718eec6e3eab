"""MAIL and RCPT's fast path for ``<local@domain>`` gives what the general parser gives.

The fast path skips ``parse_path`` and ``parse_params`` for the common shape; every line,
whatever shape, must get the same reply and the same event (or none) with it as without
it. Checked on chosen edge cases and on generated lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_smtp.engine import EngineConfig, Event
from trio_smtp.engine import _grammar as grammar

from ._helpers import Driver


@contextmanager
def _general_parser_only() -> Iterator[None]:
    saved = grammar._SIMPLE_PATH_MAX
    setattr(grammar, "_SIMPLE_PATH_MAX", -1)  # noqa: B010 - a Final, patched for the test
    try:
        yield
    finally:
        setattr(grammar, "_SIMPLE_PATH_MAX", saved)  # noqa: B010


def _session(lines: list[bytes], config: EngineConfig | None) -> tuple[bytes, list[Event]]:
    driver = Driver(config)
    for line in [b"EHLO client.example", *lines]:
        driver.send(line + b"\r\n")
    return driver.output, driver.events


def _same_either_way(lines: list[bytes], config: EngineConfig | None = None) -> None:
    fast = _session(lines, config)
    with _general_parser_only():
        general = _session(lines, config)
    assert fast == general


EDGES = [
    b"<a@b>",
    b"<a.b.c@x.example>",
    b"<" + b"l" * 64 + b"@x.example>",
    b"<" + b"l" * 65 + b"@x.example>",  # local part over 64: RCPT refuses it
    b"<a@" + b"d" * 190 + b">",
    b"<a@" + b"d" * 63 + b"." + b"d" * 63 + b"." + b"d" * 63 + b"." + b"d" * 61 + b">",
    b"<.a@b>",
    b"<a.@b>",
    b"<a..b@c>",
    b"<a@-b>",
    b"<a@b->",
    b"<a@b..c>",
    b"<a@[127.0.0.1]>",
    b"<a@[300.0.0.1]>",
    b'<"q u"@b>',
    b"<a@b> SIZE=10",
    b"<a@b>x",
    b"<a@b> ",
    b" <a@b>",
    b"<@r.example:a@b>",
    b"<>",
    b"<postmaster>",
    b"<Postmaster>",
    b"a@b",
    b"<a@b",
    b"<a@@b>",
    b"<a b@c>",
    b'<a"b@c>',
    b"<\xc3\xa9@b>",
    b"<a@\xc3\xa9.example>",
]


@pytest.mark.parametrize("path", EDGES)
@pytest.mark.parametrize("config", [None, EngineConfig(lenient_addresses=True)])
def test_edge_cases_get_the_same_answer(path: bytes, config: EngineConfig | None) -> None:
    _same_either_way([b"MAIL FROM:" + path], config)
    _same_either_way([b"MAIL FROM:<s@x>", b"RCPT TO:" + path], config)
    _same_either_way([b"MAIL FROM:" + path, b"RCPT TO:" + path], config)


def test_the_recipient_limit_holds_on_the_fast_path() -> None:
    config = EngineConfig(max_recipients=2)
    lines = [b"MAIL FROM:<s@x>"] + [b"RCPT TO:<r%d@y>" % i for i in range(4)]
    output, _ = _session(lines, config)
    assert output.count(b"250 2.1.5") == 2
    assert b"452 4.5.3" in output
    _same_either_way(lines, config)


def test_out_of_sequence_and_auth_required_hold_on_the_fast_path() -> None:
    _same_either_way([b"RCPT TO:<r@y>"])  # RCPT before MAIL
    _same_either_way([b"MAIL FROM:<s@x>", b"MAIL FROM:<s@x>"])  # nested MAIL
    _same_either_way([b"MAIL FROM:<s@x>"], EngineConfig(auth_required=True))


_PATH_CHARS = st.sampled_from([*'ab.@<>-_+=[]:" é\\x0', "", "\r", "\x00"])


@given(
    st.lists(_PATH_CHARS, max_size=40).map("".join),
    st.sampled_from(["MAIL FROM:", "RCPT TO:", "mail from:", "MAIL FROM: "]),
)
def test_generated_lines_get_the_same_answer(path: str, verb: str) -> None:
    line = (verb + path).encode()
    if verb.upper().startswith("MAIL"):
        _same_either_way([line])
    else:
        _same_either_way([b"MAIL FROM:<s@x>", line])

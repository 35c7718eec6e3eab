"""What an engine is set up with: limits, extensions and policy switches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from ._auth import MECHANISMS
from ._data import BareLineEndings

#: RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
DEFAULT_MAX_COMMAND_LINE: Final = 512
#: RFC 4954 §4: AUTH lines may be up to 12288 octets.
DEFAULT_MAX_AUTH_LINE: Final = 12288
#: RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
DEFAULT_MAX_DATA_LINE: Final = 1000
DEFAULT_MAX_MESSAGE_SIZE: Final = 33_554_432
#: RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
DEFAULT_MAX_RECIPIENTS: Final = 100
DEFAULT_MAX_BAD_COMMANDS: Final = 20
DEFAULT_MAX_AUTH_FAILURES: Final = 3


def _positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{attr.name} must be a positive integer, not {value!r}")


def _mechanisms(_inst: object, attr: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    for mech in value:  # type: ignore[attr-defined]
        if mech not in MECHANISMS:
            raise ValueError(f"unsupported AUTH mechanism {mech!r}; choose from {MECHANISMS}")


def _as_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class EngineConfig:
    """The engine's settings, shared by all connections of a server.

    Attributes:
        hostname: The server's name in the greeting and in EHLO.
        banner: Text after the hostname in the 220 greeting.
        lmtp: Speak LMTP (RFC 2033): LHLO, one reply per recipient after DATA.
        proxy_protocol: Expect a PROXY v1/v2 header before the greeting.
        max_command_line: Longest command line, CRLF included.
        max_auth_line: Longest SASL response line.
        max_data_line: Longest text line in DATA, CRLF included; ``None`` for no limit.
        max_message_size: Largest message; advertised as SIZE. ``None`` for no limit.
        max_recipients: Most recipients per message.
        max_bad_commands: Most erroneous commands in a row before 421.
        max_auth_failures: Failed AUTH attempts before 421.
        bare_line_endings: Policy for a bare LF or CR in DATA.
        starttls: Whether STARTTLS can be offered (a certificate is configured).
        require_tls: Refuse MAIL, RCPT, DATA, BDAT and AUTH before TLS (530 5.7.0).
        auth_mechanisms: SASL mechanisms offered; empty to disable AUTH.
        auth_insecure: Allow AUTH without TLS.
        auth_required: Refuse MAIL before AUTH (530 5.7.0).
        lenient_addresses: Accept MAIL FROM / RCPT TO addresses without angle brackets
            and local parts that end in a dot (old devices such as HP iLO); by default
            both get 501 (RFC 5321 §4.1.2).
        smtputf8, eightbitmime, chunking, binarymime, dsn, pipelining: Extensions.
    """

    hostname: str = attrs.field(default="localhost")
    banner: str = "ESMTP trio_smtp"
    lmtp: bool = False
    proxy_protocol: bool = False
    max_command_line: int = attrs.field(default=DEFAULT_MAX_COMMAND_LINE, validator=_positive)
    max_auth_line: int = attrs.field(default=DEFAULT_MAX_AUTH_LINE, validator=_positive)
    max_data_line: int | None = attrs.field(default=DEFAULT_MAX_DATA_LINE, validator=_positive)
    max_message_size: int | None = attrs.field(
        default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive
    )
    max_recipients: int = attrs.field(default=DEFAULT_MAX_RECIPIENTS, validator=_positive)
    max_bad_commands: int = attrs.field(default=DEFAULT_MAX_BAD_COMMANDS, validator=_positive)
    max_auth_failures: int = attrs.field(default=DEFAULT_MAX_AUTH_FAILURES, validator=_positive)
    bare_line_endings: BareLineEndings = attrs.field(
        default=BareLineEndings.NORMALIZE, converter=BareLineEndings
    )
    starttls: bool = False
    require_tls: bool = False
    auth_mechanisms: tuple[str, ...] = attrs.field(
        default=(), converter=_as_tuple, validator=_mechanisms
    )
    auth_insecure: bool = False
    auth_required: bool = False
    lenient_addresses: bool = False
    smtputf8: bool = True
    eightbitmime: bool = True
    chunking: bool = True
    binarymime: bool = True
    dsn: bool = True
    pipelining: bool = True

    @hostname.validator
    def _check_hostname(self, _attr: attrs.Attribute[str], value: str) -> None:
        if not value or any(c <= " " or c == "\x7f" for c in value):
            raise ValueError(f"hostname must be a non-empty name without spaces, not {value!r}")

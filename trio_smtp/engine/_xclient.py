"""XCLIENT, Postfix's extension for trusted proxies (Postfix XCLIENT_README).

Grammar (attribute names and the markers are case-insensitive)::

    xclient-command = XCLIENT 1*( SP attribute-name "=" attribute-value )
    attribute-name  = NAME | ADDR | PORT | PROTO | HELO | LOGIN | DESTADDR | DESTPORT
    attribute-value = xtext                      ; RFC 3461 §4

A value may be ``[UNAVAILABLE]`` (or ``[TEMPUNAVAIL]`` for a failed name lookup); ADDR
and DESTADDR are IPv4 or ``IPV6:`` followed by an IPv6 address, without brackets.
Replies: 220 (the session starts over), 501 bad syntax, 503 in a mail transaction, 550
not authorised. Only the parsing lives here; who may send it is the caller's policy.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from ._errors import RemoteProtocolError
from ._events import Xclient
from ._grammar import ascii_upper, check_domain, decode_xtext
from ._replies import Reply

#: The attributes this engine understands, in the order EHLO lists them.
ATTRIBUTES: Final = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
UNAVAILABLE: Final = "[UNAVAILABLE]"
TEMPUNAVAIL: Final = "[TEMPUNAVAIL]"
_MARKERS: Final = frozenset({UNAVAILABLE, TEMPUNAVAIL})
#: XCLIENT_README: NAME and HELO values are at most 255 characters.
_MAX_NAME: Final = 255


def _bad(text: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reply(501, f"5.5.4 {text}"))


def _address(name: str, value: str) -> str:
    """An ADDR/DESTADDR value: IPv4, or IPv6 after a case-insensitive ``IPV6:``."""
    try:
        if ascii_upper(value[:5]) == "IPV6:":
            return str(ipaddress.IPv6Address(value[5:]))
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _bad(f"bad XCLIENT {name} value {value[:60]!r}") from None


def _port(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 5 or int(value) > 65535:
        raise _bad(f"bad XCLIENT {name} value {value[:60]!r}")
    return int(value)


def _hostname(name: str, value: str) -> str:
    if len(value) > _MAX_NAME or not check_domain(value):
        raise _bad(f"bad XCLIENT {name} value {value[:60]!r}")
    return value


def _proto(name: str, value: str) -> str:
    proto = ascii_upper(value)
    if proto not in ("SMTP", "ESMTP"):
        raise _bad(f"bad XCLIENT {name} value {value[:60]!r}")
    return proto


def _login(name: str, value: str) -> str:
    if not value:
        raise _bad(f"bad XCLIENT {name} value")
    return value


_CHECKS: Final = {
    "NAME": _hostname,
    "ADDR": _address,
    "PROTO": _proto,
    "HELO": _hostname,
    "LOGIN": _login,
    "DESTADDR": _address,
}


def parse_xclient(verb: str, argument: str, *, default_reply: Reply) -> Xclient:
    """Parse the attributes of an XCLIENT command.

    Raises:
        RemoteProtocolError: 501 5.5.4 for a missing attribute, an unknown or repeated
            name, a value that is not xtext (or decodes to a control) or not of its kind.
    """
    if not argument:
        raise _bad("syntax: XCLIENT attribute=value ...")
    attributes: dict[str, str] = {}
    texts: dict[str, str | None] = {}
    ports: dict[str, int | None] = {}
    for item in argument.split(" "):
        raw_name, eq, raw_value = item.partition("=")
        name = ascii_upper(raw_name)
        if not eq or name not in ATTRIBUTES:
            raise _bad(f"bad XCLIENT attribute {raw_name[:40]!r}")
        if name in attributes:
            raise _bad(f"repeated XCLIENT attribute {name}")
        value = decode_xtext(raw_value, f"XCLIENT {name}")
        marker = ascii_upper(value)
        if marker in _MARKERS:
            attributes[name] = marker
            continue
        if name in ("PORT", "DESTPORT"):
            ports[name] = _port(name, value)
        else:
            texts[name] = _CHECKS[name](name, value)
        attributes[name] = value
    return Xclient(
        verb=verb,
        argument=argument,
        attributes=attributes,
        name=texts.get("NAME"),
        addr=texts.get("ADDR"),
        port=ports.get("PORT"),
        proto=texts.get("PROTO"),
        helo=texts.get("HELO"),
        login=texts.get("LOGIN"),
        destaddr=texts.get("DESTADDR"),
        destport=ports.get("DESTPORT"),
        default_reply=default_reply,
    )

"""RFC 5321 §4.1.2 paths and ESMTP parameters, with the SMTPUTF8, SIZE, BODY, DSN and
AUTH parameter rules.

Theory of operation: an argument such as ``FROM:<a@b> SIZE=10`` is split into a path
and a parameter list with one regular expression per grammar rule (for ASCII and for
SMTPUTF8). Every failure raises :class:`RemoteProtocolError` with the reply the client
should get, so that the engine never decides codes for grammar.

The usual ``<local@domain>`` takes :func:`simple_path`, one small pattern compiled at
import. The general patterns are compiled on first use: the SMTPUTF8 ones span all of
Unicode and take a fifth of a second to compile, which every ``import trio_smtp`` (and
so every pytest run that loads the plugin) would otherwise pay.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final

from ._errors import RemoteProtocolError
from ._replies import Reply

# RFC 5321 §4.1.2
_ATEXT: Final = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
# RFC 6531 §3.3: atext, qtextSMTP and sub-domain are extended with UTF8-non-ascii.
_UTF8: Final = "\u0080-\U0010ffff"
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets, including the angle brackets.
MAX_PATH_OCTETS: Final = 256
_MAX_LOCAL_PART: Final = 64  # RFC 5321 §4.5.3.1.1
_MAX_DOMAIN: Final = 255  # RFC 5321 §4.5.3.1.2
_MAX_ENVID: Final = 100  # RFC 3461 §4.4


def _mailbox_pattern(utf8: bool, lenient: bool = False) -> str:
    extra = _UTF8 if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    # Lenient: a local part may end in a dot (HP iLO sends "ilo.@example.com").
    dot_string = rf"{atom}(?:\.{atom})*" + (r"\.?" if lenient else "")
    quoted = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{extra}]|\\[\x20-\x7e])*"'
    label = rf"[A-Za-z0-9{extra}](?:[A-Za-z0-9\-{extra}]*[A-Za-z0-9{extra}])?"
    domain = rf"{label}(?:\.{label})*"
    literal = r"\[[\x21-\x5a\x5e-\x7e]+\]"
    return rf"(?P<local>{dot_string}|{quoted})@(?P<domain>{domain}|{literal})"


def _domain_pattern(utf8: bool) -> str:
    extra = _UTF8 if utf8 else ""
    label = rf"[A-Za-z0-9{extra}](?:[A-Za-z0-9\-{extra}]*[A-Za-z0-9{extra}])?"
    return rf"{label}(?:\.{label})*"


@functools.cache
def _path_pattern(utf8: bool, lenient: bool, bracketed: bool) -> re.Pattern[str]:
    """The bracketed path (with an optional source route) or the bare mailbox pattern."""
    mailbox = _mailbox_pattern(utf8, lenient)
    if not bracketed:
        return re.compile(rf"(?P<mailbox>{mailbox})(?=\s|$)")
    adl = rf"@{_domain_pattern(utf8)}(?:,@{_domain_pattern(utf8)})*:"
    return re.compile(rf"<(?:{adl})?(?P<mailbox>{mailbox})>")


_ATOM: Final = rf"[{_ATEXT}]+"
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
#: The usual path: "<local@domain>", a dot-atom local part of 1 to 64 octets and a domain
#: name, nothing after it (RFC 5321 §4.1.2). parse_path gives the same mailbox for it and
#: finds no parameters, and within _SIMPLE_PATH_MAX it breaks no length rule (§4.5.3.1):
#: the fast path of MAIL and RCPT skips the general parser for it.
_SIMPLE_PATH: Final = re.compile(
    rf"<(?=[^@]{{1,64}}@)({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>"
)
_SIMPLE_PATH_MAX: Final = 200
_POSTMASTER: Final = re.compile(r"<(?P<mailbox>postmaster)>", re.IGNORECASE)
_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")
# esmtp-value: any CHAR but "=", SP and controls (RFC 5321 §4.1.2); UTF-8 under RFC 6531.
_VALUE_ASCII: Final = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f]")


@functools.cache
def _value_utf8() -> re.Pattern[str]:
    return re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+\Z")


def _syntax(code: int, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reply(code, text))


def _check_literal(literal: str, enhanced: str) -> None:
    inner = literal[1:-1]
    # RFC 5321 §4.1.3: IPv4, "IPv6:" and General-address-literal (tag ":" content).
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            raise _syntax(501, f"{enhanced} bad IPv6 address literal") from None
    elif ":" not in inner:
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            raise _syntax(501, f"{enhanced} bad IPv4 address literal") from None


def parse_path(
    argument: str,
    *,
    utf8: bool,
    allow_null: bool,
    allow_postmaster: bool,
    sender: bool,
    lenient: bool = False,
) -> tuple[str, str]:
    """Split ``<path> params`` into the mailbox and the rest.

    Angle brackets are required (RFC 5321 §4.1.2: ``"FROM:" Reverse-path``, ``Path =
    "<" [ A-d-l ":" ] Mailbox ">"``). A source route (``<@a,@b:user@c>``) is accepted and
    ignored (RFC 5321 §4.1.1.3).

    Args:
        argument: The text after ``FROM:`` or ``TO:``, leading spaces allowed.
        utf8: Whether UTF-8 is allowed in the address (SMTPUTF8 given).
        allow_null: Whether ``<>`` is acceptable (MAIL only).
        allow_postmaster: Whether a bare ``<Postmaster>`` is acceptable (RCPT only).
        sender: Selects the enhanced code of errors: 5.1.7 (sender) or 5.1.3 (recipient).
        lenient: Also accept a bare mailbox without brackets and a local part that ends
            in a dot, for old devices (``lenient_addresses``).

    Returns:
        ``(mailbox, rest)``: the address without brackets and the parameter text.

    Raises:
        RemoteProtocolError: 501 (syntax) or 553 5.6.7 (UTF-8 without SMTPUTF8).
    """
    enhanced = "5.1.7" if sender else "5.1.3"
    what = "sender" if sender else "recipient"
    arg = argument.lstrip(" ")
    if _FORBIDDEN.search(arg):
        # CR, LF and NUL can never be part of an address (RFC 5321 §4.1.2).
        raise _syntax(501, f"{enhanced} control characters in {what} address")
    if allow_null and arg.startswith("<>"):
        return "", arg[2:]
    if allow_postmaster:
        m = _POSTMASTER.match(arg)
        if m is not None:
            return m.group("mailbox"), arg[m.end() :]
    bracketed = arg.startswith("<")
    if arg and not bracketed and not lenient:
        raise _syntax(501, f"{enhanced} {what} address must be enclosed in <>")
    m = _path_pattern(utf8, lenient, bracketed).match(arg)
    if m is None:
        if not utf8 and not arg.isascii():
            if _path_pattern(True, lenient, bracketed).match(arg) is not None:
                # RFC 6531 §3.5
                raise _syntax(553, "5.6.7 non-ASCII addresses need the SMTPUTF8 parameter")
        raise _syntax(501, f"{enhanced} bad {what} address syntax")
    _check_mailbox(m, enhanced, what, sender=sender)
    return m.group("mailbox"), arg[m.end() :]


def _check_mailbox(m: re.Match[str], enhanced: str, what: str, *, sender: bool) -> None:
    """The length rules of RFC 5321 §4.5.3.1 and the address literal of a matched path."""
    local, domain = m.group("local"), m.group("domain")
    if len(m.group("mailbox").encode()) + 2 > MAX_PATH_OCTETS:
        raise _syntax(501, f"{enhanced} {what} address too long")
    if len(local.encode()) > _MAX_LOCAL_PART and not sender:
        raise _syntax(501, f"{enhanced} local part too long")
    if len(domain.encode()) > _MAX_DOMAIN:
        raise _syntax(501, f"{enhanced} domain too long")
    if domain.startswith("["):
        _check_literal(domain, enhanced)


def simple_path(argument: str, start: int) -> str | None:
    """The mailbox when ``argument[start:]`` is exactly a :data:`_SIMPLE_PATH`, else None."""
    if len(argument) > _SIMPLE_PATH_MAX:
        return None
    m = _SIMPLE_PATH.fullmatch(argument, start)
    return None if m is None else m.group(1)


def parse_params(text: str, *, utf8: bool) -> dict[str, str | None]:
    """Parse ``KEY=value KEY`` ESMTP parameters (RFC 5321 §4.1.2).

    Returns:
        The parameters with keywords upper-cased, values as given (``None`` if absent).

    Raises:
        RemoteProtocolError: 501 5.5.4 for bad syntax or a repeated keyword.
    """
    params: dict[str, str | None] = {}
    if text and not text.startswith(" "):
        raise _syntax(501, "5.5.4 parameters must be separated from the address by a space")
    value_re = _value_utf8() if utf8 else _VALUE_ASCII
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key) or (eq and not value_re.match(value)):
            raise _syntax(501, f"5.5.4 bad parameter syntax: {item[:40]!r}")
        ukey = key.upper()
        if ukey in params:
            raise _syntax(501, f"5.5.4 repeated parameter {ukey}")
        params[ukey] = value if eq else None
    return params


def decode_xtext(value: str, what: str) -> str:
    """Decode RFC 3461 §4 xtext (``+2B`` for ``+``).

    RFC 3461 §4: xchar is "!" to "~" except "+" and "=", and a hexchar encodes "a
    character outside [that] range" that must still be a printable US-ASCII character
    or SP (§4.2 ORCPT, §4.4 ENVID: "printable ASCII"); a value that decodes to CR, LF,
    NUL or any other control would reach headers, logs and DSNs, so it is refused.

    Raises:
        RemoteProtocolError: 501 5.5.4 when ``value`` is not xtext or decodes to a
            control character.
    """
    if not _XTEXT.match(value):
        raise _syntax(501, f"5.5.4 bad {what} value")
    if "+" not in value:
        return value
    decoded = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    if _FORBIDDEN.search(decoded) or not decoded.isascii():
        raise _syntax(501, f"5.5.4 {what} value decodes to control or non-ASCII characters")
    return decoded


def ascii_upper(text: str) -> str:
    """``text`` upper-cased if it is ASCII, else unchanged.

    Verbs, keywords and parameter names are ASCII (RFC 5321 §2.4, §4.1.2); ``str.upper``
    maps Unicode too (``"ma\\u0131l".upper() == "MAIL"``, ``"\\ufb06".upper() == "ST"``), which
    would let look-alikes through. Left as it is, a non-ASCII word never equals a keyword.
    """
    return text.upper() if text.isascii() else text


def need_value(params: dict[str, str | None], key: str) -> str:
    """The value of ``key``, which must have one."""
    value = params[key]
    if value is None:
        raise _syntax(501, f"5.5.4 {key} needs a value")
    return value


def check_domain(name: str) -> bool:
    """Whether ``name`` is a plausible HELO argument: a domain or an address literal."""
    if not name or _FORBIDDEN.search(name) or " " in name:
        return False
    return True


__all__ = [
    "MAX_PATH_OCTETS",
    "ascii_upper",
    "check_domain",
    "decode_xtext",
    "need_value",
    "parse_params",
    "parse_path",
    "simple_path",
]

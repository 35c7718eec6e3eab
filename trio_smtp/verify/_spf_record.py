"""SPF records (RFC 7208 §4.6, §5, §6, §7.1): a record parsed whole, before anything of it
is evaluated (§4.6: a syntax error anywhere is ``permerror`` at once), and the syntax
checks of its macro strings and domain-specs. Evaluation is in ``_spf.py``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import attrs

_MECHANISMS: Final = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})

# RFC 7208 §12: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.DOTALL)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9\-_.]*)(.*)\Z", re.DOTALL)
# RFC 7208 §7.1: macro-expand and macro-literal
MACRO = re.compile(r"%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-|[\x21-\x24\x26-\x7e]", re.I)
# RFC 7208 §4.6.1: toplabel = ( *alphanum ALPHA *alphanum )
#                              / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_TOPLABEL = re.compile(
    r"([A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\Z"
)
_CIDR4 = re.compile(r"/(0|[1-9]\d?)\Z")
_DUAL_CIDR = re.compile(r"(?:/(0|[1-9]\d?))?(?://(0|[1-9]\d{0,2}))?\Z")
_IP4_NETWORK = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\Z"
)
VERSION = re.compile(r"v=spf1(?: |\Z)", re.I)


class PermError(Exception):
    """The record (or a limit of RFC 7208 §4.6.4) makes the result ``permerror``."""


@attrs.frozen
class Term:
    qualifier: str  # "" for modifiers
    name: str  # lower-cased
    domain_spec: str | None = None
    cidr4: int | None = None
    cidr6: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    text: str = ""


@attrs.frozen
class Record:
    directives: tuple[Term, ...]
    redirect: str | None
    exp: str | None


def domain_ok(domain: str) -> bool:
    """RFC 7208 §4.3: a multi-label name, no empty label but the root, labels of 1-63."""
    labels = domain.removesuffix(".").split(".")
    return len(labels) > 1 and all(0 < len(label) <= 63 for label in labels)


def check_macro_string(text: str, *, allow_exp_letters: bool = False) -> None:
    if allow_exp_letters:
        # RFC 7208 §6.2: explain-string = *( macro-string / SP )
        for part in text.split(" "):
            _check_one_macro_string(part, allow_exp_letters=True)
    else:
        _check_one_macro_string(text)


def _check_one_macro_string(text: str, *, allow_exp_letters: bool = False) -> None:
    pos = 0
    while pos < len(text):
        m = MACRO.match(text, pos)
        if m is None:
            raise PermError(f"bad macro string {text!r}")
        letter = m.group(1)
        if letter is not None:
            # RFC 7208 §7.2: c, r and t only in exp= explanations.
            letters = "slodiphcrtv" if allow_exp_letters else "slodiphv"
            if letter.lower() not in letters:
                raise PermError(f"bad macro letter {letter!r} in {text!r}")
            if m.group(2) and int(m.group(2)) == 0:
                raise PermError(f"zero transformer in {text!r}")
        pos = m.end()


def _check_domain_spec(spec: str) -> None:
    """RFC 7208 §7.1: domain-spec = macro-string domain-end."""
    check_macro_string(spec)
    if spec.endswith("}"):
        return  # domain-end = macro-expand
    labels = spec.removesuffix(".").rsplit(".", 1)
    if len(labels) < 2 or not _TOPLABEL.match(labels[1]):
        raise PermError(f"bad domain-spec {spec!r}")


def parse_record(text: str) -> Record:
    if not text.isascii():
        raise PermError("non-ASCII record")
    directives: list[Term] = []
    redirect = exp = None
    for token in text.split(" ")[1:]:
        if not token:
            continue
        modifier = _MODIFIER.match(token)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                _check_domain_spec(value)
                # RFC 7208 §6: each at most once.
                if (redirect if name == "redirect" else exp) is not None:
                    raise PermError(f"{name}= given twice")
                if name == "redirect":
                    redirect = value
                else:
                    exp = value
            else:
                check_macro_string(value)
            continue
        directives.append(_parse_mechanism(token))
    return Record(tuple(directives), redirect, exp)


def _parse_mechanism(token: str) -> Term:
    m = _MECHANISM.match(token)
    if m is None or m.group(2).lower() not in _MECHANISMS:
        raise PermError(f"unknown mechanism {token!r}")
    qualifier, name, rest = m.group(1) or "+", m.group(2).lower(), m.group(3)
    if name == "all":
        if rest:
            raise PermError(f"bad mechanism {token!r}")
        return Term(qualifier, name, text=token)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise PermError(f"bad mechanism {token!r}")
        address, slash, length = rest[1:].partition("/")
        try:
            if name == "ip4":
                if not _IP4_NETWORK.match(address) or (slash and not _CIDR4.match("/" + length)):
                    raise ValueError(address)
                network: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network(
                    f"{address}/{length or 32}", strict=False
                )
            else:
                if slash and not re.fullmatch(r"0|[1-9]\d{0,2}", length):
                    raise ValueError(length)
                network = ipaddress.IPv6Network(f"{address}/{length or 128}", strict=False)
        except ValueError:
            raise PermError(f"bad network in {token!r}") from None
        return Term(qualifier, name, network=network, text=token)
    spec = None
    if rest.startswith(":"):
        cut = len(rest)
        # The CIDR suffix is whatever trailing "/N" or "//N" is left; a domain-spec holds no "/"
        # outside a macro.
        if name in ("a", "mx"):
            m2 = re.search(r"(/\d+)?(//\d+)?\Z", rest)
            if m2 is not None and m2.group(0):
                cut = m2.start()
        spec, rest = rest[1:cut], rest[cut:]
        if not spec:
            raise PermError(f"empty domain-spec in {token!r}")
        _check_domain_spec(spec)
    elif name in ("include", "exists"):
        raise PermError(f"{name} needs a domain in {token!r}")
    cidr4 = cidr6 = None
    if rest:
        dual = _DUAL_CIDR.match(rest)
        if name not in ("a", "mx") or dual is None:
            raise PermError(f"bad mechanism {token!r}")
        cidr4 = int(dual.group(1)) if dual.group(1) is not None else None
        cidr6 = int(dual.group(2)) if dual.group(2) is not None else None
        if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
            raise PermError(f"bad prefix length in {token!r}")
    return Term(qualifier, name, spec, cidr4, cidr6, text=token)

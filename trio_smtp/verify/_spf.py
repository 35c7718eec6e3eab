"""SPF (RFC 7208): does the client's IP address have the right to send for a domain?

Theory of operation: :func:`check_host` is RFC 7208 §4's function of the same name. A record
is fetched (§4.4), selected (§4.5), parsed whole before anything is evaluated (§4.6: a syntax
error anywhere is ``permerror`` at once; ``_spf_record.py``), then evaluated left to right
(§4.6.2). One :class:`_Evaluation` is shared by the top-level call and every
``include``/``redirect`` under it, because the DNS limits of §4.6.4 (10 terms that query DNS,
2 void lookups) are per ``check_host`` from the top. Errors travel as two exceptions,
:class:`PermError` and :class:`_TempError`, caught once at the top; everything else is plain
data.

All DNS goes through the :class:`~trio_smtp.verify._dns.Resolver` interface, the same one the
server uses, so the RFC 7208 test suite exercises exactly this code.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Final

import attrs

from ._dns import DnsTempError
from ._spf_record import (
    MACRO,
    VERSION,
    PermError,
    Term,
    check_macro_string,
    domain_ok,
    parse_record,
)

if TYPE_CHECKING:
    from ._dns import RdType, Resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that query DNS.
MAX_DNS_TERMS: Final = 10
#: RFC 7208 §4.6.4: at most 2 lookups that return no records ("void lookups").
MAX_VOID_LOOKUPS: Final = 2
#: RFC 7208 §4.6.4: an ``mx`` or ``ptr`` yields at most 10 names to look up addresses for.
MAX_NAMES_PER_TERM: Final = 10
#: RFC 7208 §7.3: an expanded domain name is cut from the left to fit 253 octets.
MAX_DOMAIN_LENGTH: Final = 253
DEFAULT_EXPLANATION: Final = "See https://www.open-spf.org/Why?s=%{s}&i=%{i}&r=%{r}"

RESULTS: Final = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
#: RFC 7208 §4.6.2: what each qualifier makes of a match.
_QUALIFIERS: Final = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


@attrs.frozen(kw_only=True)
class SpfResult:
    """The outcome of one SPF check.

    Attributes:
        result: One of ``none neutral pass fail softfail temperror permerror``.
        domain: The domain whose policy was checked (of MAIL FROM, or of HELO).
        sender: The identity checked (``postmaster@helo`` for the HELO identity).
        reason: Why: the mechanism that matched, or the error.
        explanation: For ``fail``, the domain's ``exp=`` text (or the default one).
    """

    result: str
    domain: str
    sender: str
    reason: str = ""
    explanation: str | None = None


class _TempError(Exception):
    pass


@attrs.define
class _Evaluation:
    resolver: Resolver
    ip: IPAddress
    sender: str
    helo: str
    receiver: str
    dns_terms: int = 0
    void_lookups: int = 0

    @property
    def v6(self) -> bool:
        return self.ip.version == 6

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms")

    async def query(
        self, name: str, rdtype: RdType, *, void_counts: bool = False
    ) -> tuple[str, ...]:
        try:
            records = await self.resolver.query(name, rdtype)
        except DnsTempError as exc:
            raise _TempError(str(exc)) from None
        if not records and void_counts:
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")
        return records

    async def addresses(self, name: str, *, void_counts: bool = False) -> list[IPAddress]:
        rdtype: RdType = "AAAA" if self.v6 else "A"
        out: list[IPAddress] = []
        for text in await self.query(name, rdtype, void_counts=void_counts):
            try:
                out.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        return out

    def matches(self, addresses: list[IPAddress], cidr4: int | None, cidr6: int | None) -> bool:
        length = (
            (cidr6 if cidr6 is not None else 128)
            if self.v6
            else (cidr4 if cidr4 is not None else 32)
        )
        for address in addresses:
            if address.version != self.ip.version:
                continue
            network = ipaddress.ip_network(f"{address}/{length}", strict=False)
            if self.ip in network:
                return True
        return False

    # -- RFC 7208 §4: check_host() -------------------------------------------------------

    async def check_host(self, domain: str, *, top: bool = False) -> tuple[str, str, str | None]:
        """Return ``(result, reason, explanation)``; raises the two errors."""
        domain = domain.removesuffix(".")
        if not domain_ok(domain):
            if top:
                return "none", f"not a valid domain: {domain!r}", None
            raise PermError(f"not a valid domain: {domain!r}")
        records = await self.query(domain, "TXT")
        # RFC 7208 §4.5: exactly one record starting "v=spf1"; other TXT records are ignored.
        spf = [r for r in records if VERSION.match(r)]
        if not spf:
            return "none", f"no SPF record at {domain}", None
        if len(spf) > 1:
            raise PermError(f"more than one SPF record at {domain}")
        record = parse_record(spf[0])
        for term in record.directives:
            if await self.mechanism(term, domain):
                result = _QUALIFIERS[term.qualifier]
                explanation = None
                if result == "fail" and record.exp is not None:
                    explanation = await self.explain(record.exp, domain)
                return result, f"matched {term.text}", explanation
        if record.redirect is not None:
            # RFC 7208 §6.1: redirect counts as a DNS term; no record there is permerror.
            self.count_term()
            target = await self.expand(record.redirect, domain)
            result, reason, explanation = await self.check_host(target)
            if result == "none":
                raise PermError(f"redirect to {target} which has no SPF record")
            return result, reason, explanation
        return "neutral", "no mechanism matched", None

    async def mechanism(self, term: Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert term.network is not None
            return term.network.version == self.ip.version and self.ip in term.network
        self.count_term()
        target = await self.expand(term.domain_spec, domain) if term.domain_spec else domain
        if name == "include":
            try:
                result, _reason, _exp = await self.check_host(target)
            except PermError:
                raise
            # RFC 7208 §5.2: the include's result decides the match.
            if result == "pass":
                return True
            if result == "none":
                raise PermError(f"include:{target} has no SPF record")
            return False
        if name == "a":
            return self.matches(
                await self.addresses(target, void_counts=True), term.cidr4, term.cidr6
            )
        if name == "mx":
            return await self.mx(target, term)
        if name == "ptr":
            return await self.ptr(target)
        # exists: RFC 7208 §5.7, always an A query whatever the client's address family.
        return bool(await self.query(target, "A", void_counts=True))

    async def mx(self, target: str, term: Term) -> bool:
        records = await self.query(target, "MX", void_counts=True)
        # RFC 7208 §4.6.4: more than 10 MX names is permerror.
        if len(records) > MAX_NAMES_PER_TERM:
            raise PermError(f"more than {MAX_NAMES_PER_TERM} MX records at {target}")
        exchanges = sorted(
            (int(pref), host) for pref, _, host in (r.partition(" ") for r in records)
        )
        for _pref, host in exchanges:
            if self.matches(await self.addresses(host), term.cidr4, term.cidr6):
                return True
        return False

    async def validated_names(self) -> list[str]:
        """RFC 7208 §5.5: PTR names of the IP whose own addresses include it (first 10)."""
        try:
            names = await self.query(self.ip.reverse_pointer, "PTR", void_counts=True)
        except _TempError:
            return []  # §5.5: a DNS error here means no match, not temperror
        validated = []
        for name in names[:MAX_NAMES_PER_TERM]:
            try:
                if self.ip in await self.addresses(name):
                    validated.append(name)
            except _TempError:
                continue
        return validated

    async def ptr(self, target: str) -> bool:
        target = target.lower()
        for name in await self.validated_names():
            lowered = name.lower()
            if lowered == target or lowered.endswith("." + target):
                return True
        return False

    async def explain(self, exp: str, domain: str) -> str | None:
        """RFC 7208 §6.2: any trouble fetching or expanding means no explanation."""
        try:
            target = await self.expand(exp, domain)
            records = await self.resolver.query(target, "TXT")
            if len(records) != 1 or not records[0].isascii():
                return None
            check_macro_string(records[0], allow_exp_letters=True)
            return await self.expand(records[0], domain, explanation=True)
        except (PermError, _TempError, DnsTempError):
            return None

    async def explain_default(self, text: str, domain: str) -> str:
        try:
            check_macro_string(text, allow_exp_letters=True)
            return await self.expand(text, domain, explanation=True)
        except (PermError, _TempError):
            return text

    # -- RFC 7208 §7: macros ------------------------------------------------------------

    async def expand(self, spec: str, domain: str, *, explanation: bool = False) -> str:
        if explanation:
            return " ".join([await self.expand_one(part, domain) for part in spec.split(" ")])
        expanded = await self.expand_one(spec, domain)
        # RFC 7208 §7.3: cut whole labels from the left until it fits.
        while len(expanded) > MAX_DOMAIN_LENGTH and "." in expanded:
            expanded = expanded.split(".", 1)[1]
        return expanded

    async def expand_one(self, spec: str, domain: str) -> str:
        out: list[str] = []
        for m in MACRO.finditer(spec):
            token = m.group(0)
            if token == "%%":
                out.append("%")
            elif token == "%_":
                out.append(" ")
            elif token == "%-":
                out.append("%20")
            elif m.group(1) is None:
                out.append(token)
            else:
                out.append(await self.macro(m, domain))
        return "".join(out)

    async def macro(self, m: re.Match[str], domain: str) -> str:
        letter, digits, reverse, delimiters = m.group(1), m.group(2), m.group(3), m.group(4)
        lowered = letter.lower()
        local, _, sender_domain = self.sender.rpartition("@")
        if lowered == "s":
            value = self.sender
        elif lowered == "l":
            value = local or "postmaster"
        elif lowered == "o":
            value = sender_domain
        elif lowered == "d":
            value = domain
        elif lowered == "i":
            if self.v6:
                value = ".".join(self.ip.exploded.replace(":", "").upper())
            else:
                value = str(self.ip)
        elif lowered == "c":
            value = str(self.ip)
        elif lowered == "p":
            value = await self.validated_name(domain)
        elif lowered == "v":
            value = "ip6" if self.v6 else "in-addr"
        elif lowered == "h":
            value = self.helo
        elif lowered == "r":
            value = self.receiver or "unknown"
        else:  # "t"
            value = str(int(time.time()))
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            parts = parts[-int(digits) :]
        value = ".".join(parts)
        if letter.isupper():
            # RFC 7208 §7.3: upper-case macro letters are URL-escaped.
            value = urllib.parse.quote(value, safe="-._~")
        return value

    async def validated_name(self, domain: str) -> str:
        try:
            names = await self.validated_names()
        except PermError:
            return "unknown"
        lowered = domain.lower()
        for name in names:
            if name.lower() == lowered:
                return name
        for name in names:
            if name.lower().endswith("." + lowered):
                return name
        return names[0] if names else "unknown"


def _client_ip(ip: str | IPAddress) -> IPAddress:
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    # RFC 7208 §5: an IPv4-mapped IPv6 address is evaluated as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_host(
    resolver: Resolver,
    ip: str | IPAddress,
    domain: str,
    sender: str,
    *,
    helo: str = "",
    receiver: str = "",
    default_explanation: str = DEFAULT_EXPLANATION,
) -> SpfResult:
    """RFC 7208 §4 check_host(): the SPF result for ``ip`` sending as ``sender``.

    Args:
        resolver: Answers the DNS queries.
        ip: The client's address.
        domain: The domain whose policy applies (MAIL FROM's domain, or the HELO name).
        sender: The MAIL FROM address (``postmaster@domain`` when it has no local part).
        helo: The HELO/EHLO name, for the ``%{h}`` macro.
        receiver: Our host name, for the ``%{r}`` macro in explanations.
        default_explanation: The explanation of a ``fail`` whose domain gives none.

    Returns:
        An :class:`SpfResult`. DNS failures become ``temperror``; nothing is raised.
    """
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        sender_domain, local = sender, ""
    if not local:
        # RFC 7208 §4.3: no local-part means "postmaster".
        sender = f"postmaster@{sender_domain}"
    evaluation = _Evaluation(resolver, _client_ip(ip), sender, helo, receiver)
    try:
        result, reason, explanation = await evaluation.check_host(domain, top=True)
    except PermError as exc:
        return SpfResult(result="permerror", domain=domain, sender=sender, reason=str(exc))
    except _TempError as exc:
        return SpfResult(result="temperror", domain=domain, sender=sender, reason=str(exc))
    if result == "fail" and explanation is None:
        explanation = await evaluation.explain_default(default_explanation, domain)
    return SpfResult(
        result=result, domain=domain, sender=sender, reason=reason, explanation=explanation
    )


async def check_sender(
    resolver: Resolver,
    ip: str | IPAddress,
    mail_from: str,
    helo: str,
    *,
    receiver: str = "",
    default_explanation: str = DEFAULT_EXPLANATION,
) -> SpfResult:
    """The SPF result of a transaction: MAIL FROM's identity, or HELO's for the null path.

    RFC 7208 §2.4: with ``MAIL FROM:<>`` the identity checked is ``postmaster@<helo>``.
    A HELO name that is an address literal or not a domain gives ``none`` (§4.3).
    """
    if mail_from:
        _local, at, domain = mail_from.rpartition("@")
        if not at:
            domain = mail_from
        sender = mail_from
    else:
        domain, sender = helo, f"postmaster@{helo}"
    if domain.startswith("["):
        return SpfResult(result="none", domain=domain, sender=sender, reason="address literal")
    return await check_host(
        resolver,
        ip,
        domain,
        sender,
        helo=helo,
        receiver=receiver,
        default_explanation=default_explanation,
    )

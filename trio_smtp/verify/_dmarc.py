"""DMARC (RFC 7489): does an SPF or DKIM pass align with the ``From:`` domain, and what does
the domain ask us to do when none does?

Theory of operation: the author domain is the domain of the single ``From:`` address
(§6.6.1). Its policy record is ``_dmarc.<domain>``, or failing that ``_dmarc.<organisational
domain>`` (§6.6.3), the organisational domain being the public suffix plus one label, from the
Public Suffix List (§3.2, ``publicsuffixlist``). Identifier alignment (§3.1) compares that
domain with the SPF-authenticated domain and with each passing DKIM ``d=``: equal in strict
mode, same organisational domain in relaxed mode (the default). DMARC passes when one aligned
identifier passed. A failure gets the disposition the policy asks for: ``p=`` for the domain,
``sp=`` for a subdomain that took its organisational domain's record, sampled by ``pct=``
(§6.6.4: outside the sample the next weaker policy applies).
"""

from __future__ import annotations

import email.utils
import functools
import random
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._dns import DnsTempError
from ._results import DmarcResult, MethodResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._dns import Resolver

_POLICIES: Final = ("none", "quarantine", "reject")
#: §6.6.4: what applies to a message outside the pct= sample.
_WEAKER: Final = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def _sample() -> int:
    return random.randrange(100)


@functools.cache
def _public_suffix_list() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


async def organisational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    psl = await trio.to_thread.run_sync(_public_suffix_list)
    org = psl.privatesuffix(domain.lower())
    return str(org) if org else domain.lower()


def author_domains(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The domains of every ``From:`` address (RFC 7489 §6.6.1), lower-cased, in order."""
    values = [v.decode("utf-8", "replace") for k, v in headers if k.lower() == b"from"]
    domains = []
    for _name, address in email.utils.getaddresses(values):
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        if domain:
            domains.append(domain)
    return domains


def parse_record(text: str) -> dict[str, str] | None:
    """RFC 7489 §6.3 tag list, or ``None`` if it is not a usable DMARC record."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not name and not eq:
            continue
        if i == 0 and (name != "v" or value != "DMARC1"):
            return None  # §6.4: v=DMARC1 must come first
        tags.setdefault(name, value)
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        # §6.6.3: a record without a valid p= but with rua= is p=none; otherwise ignored.
        if "rua" not in tags:
            return None
        tags["p"] = "none"
    tags["p"] = tags["p"].lower()
    if tags.get("sp", "").lower() not in _POLICIES:
        tags.pop("sp", None)
    else:
        tags["sp"] = tags["sp"].lower()
    return tags


async def _record(resolver: Resolver, domain: str) -> dict[str, str] | None:
    records = await resolver.query(f"_dmarc.{domain}", "TXT")
    candidates = [r for r in records if r.startswith("v=DMARC1")]
    # §6.6.3: more than one record, or none that parses, means no policy here.
    if len(candidates) != 1:
        return None
    return parse_record(candidates[0])


def _aligned(domain: str, author: str, org: str, org_of: dict[str, str], strict: bool) -> bool:
    if strict:
        return domain == author
    return org_of.get(domain) == org


@attrs.frozen
class _Policy:
    """What a DMARC record asks for (RFC 7489 §6.3)."""

    p: str
    sp: str | None
    #: The one that applies: ``sp=`` (else ``p=``) for a record found at the organisational
    #: domain, ``p=`` for the author domain's own.
    policy: str
    pct: int
    strict_spf: bool
    strict_dkim: bool

    @classmethod
    def of(cls, record: dict[str, str], *, from_org: bool) -> _Policy:
        p = record["p"]
        sp = record.get("sp")
        try:
            pct = max(0, min(100, int(record.get("pct", "100"))))
        except ValueError:
            pct = 100
        return cls(
            p=p,
            sp=sp,
            policy=(sp or p) if from_org else p,
            pct=pct,
            strict_spf=record.get("aspf", "r").lower() == "s",
            strict_dkim=record.get("adkim", "r").lower() == "s",
        )

    @property
    def comment(self) -> str:
        return f"p={self.p} sp={self.sp or self.p} pct={self.pct}"


async def check_dmarc(
    resolver: Resolver,
    headers: list[tuple[bytes, bytes]],
    spf: MethodResult | None,
    dkim: tuple[MethodResult, ...],
    *,
    sample: Callable[[], int] = _sample,
) -> DmarcResult:
    """The DMARC result for a message with these headers and SPF/DKIM results.

    Args:
        resolver: Answers the ``_dmarc`` TXT queries.
        headers: The message's header fields as ``(name, value)`` bytes.
        spf: The SPF result (its identity's domain is the SPF-authenticated domain).
        dkim: The DKIM results (each ``identity`` is the signing domain ``d=``).
        sample: Draws 0-99 for ``pct=`` sampling (a test passes a constant).
    """
    authors = author_domains(headers)
    if not authors:
        return DmarcResult(method="dmarc", result="none", reason="no From: domain")
    if len(set(authors)) > 1:
        # §6.6.1: several author domains; we do not pick one.
        return DmarcResult(
            method="dmarc", result="permerror", reason="From: names more than one domain"
        )
    author = authors[0]
    props = (("header.from", author),)
    try:
        org = await organisational_domain(author)
        record = await _record(resolver, author)
        from_org = False
        if record is None and org != author:
            record = await _record(resolver, org)
            from_org = True
    except DnsTempError as exc:
        return DmarcResult(
            method="dmarc", result="temperror", identity=author, reason=str(exc), properties=props
        )
    if record is None:
        return DmarcResult(
            method="dmarc",
            result="none",
            identity=author,
            reason="no DMARC record",
            properties=props,
        )
    policy = _Policy.of(record, from_org=from_org)
    how = await _aligned_pass(author, org, spf, dkim, policy)
    if how is not None:
        return _verdict(author, policy, "pass", f"aligned {how}")
    temporary = (spf is not None and spf.result == "temperror") or any(
        r.result == "temperror" for r in dkim
    )
    if temporary:
        # Without the failed lookups it might have passed: no verdict, no disposition.
        return _verdict(author, policy, "temperror", "SPF or DKIM could not be checked")
    disposition = policy.policy if sample() < policy.pct else _WEAKER[policy.policy]
    return _verdict(author, policy, "fail", "no aligned SPF or DKIM pass", disposition=disposition)


async def _aligned_pass(
    author: str,
    org: str,
    spf: MethodResult | None,
    dkim: tuple[MethodResult, ...],
    policy: _Policy,
) -> str | None:
    """``"dkim"`` or ``"spf"``: the first passing identifier aligned with the author
    domain (§3.1), or ``None``."""
    candidates = [r.identity.lower() for r in dkim if r.result == "pass" and r.identity]
    spf_domain = ""
    if spf is not None and spf.result == "pass":
        spf_domain = spf.identity.rpartition("@")[2].lower()
    org_of = {d: await organisational_domain(d) for d in {*candidates, spf_domain} if d}
    if any(_aligned(d, author, org, org_of, policy.strict_dkim) for d in candidates):
        return "dkim"
    if spf_domain and _aligned(spf_domain, author, org, org_of, policy.strict_spf):
        return "spf"
    return None


def _verdict(
    author: str, policy: _Policy, result: str, reason: str, *, disposition: str = "none"
) -> DmarcResult:
    comment = policy.comment
    if result == "fail":
        comment = f"{comment} dis={disposition}"
    return DmarcResult(
        method="dmarc",
        result=result,
        identity=author,
        reason=reason,
        properties=(("header.from", author),),
        comment=comment,
        policy=policy.policy,
        p=policy.p,
        sp=policy.sp,
        pct=policy.pct,
        disposition=disposition,
    )

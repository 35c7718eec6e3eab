"""What verification found, typed: one :class:`MethodResult` per method, gathered in
:class:`AuthResults` (``mail.auth_results``), and the RFC 8601 header that says it.

This module imports no optional dependency at load time (the sinks import it); ``authres`` is
imported when a header is built, which only happens when verification ran.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

#: RFC 8601 §2.7 / IANA "Email Authentication Result Names", per method.
SPF_RESULTS: Final = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
DKIM_RESULTS: Final = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
DMARC_RESULTS: Final = ("none", "pass", "fail", "temperror", "permerror")
ARC_RESULTS: Final = ("none", "pass", "fail")

# RFC 5322 atext plus "." and "@": a dot-atom, or local-part@domain, needs no quoting.
_PVALUE_PLAIN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+")


@attrs.frozen(kw_only=True)
class MethodResult:
    """The result of one method (one DKIM signature, the SPF check, ...).

    Attributes:
        method: ``"spf"``, ``"dkim"``, ``"dmarc"`` or ``"arc"``.
        result: The RFC 8601 result name (``pass``, ``fail``, ``temperror`` ...).
        identity: What was checked: the SPF sender (``user@domain``, or ``postmaster@helo``),
            the DKIM signing domain (``d=``), the DMARC ``From:`` domain; empty for ARC.
        reason: Why, in words (the matching SPF mechanism, the DKIM or DNS error).
        properties: The ``ptype.property=value`` pairs of the header, in order
            (``("smtp.mailfrom", "a@example.com")``, ``("header.d", "example.com")``).
        comment: A comment shown after the result in the header (DMARC's policy).
    """

    method: str
    result: str
    identity: str = ""
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()
    comment: str = ""


@attrs.frozen(kw_only=True)
class DmarcResult(MethodResult):
    """The DMARC result with the published policy (RFC 7489 §6.3).

    Attributes:
        policy: The policy that applies to this ``From:`` domain: ``p=``, or ``sp=`` for a
            subdomain covered by its organisational domain's record (``"none"`` if no record).
        p: The record's ``p=`` (``None`` without a record).
        sp: The record's ``sp=`` (``None`` if absent).
        pct: The record's ``pct=`` (100 if absent).
        disposition: What the policy asks for this message after ``pct`` sampling:
            ``"none"``, ``"quarantine"`` or ``"reject"`` (always ``"none"`` unless it failed).
    """

    policy: str = "none"
    p: str | None = None
    sp: str | None = None
    pct: int = 100
    disposition: str = "none"


@attrs.frozen(kw_only=True)
class AuthResults:
    """Everything verification found for one message: ``mail.auth_results``.

    During ``MAIL`` and ``RCPT`` hooks only :attr:`spf` is filled in; the others are set at the
    end of the message, before the ``done`` hook runs.

    Attributes:
        authserv_id: Our host name, the header's authserv-id (RFC 8601 §2.5).
        spf: The SPF result, or ``None`` if SPF was not asked for.
        dkim: One result per ``DKIM-Signature`` (empty if none or not asked for).
        dmarc: The DMARC result, or ``None``.
        arc: The ARC chain's result, or ``None``.
        quarantine: ``dmarc_enforce`` is on and the sender's policy asks to quarantine this
            message: a sink or the ``done`` hook should file it as suspect.
    """

    authserv_id: str
    spf: MethodResult | None = None
    dkim: tuple[MethodResult, ...] = ()
    dmarc: DmarcResult | None = None
    arc: MethodResult | None = None
    quarantine: bool = False

    @property
    def results(self) -> tuple[MethodResult, ...]:
        """Every result, in the header's order: spf, dkim..., dmarc, arc."""
        out: list[MethodResult] = []
        if self.spf is not None:
            out.append(self.spf)
        out.extend(self.dkim)
        if self.dmarc is not None:
            out.append(self.dmarc)
        if self.arc is not None:
            out.append(self.arc)
        return tuple(out)

    def header(self) -> str:
        """The RFC 8601 ``Authentication-Results`` field on one line, without CRLF."""
        return f"Authentication-Results: {'; '.join(self._clauses())}"

    def header_bytes(self) -> bytes:
        """The field folded one result a line (RFC 5322 §2.2.3), CRLF ended, as sinks prepend it."""
        text = "Authentication-Results: " + ";\r\n\t".join(self._clauses()) + "\r\n"
        return text.encode("ascii", "replace")

    def _clauses(self) -> list[str]:
        import authres

        clauses = [_value(self.authserv_id.lower())]
        for r in self.results:
            result = authres.AuthenticationResult(
                r.method,
                result=r.result,
                result_comment=_value(r.comment) or None,
                # A pass needs no explaining; anything else says why.
                reason=(r.reason or None) if r.result != "pass" else None,
                properties=[
                    authres.AuthenticationResultProperty(*name.split(".", 1), _pvalue(value))
                    for name, value in r.properties
                ],
            )
            clauses.append(str(result))
        if len(clauses) == 1:
            clauses.append("none")  # RFC 8601 §2.2: no-result
        return clauses


def _value(value: str) -> str:
    # Values come from the client (MAIL FROM, From:, d=): keep them printable, on one line,
    # short, and without comment delimiters.
    cleaned = "".join(c if " " <= c < "\x7f" and c not in "()\\" else "?" for c in value)
    return cleaned[:256]


def _pvalue(value: str) -> str:
    """RFC 8601 §2.2 pvalue: a token or ``local@domain`` as is, anything else quoted."""
    cleaned = _value(value)
    if cleaned and _PVALUE_PLAIN.fullmatch(cleaned):
        return cleaned
    return '"' + cleaned.replace('"', "?") + '"'

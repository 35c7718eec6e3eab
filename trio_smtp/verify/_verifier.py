"""The verifier a server runs: SPF at MAIL time, DKIM/DMARC/ARC at the end of the message.

Theory of operation: a :class:`Verifier` is built once per server from the ``verify``,
``dns_servers`` and ``dmarc_enforce`` settings and shared by every connection (its resolver's
cache is shared too). Each phase of a message (the SPF check at ``MAIL``; DKIM, DMARC and ARC
after the final dot) gets a DNS budget: a deadline after which every query still to be made
or in flight fails as a temporary error, through :class:`_BudgetResolver`. So a resolver that
never answers turns into ``temperror`` results after at most one budget per phase, on that
connection alone; other connections have their own deadlines and share nothing that blocks.
"""

from __future__ import annotations

import importlib
import io
import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ..engine import Reply
from ._bodyhash import ParsedMessage, parse_message
from ._dns import DnsResolver, DnsTempError, parse_server
from ._results import AuthResults, MethodResult

if TYPE_CHECKING:
    from .._mail import Mail
    from ._dns import RdType, Resolver
    from ._spf import SpfResult

#: What the ``verify`` extra installs, by import name.
_EXTRA_MODULES: Final = ("dns", "dkim", "authres", "publicsuffixlist")
#: The methods ``--verify`` accepts, in the header's order.
METHODS: Final = ("spf", "dkim", "dmarc", "arc")
#: Seconds of DNS each phase of a message may use. RFC 7208 §4.6.4 asks that an SPF check be
#: given at least 20 seconds.
DEFAULT_DNS_BUDGET: Final = 20.0
#: RFC 7489 §6.7 / RFC 7372: the reply to a message refused by the sender's DMARC policy.
DMARC_REJECT_REPLY: Final = "5.7.1 rejected by the sender's DMARC policy (p=reject)"


def parse_methods(value: str | Iterable[str]) -> frozenset[str]:
    """``"spf,dkim"`` or ``["spf", "dkim"]`` into a set; DMARC brings SPF and DKIM with it.

    Raises:
        ValueError: naming the unknown method.
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    methods = set()
    for name in names:
        lowered = str(name).strip().lower()
        if not lowered:
            continue
        if lowered not in METHODS:
            raise ValueError(
                f"unknown verification method {name!r}; choose from {', '.join(METHODS)}"
            )
        methods.add(lowered)
    if "dmarc" in methods:
        # RFC 7489 §4: DMARC is computed from the SPF and DKIM results.
        methods |= {"spf", "dkim"}
    return frozenset(methods)


def dns_server_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """The ``dns_servers`` setting: ``HOST[:PORT]`` strings, each checked.

    Raises:
        ValueError: naming the bad value.
    """
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        parse_server(str(item))
    return tuple(str(item) for item in items)


class _BudgetResolver:
    """Every query fails as temporary once ``deadline`` (Trio time) has passed."""

    def __init__(self, inner: Resolver, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    async def query(self, name: str, rdtype: RdType) -> tuple[str, ...]:
        with trio.move_on_at(self._deadline):
            return await self._inner.query(name, rdtype)
        raise DnsTempError(f"{rdtype} {name}: DNS budget for this message used up")


def spf_method_result(spf: SpfResult, *, helo_identity: bool) -> MethodResult:
    """The header clause of an SPF result (``smtp.mailfrom`` or ``smtp.helo``)."""
    prop = ("smtp.helo", spf.domain) if helo_identity else ("smtp.mailfrom", spf.sender)
    return MethodResult(
        method="spf",
        result=spf.result,
        identity=spf.sender,
        reason=spf.reason if spf.result != "pass" else "",
        properties=(prop,),
    )


@attrs.define
class Verifier:
    """Runs the configured methods for one server.

    Args:
        methods: A subset of :data:`METHODS` (see :func:`parse_methods`).
        resolver: The DNS to use; by default a :class:`DnsResolver` on ``dns_servers``.
        dns_servers: ``HOST[:PORT]`` strings; empty means the system's resolvers.
        dmarc_enforce: Refuse p=reject failures (550 5.7.1), flag p=quarantine ones.
        dns_budget: Seconds of DNS per phase of a message.
    """

    methods: frozenset[str]
    resolver: Resolver | None = None
    dns_servers: tuple[str, ...] = ()
    dmarc_enforce: bool = False
    dns_budget: float = DEFAULT_DNS_BUDGET

    def __attrs_post_init__(self) -> None:
        missing = []
        for module in _EXTRA_MODULES:
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append(module)
        if missing:
            raise ValueError(f"verify needs {', '.join(missing)}: pip install 'trio_smtp[verify]'")
        if self.resolver is None:
            import dns.exception

            servers = [parse_server(s) for s in self.dns_servers]
            try:
                self.resolver = DnsResolver(servers, lifetime=self.dns_budget)
            except (dns.exception.DNSException, OSError) as exc:
                # No /etc/resolv.conf, or no nameserver in it: say so at start.
                raise ValueError(f"no DNS resolver for verify: {exc}") from None

    def _budgeted(self) -> Resolver:
        assert self.resolver is not None
        return _BudgetResolver(self.resolver, trio.current_time() + self.dns_budget)

    async def check_sender(
        self, ip: str, mail_from: str, helo: str, *, authserv_id: str
    ) -> AuthResults:
        """The results known at ``MAIL`` time: SPF (if asked for), for ``mail.auth_results``.

        Args:
            ip: The client's address.
            mail_from: The reverse-path (``""`` for ``<>``: the HELO identity is checked).
            helo: The HELO/EHLO name.
            authserv_id: Our host name, the header's authserv-id (RFC 8601 §2.5).
        """
        from ._spf import check_sender

        results = AuthResults(authserv_id=authserv_id)
        if "spf" not in self.methods:
            return results
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            # A Unix-socket client has no IP address to check.
            spf = MethodResult(method="spf", result="none", reason="no client IP address")
            return attrs.evolve(results, spf=spf)
        outcome = await check_sender(
            self._budgeted(), address, mail_from, helo, receiver=authserv_id
        )
        return attrs.evolve(results, spf=spf_method_result(outcome, helo_identity=not mail_from))

    async def check_message(self, results: AuthResults, content: bytes) -> AuthResults:
        """Add DKIM, DMARC and ARC results for a message given as bytes to ``results``."""
        parsed = await trio.to_thread.run_sync(parse_message, io.BytesIO(content))
        return await self.check_parsed(results, parsed)

    async def check_parsed(self, results: AuthResults, parsed: ParsedMessage) -> AuthResults:
        """Add DKIM, DMARC and ARC results for a parsed message to ``results``."""
        from ._arc import verify_arc
        from ._dkim import verify_dkim
        from ._dmarc import check_dmarc

        resolver = self._budgeted()
        dkim_results: tuple[MethodResult, ...] = ()
        if "dkim" in self.methods:
            dkim_results = await verify_dkim(resolver, parsed)
            if not dkim_results:
                dkim_results = (MethodResult(method="dkim", result="none"),)
            results = attrs.evolve(results, dkim=dkim_results)
        if "dmarc" in self.methods:
            dmarc = await check_dmarc(resolver, parsed.headers, results.spf, dkim_results)
            quarantine = self.dmarc_enforce and dmarc.disposition == "quarantine"
            results = attrs.evolve(results, dmarc=dmarc, quarantine=quarantine)
        if "arc" in self.methods:
            results = attrs.evolve(results, arc=await verify_arc(resolver, parsed))
        return results

    def refusal(self, results: AuthResults) -> Reply | None:
        """``550 5.7.1`` when enforcing and the sender's DMARC policy says reject."""
        if not self.dmarc_enforce or results.dmarc is None:
            return None
        if results.dmarc.result == "fail" and results.dmarc.disposition == "reject":
            return Reply(550, DMARC_REJECT_REPLY)
        return None

    # -- the two calls the connection task makes ------------------------------------------

    async def mail_started(self, mail: Mail, *, authserv_id: str) -> None:
        """At ``MAIL``, before its hook: set ``mail.auth_results`` (SPF)."""
        session = mail.session
        mail.auth_results = await self.check_sender(
            session.peer_host, mail.mail_from, session.helo_name or "", authserv_id=authserv_id
        )

    async def message_received(self, mail: Mail, *, authserv_id: str) -> Reply | None:
        """After the final dot, before ``done``: add DKIM, DMARC and ARC to
        ``mail.auth_results``; the refusal to send instead of calling ``done``, if any."""
        if not self.methods & {"dkim", "dmarc", "arc"}:
            return None
        results = mail.auth_results or AuthResults(authserv_id=authserv_id)
        # One pass over the spool in a thread: the header section kept, the body hashed.
        parsed = await trio.to_thread.run_sync(_parse_mail, mail)
        mail.auth_results = await self.check_parsed(results, parsed)
        return self.refusal(mail.auth_results)


def _parse_mail(mail: Mail) -> ParsedMessage:
    with mail.open_file() as f:
        return parse_message(f)

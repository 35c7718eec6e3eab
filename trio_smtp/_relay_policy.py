"""Who may relay: the RCPT-time check that keeps ``--relay`` from being an open relay.

Theory of operation: a server that forwards mail (``--relay``, a
:class:`~trio_smtp.sinks.RelaySink`) accepts a recipient only when one of these holds,
as Postfix's ``smtpd_relay_restrictions = permit_mynetworks,
permit_sasl_authenticated, reject_unauth_destination`` does:

* the session authenticated (AUTH);
* the client's address (the real one, or the one a trusted PROXY header or XCLIENT
  gave) is in ``relay_from`` (Postfix's ``mynetworks``);
* the recipient's domain is in ``relay_domains`` (Postfix's ``relay_domains``):
  ``example.com`` matches that domain only, ``.example.com`` its subdomains only
  (list both for both).

Everything else gets ``554 5.7.1 relay access denied``. Two more rules follow
Postfix's defaults for the third case (a recipient allowed only by its domain):
a local part carrying sender-specified routing (``@``, ``%`` or ``!``, as in
``victim%other.example@relay.example``) is denied (``allow_untrusted_routing = no``),
because the next hop might route on it; and domains are compared case-insensitively,
without a trailing dot, and as IDNA A-labels so that ``bücher.example`` and
``xn--bcher-kva.example`` are the same domain. A domain literal (``[192.0.2.1]``)
matches only if it is listed literally.

The policy is pure (no Trio, no I/O): the connection task asks it once per RCPT,
before any hook runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs

from .engine import Reply

if TYPE_CHECKING:
    from ._logger import LoggerLike
    from ._session import Session

#: RFC 3463 §3.8 (X.7.1): delivery not authorized. Postfix says "Relay access denied".
RELAY_DENIED: Final = Reply(554, "5.7.1 relay access denied")

#: Characters that make a local part a route to another host (RFC 1123 §5.2.16's "%"
#: hack, UUCP's "!", and a second "@"); Postfix's allow_untrusted_routing.
_ROUTING: Final = frozenset("@%!")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_domain(domain: str) -> str:
    """The form domains are compared in: lower case, no trailing dot, IDNA A-labels.

    Raises:
        ValueError: ``domain`` is empty or not a usable domain name.
    """
    text = domain.strip().rstrip(".").lower()
    if not text:
        raise ValueError(f"not a domain: {domain!r}")
    if text.startswith("[") and text.endswith("]"):
        return text  # an address literal: compared as written
    if text.isascii():
        return text
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"not a domain: {domain!r}") from None


def parse_relay_domains(value: Any) -> tuple[str, ...]:
    """Validate ``relay_domains``: a domain or a list of them (``.example.com`` = subdomains).

    Raises:
        ValueError: naming the entry that is not a domain.
    """
    items = (value,) if isinstance(value, str) else tuple(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"relay_domains: {item!r} is not a domain")
        sub = item.strip().startswith(".")
        try:
            name = normalize_domain(item.strip().lstrip(".") if sub else item)
        except ValueError:
            raise ValueError(f"relay_domains: {item!r} is not a domain") from None
        if " " in name or "@" in name or (sub and name.startswith("[")):
            raise ValueError(f"relay_domains: {item!r} is not a domain")
        out.append("." + name if sub else name)
    return tuple(out)


def parse_networks(value: Any, *, key: str) -> tuple[Network, ...]:
    """Validate a list of addresses or CIDR networks (``relay_from``).

    Raises:
        ValueError: naming ``key`` and the entry that is not a network.
    """
    items = (value,) if isinstance(value, str) else tuple(value)
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except (ValueError, TypeError):
            raise ValueError(f"{key}: {item!r} is not an address or CIDR network") from None
    return tuple(nets)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a Unix socket peer, or a test double
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@attrs.frozen(kw_only=True)
class RelayPolicy:
    """Decides, per recipient, whether this client may relay to it.

    Attributes:
        relay_from: Client networks allowed to relay anywhere.
        relay_domains: Recipient domains anyone may send to (``.example.com`` matches
            subdomains of ``example.com``), already normalized.
    """

    relay_from: tuple[Network, ...] = ()
    relay_domains: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, *, relay_from: Iterable[Any] = (), relay_domains: Iterable[str] = ()
    ) -> RelayPolicy:
        """Build a policy from unvalidated lists (strings or networks)."""
        return cls(
            relay_from=parse_networks(tuple(relay_from), key="relay_from"),
            relay_domains=parse_relay_domains(tuple(relay_domains)),
        )

    def client_allowed(self, host: str) -> bool:
        """Whether ``host`` (the client's address) is in ``relay_from``."""
        addr = _ip(host)
        return addr is not None and any(addr in net for net in self.relay_from)

    def domain_allowed(self, recipient: str) -> bool:
        """Whether ``recipient``'s domain is in ``relay_domains`` (and it carries no route)."""
        local, sep, domain = recipient.rpartition("@")
        if not sep or not local or not domain:
            return False  # "postmaster" alone, or no domain: nothing to match
        if local.startswith('"') and local.endswith('"'):
            local = local[1:-1]
        if _ROUTING & set(local):
            return False
        try:
            name = normalize_domain(domain)
        except ValueError:
            return False
        for entry in self.relay_domains:
            if entry.startswith("."):
                if name.endswith(entry) and len(name) > len(entry):
                    return True
            elif name == entry:
                return True
        return False

    def allows(self, *, authenticated: bool, client: str, recipient: str) -> bool:
        """Whether RCPT ``recipient`` from this session may be accepted for relaying.

        Args:
            authenticated: The session authenticated.
            client: The client's address (after PROXY or XCLIENT).
            recipient: The forward-path, without angle brackets.
        """
        return authenticated or self.client_allowed(client) or self.domain_allowed(recipient)

    def refusal(self, session: Session, recipient: str, logger: LoggerLike) -> Reply | None:
        """:data:`RELAY_DENIED` (logged) when ``session`` may not relay to ``recipient``."""
        client = session.peer[0]
        authenticated = session.authenticated_as is not None
        if self.allows(authenticated=authenticated, client=client, recipient=recipient):
            return None
        logger.warn(f"Relay access denied: id={session.id} client {client} to <{recipient[:256]}>")
        return RELAY_DENIED

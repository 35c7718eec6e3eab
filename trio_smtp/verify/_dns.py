"""The DNS interface the verifiers use, and its implementation over dnspython under Trio.

Theory of operation: SPF, DKIM, DMARC and ARC only ever ask "what are the records of type T
at name N". :class:`Resolver` is that one question, async. An answer is a tuple of strings
(empty for NXDOMAIN and for "no data": both are *void* lookups for RFC 7208 §4.6.4); anything
that is not an answer (SERVFAIL, REFUSED, a timeout, no server reachable) raises
:class:`DnsTempError`, which every method turns into ``temperror``. Nothing here ever raises
anything else for bad DNS, so a broken resolver cannot crash a connection.

:class:`DnsResolver` asks real servers through ``dns.asyncresolver`` (dnspython runs natively
on Trio), keeps a small cache that honours each answer's TTL, and bounds every query by a
lifetime. The per-message budget is a Trio cancel scope put around a whole verification by
the caller (see ``_verifier.py``): cancelling it cancels the query in flight, so a resolver
that never answers costs one connection its budget and nobody else anything.

dnspython is an optional dependency (extra ``verify``): it is imported when the first
:class:`DnsResolver` is built, never by ``import trio_smtp``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

#: The record types the verifiers ask for.
RdType = Literal["A", "AAAA", "MX", "TXT", "PTR"]

#: Entries kept in a resolver's cache; the oldest goes first past it.
DEFAULT_CACHE_SIZE: Final = 1024
#: Upper bound on how long an answer is cached, whatever its TTL says.
MAX_CACHE_TTL: Final = 3600.0
#: How long a negative answer (NXDOMAIN, no data) is cached when no SOA minimum is known.
NEGATIVE_TTL: Final = 60.0
#: One query's lifetime (all servers, all retries). RFC 7208 §4.6.4 asks for at least
#: 20 seconds for a whole SPF check; the per-message budget bounds the sum.
DEFAULT_QUERY_LIFETIME: Final = 5.0
DNS_PORT: Final = 53


class DnsTempError(Exception):
    """A lookup that got no answer: SERVFAIL, refused, timed out, no server reachable."""


class Resolver(Protocol):
    """What the verifiers need from DNS.

    ``query`` returns the records' texts: an address for A and AAAA, ``"PREFERENCE EXCHANGE"``
    for MX, the target name for PTR (no trailing dot), and for TXT each record's strings
    joined, decoded as UTF-8 with ``surrogateescape`` (so ``str.isascii`` tells 7-bit
    records apart and the bytes come back with ``encode("utf-8", "surrogateescape")``).
    An empty tuple means NXDOMAIN or no data. Errors raise :class:`DnsTempError`.
    """

    async def query(self, name: str, rdtype: RdType) -> tuple[str, ...]: ...


def parse_server(text: str) -> tuple[str, int]:
    """Parse ``HOST[:PORT]`` (``[v6]:PORT`` or a bare IPv6 address) into ``(address, port)``.

    Raises:
        ValueError: naming the bad value, when it is not an IP address with an optional port.
    """
    host, port = text, DNS_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad DNS server {text!r}: expected HOST[:PORT]")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad DNS server {text!r}: expected [HOST]:PORT")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(text, rest)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad DNS server {text!r}: not an IP address") from None
    return host, port


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"bad DNS server {text!r}: bad port {value!r}")
    return int(value)


@attrs.frozen
class _Entry:
    expires: float
    records: tuple[str, ...] | None  # None: a cached temporary error is never stored


class DnsResolver:
    """A :class:`Resolver` over dnspython's async resolver, with a TTL-honouring cache.

    Args:
        servers: ``(address, port)`` pairs to ask, in order; empty means the system's
            resolvers (``/etc/resolv.conf``).
        lifetime: Seconds one query may take, over all servers and retries.
        cache_size: Answers kept; ``0`` disables the cache.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        *,
        lifetime: float = DEFAULT_QUERY_LIFETIME,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        import dns.asyncresolver
        import dns.nameserver

        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in servers]
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = lifetime
        resolver.timeout = lifetime
        # Answers are judged by us (void lookups, temperror), not retried on SERVFAIL.
        resolver.retry_servfail = False
        self._resolver: Any = resolver
        self._lifetime = lifetime
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.queries = 0  #: Queries sent to a server (cache misses), for tests and metrics.

    async def query(self, name: str, rdtype: RdType) -> tuple[str, ...]:
        import dns.asyncbackend
        import dns.exception
        import dns.name
        import dns.resolver

        key = (name.lower().rstrip("."), rdtype)
        now = trio.current_time()
        entry = self._cache.get(key)
        if entry is not None and entry.records is not None:
            if entry.expires > now:
                self._cache.move_to_end(key)
                return entry.records
            del self._cache[key]
        self.queries += 1
        try:
            qname = dns.name.from_text(key[0] + ".")
        except dns.exception.DNSException:
            # A label over 63 octets or a name over 255: no such name can exist.
            return ()
        try:
            answer = await self._resolver.resolve(
                qname,
                rdtype,
                raise_on_no_answer=False,
                lifetime=self._lifetime,
                search=False,
                backend=dns.asyncbackend.get_backend("trio"),
            )
        except dns.resolver.NXDOMAIN:
            self._store(key, (), NEGATIVE_TTL)
            return ()
        except (dns.exception.DNSException, OSError) as exc:
            # dnspython raises NoNameservers for SERVFAIL/REFUSED from every server,
            # LifetimeTimeout when none answered in time.
            raise DnsTempError(f"{rdtype} {key[0]}: {type(exc).__name__}") from exc
        rrset = answer.rrset
        if rrset is None:
            self._store(key, (), NEGATIVE_TTL)
            return ()
        records = tuple(_text(rdata, rdtype) for rdata in rrset)
        self._store(key, records, float(rrset.ttl))
        return records

    def _store(self, key: tuple[str, str], records: tuple[str, ...], ttl: float) -> None:
        if self._cache_size <= 0 or ttl <= 0:
            return
        self._cache[key] = _Entry(trio.current_time() + min(ttl, MAX_CACHE_TTL), records)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _text(rdata: Any, rdtype: str) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "surrogateescape")
    if rdtype == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
    if rdtype == "PTR":
        return str(rdata.target.to_text(omit_final_dot=True))
    return str(rdata.address)


class StaticResolver:
    """A :class:`Resolver` answering from a dict, for tests and for fixed local policy.

    Args:
        records: ``{(name, rdtype): (text, ...)}``; names compare case-insensitively.
            A value of ``None`` makes that query raise :class:`DnsTempError`.
    """

    def __init__(self, records: dict[tuple[str, str], tuple[str, ...] | None]) -> None:
        self._records = {(n.lower().rstrip("."), t): v for (n, t), v in records.items()}
        self.queries: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: RdType) -> tuple[str, ...]:
        key = (name.lower().rstrip("."), rdtype)
        self.queries.append(key)
        records = self._records.get(key, ())
        if records is None:
            raise DnsTempError(f"{rdtype} {name}: configured to fail")
        return records

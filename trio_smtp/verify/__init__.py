"""Who really sent it: SPF, DKIM, DMARC and ARC verification (``--verify``), opt-in.

Needs the ``verify`` extra (``pip install trio_smtp[verify]``: dnspython, dkimpy, authres,
publicsuffixlist); nothing here imports them before it is used, so ``import trio_smtp``
works without them.
"""

from __future__ import annotations

from ._dns import DnsResolver as DnsResolver
from ._dns import DnsTempError as DnsTempError
from ._dns import Resolver as Resolver
from ._dns import StaticResolver as StaticResolver
from ._dns import parse_server as parse_server
from ._spf import SpfResult as SpfResult
from ._spf import check_host as check_host
from ._spf import check_sender as check_sender

__all__ = [
    "DnsResolver",
    "DnsTempError",
    "Resolver",
    "SpfResult",
    "StaticResolver",
    "check_host",
    "check_sender",
    "parse_server",
]

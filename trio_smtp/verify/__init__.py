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
from ._header import delivery_parts as delivery_parts
from ._header import remove_forged as remove_forged
from ._results import AuthResults as AuthResults
from ._results import DmarcResult as DmarcResult
from ._results import MethodResult as MethodResult
from ._spf import SpfResult as SpfResult
from ._spf import check_host as check_host
from ._spf import check_sender as check_sender
from ._verifier import METHODS as METHODS
from ._verifier import Verifier as Verifier
from ._verifier import parse_methods as parse_methods

__all__ = [
    "METHODS",
    "AuthResults",
    "DmarcResult",
    "DnsResolver",
    "DnsTempError",
    "MethodResult",
    "Resolver",
    "SpfResult",
    "StaticResolver",
    "Verifier",
    "check_host",
    "check_sender",
    "delivery_parts",
    "parse_methods",
    "parse_server",
    "remove_forged",
]

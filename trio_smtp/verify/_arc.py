"""ARC (RFC 8617): is the chain of ARC sets on a forwarded message intact?

dkimpy's ``ARC.verify`` does the chain validation (RFC 8617 §5.2); we fetch every key the
``ARC-Seal`` and ``ARC-Message-Signature`` headers name beforehand, as for DKIM. The result
is ``arc=none`` (no ARC set), ``pass`` or ``fail`` (the only results RFC 8617 §4.4 defines;
a key that could not be fetched is a ``fail`` with that reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from ._bodyhash import ParsedMessage, checked_body
from ._dkim import dkimpy_logger
from ._dns import DnsTempError
from ._keys import KeyAnswer, dnsfunc, fetch_keys, key_name
from ._results import MethodResult

if TYPE_CHECKING:
    from ._dns import Resolver

#: RFC 8617 §4.2.1: the instance number i= is at most 50.
MAX_ARC_SETS: Final = 50


def _verify_chain(parsed: ParsedMessage, keys: dict[str, KeyAnswer]) -> MethodResult:
    import dkim

    try:
        arc = checked_body(dkim.ARC, parsed.body_hashes)(
            parsed.header_section, logger=dkimpy_logger
        )
        cv, details, reason = arc.verify(dnsfunc(keys))
    except dkim.DKIMException as exc:
        return MethodResult(method="arc", result="fail", reason=str(exc)[:200])
    except Exception as exc:  # dkimpy on hostile input: a failed chain, never a crash
        return MethodResult(method="arc", result="fail", reason=repr(exc)[:200])
    if cv == dkim.CV_None:
        return MethodResult(method="arc", result="none")
    if cv != dkim.CV_Pass:
        return MethodResult(method="arc", result="fail", reason=str(reason)[:200])
    props: list[tuple[str, str]] = []
    if details:
        newest = details[0]
        props = [
            ("header.ams-d", newest.get("ams-domain", b"").decode("ascii", "replace")),
            ("header.ams-s", newest.get("ams-selector", b"").decode("ascii", "replace")),
            ("header.as-d", newest.get("as-domain", b"").decode("ascii", "replace")),
            ("header.as-s", newest.get("as-selector", b"").decode("ascii", "replace")),
        ]
    return MethodResult(
        method="arc",
        result="pass",
        reason=f"{len(details)} ARC set(s) verified",
        properties=tuple(p for p in props if p[1]),
    )


async def verify_arc(resolver: Resolver, parsed: ParsedMessage) -> MethodResult:
    """Validate the ARC chain of the message."""
    if not parsed.arc_tags:
        return MethodResult(method="arc", result="none")
    # RFC 8617 §4.2.1: at most 50 ARC sets (two keys each); a longer chain fails unread.
    if len(parsed.arc_tags) > 2 * MAX_ARC_SETS:
        return MethodResult(method="arc", result="fail", reason="more than 50 ARC sets")
    names = [name for sig in parsed.arc_tags if sig and (name := key_name(sig))]
    keys = await fetch_keys(resolver, names)
    failed = [name for name, answer in keys.items() if isinstance(answer, DnsTempError)]
    if failed:
        return MethodResult(
            method="arc", result="fail", reason=f"key lookup failed: {', '.join(sorted(failed))}"
        )
    return await trio.to_thread.run_sync(_verify_chain, parsed, keys)

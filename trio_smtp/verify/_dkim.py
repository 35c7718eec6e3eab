"""DKIM (RFC 6376): every ``DKIM-Signature`` verified with dkimpy, keys from our resolver.

rsa-sha256 and ed25519-sha256 (RFC 8463) both verify; dkimpy refuses RSA keys under 1024
bits (RFC 8301 §3.2). The results follow RFC 8601 §2.7.1: ``pass``; ``fail`` when the
signature or body hash does not verify; ``permerror`` for a malformed signature or a missing
or unusable key; ``temperror`` when the key could not be fetched; ``none`` with no signature.

The body hash is computed while streaming the body from the spool (``_bodyhash.py``); dkimpy
gets the header section only. The CPU work (hashing, the signature checks) runs in worker
threads so other connections keep going.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ._bodyhash import ParsedMessage, checked_body
from ._dns import DnsTempError
from ._keys import dnsfunc, fetch_keys, key_name
from ._results import MethodResult

if TYPE_CHECKING:
    from ._dns import Resolver
    from ._keys import KeyAnswer

#: dkimpy logs every failed check; it goes here, silent unless the application configures it.
#: Signatures verified per message; later ones are not looked at (RFC 6376 §6.1 allows it).
MAX_SIGNATURES: Final = 16
dkimpy_logger: Final = logging.getLogger("trio_smtp.verify.dkimpy")
dkimpy_logger.addHandler(logging.NullHandler())


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace") if value else ""


def _properties(tags: dict[bytes, bytes] | None) -> tuple[tuple[str, str], ...]:
    if tags is None:
        return ()
    props = [("header.d", _text(tags.get(b"d"))), ("header.s", _text(tags.get(b"s")))]
    if tags.get(b"i"):
        props.append(("header.i", _text(tags.get(b"i"))))
    # RFC 6008: the signature's first characters tell two signatures of one domain apart.
    signature = b"".join(tags.get(b"b", b"").split())[:8]
    if signature:
        props.append(("header.b", _text(signature)))
    return tuple(p for p in props if p[1])


def _result(
    domain: str, props: tuple[tuple[str, str], ...], verdict: str, reason: str = ""
) -> MethodResult:
    return MethodResult(
        method="dkim", result=verdict, identity=domain, reason=reason, properties=props
    )


def _verify_all(parsed: ParsedMessage, keys: dict[str, KeyAnswer]) -> list[MethodResult]:
    """The synchronous part, for a worker thread."""
    import dkim

    results: list[MethodResult] = []
    lookup = dnsfunc(keys)
    try:
        verifier = checked_body(dkim.DKIM, parsed.body_hashes)(
            parsed.header_section, logger=dkimpy_logger
        )
    except dkim.DKIMException as exc:
        return [
            MethodResult(method="dkim", result="permerror", reason=f"unparsable message: {exc}")
        ]
    for index, sig in enumerate(parsed.dkim_tags):
        domain = _text(sig.get(b"d")) if sig else ""
        props = _properties(sig)
        result = functools.partial(_result, domain, props)
        name = key_name(sig) if sig else None
        key = keys.get(name) if name else None
        if isinstance(key, DnsTempError):
            results.append(result("temperror", f"key lookup: {key}"))
            continue
        if name is not None and key is None:
            results.append(result("permerror", f"no key at {name}"))
            continue
        try:
            ok = verifier.verify(idx=index, dnsfunc=lookup)
        except dkim.ValidationError as exc:
            # dkimpy raises this for a body hash mismatch (the message changed: fail) and for
            # malformed or expired tags (RFC 8601 §2.7.1: permerror).
            verdict = "fail" if "body hash mismatch" in str(exc) else "permerror"
            results.append(result(verdict, str(exc)[:200]))
            continue
        except dkim.DKIMException as exc:
            results.append(result("permerror", str(exc)[:200]))
            continue
        except Exception as exc:  # dkimpy on hostile input: never more than this signature
            results.append(result("permerror", repr(exc)[:200]))
            continue
        results.append(result("pass") if ok else result("fail", "signature did not verify"))
    return results


async def verify_dkim(resolver: Resolver, parsed: ParsedMessage) -> tuple[MethodResult, ...]:
    """Verify the ``DKIM-Signature`` fields of the message (the first
    :data:`MAX_SIGNATURES`); an empty tuple when there is none."""
    if not parsed.dkim_tags:
        return ()
    if len(parsed.dkim_tags) > MAX_SIGNATURES:
        # A sender controls how many signatures there are; we bound the lookups and the
        # signature checks they cost. (RFC 6376 §6.1: a verifier MAY limit the number.)
        parsed = attrs.evolve(parsed, dkim_tags=parsed.dkim_tags[:MAX_SIGNATURES])
    names = [name for sig in parsed.dkim_tags if sig and (name := key_name(sig))]
    keys = await fetch_keys(resolver, names)
    results = await trio.to_thread.run_sync(_verify_all, parsed, keys)
    return tuple(results)

"""Public keys for dkimpy, fetched beforehand through our async resolver.

Theory of operation: dkimpy verifies synchronously and asks DNS through a ``dnsfunc(name)``
callback. Calling our async resolver from inside it would mean blocking a thread on the Trio
loop. Instead the signatures' ``s=`` and ``d=`` tags are read first, every key record is
fetched concurrently under the message's budget, and dkimpy then runs in a worker thread with
a ``dnsfunc`` that only reads the fetched answers. A key whose lookup failed is remembered as
such, so its signature is reported ``temperror`` rather than ``fail``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ._dns import DnsTempError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._dns import Resolver

#: A key lookup's outcome: the record's text, ``None`` for no record, or the temporary error.
KeyAnswer = bytes | None | DnsTempError


def key_name(tags: dict[bytes, bytes]) -> str | None:
    """RFC 6376 §3.6.2.1: ``<selector>._domainkey.<domain>``, or ``None`` if tags are missing."""
    selector, domain = tags.get(b"s"), tags.get(b"d")
    if not selector or not domain:
        return None
    try:
        return f"{selector.decode('ascii')}._domainkey.{domain.decode('ascii')}".lower()
    except UnicodeDecodeError:
        return None


def signature_tags(
    headers: list[tuple[bytes, bytes]], name: bytes
) -> list[dict[bytes, bytes] | None]:
    """The tag lists of every header called ``name`` (``None`` for one that does not parse)."""
    from dkim.util import (
        InvalidTagValueList,
        parse_tag_value,
    )

    out: list[dict[bytes, bytes] | None] = []
    for field, value in headers:
        if field.lower() != name:
            continue
        try:
            out.append(parse_tag_value(value))
        except InvalidTagValueList:
            out.append(None)
    return out


async def fetch_keys(resolver: Resolver, names: Iterable[str]) -> dict[str, KeyAnswer]:
    """Fetch every key record concurrently; errors are kept per name, never raised."""
    answers: dict[str, KeyAnswer] = {}

    async def fetch(name: str) -> None:
        try:
            records = await resolver.query(name, "TXT")
        except DnsTempError as exc:
            answers[name] = exc
            return
        # RFC 6376 §3.6.2.2: more than one record gives undefined results; use the first.
        answers[name] = records[0].encode("utf-8", "surrogateescape") if records else None

    async with trio.open_nursery() as nursery:
        for name in set(names):
            nursery.start_soon(fetch, name)
    return answers


def dnsfunc(answers: dict[str, KeyAnswer]) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc`` that answers only from ``answers`` (never touches the network)."""

    def lookup(name: Any, timeout: float = 5) -> bytes | None:
        import dkim

        text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        answer = answers.get(text.rstrip(".").lower())
        if isinstance(answer, DnsTempError):
            raise dkim.DnsTimeoutError(str(answer))
        return answer

    return lookup

"""DKIM body hashes computed while streaming the body from the spool (RFC 6376 §3.4, §3.7).

Theory of operation: dkimpy wants the whole message as bytes. Only the body hash needs the
body, so we compute it here, one pass over the spool file in a worker thread, for every
``(algorithm, body canonicalization, l=)`` the signatures ask for; dkimpy then gets the header
section alone and a signature whose ``bh=`` we already checked (see ``_dkim.py``). Memory
stays at the size of the header section whatever the body's size.

The canonicalization matches dkimpy's byte for byte (a test compares them on random bodies):
lines end at LF with an optional CR before it; ``simple`` drops trailing empty lines and ends
a non-empty body with CRLF (an empty one is a lone CRLF); ``relaxed`` also strips spaces and
tabs at the end of each line (not of a last line without a line break, as dkimpy), folds runs
of them into one space, and makes an empty body empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

READ_SIZE: Final = 1 << 18
_WSP: Final = re.compile(rb"[\t ]+")
#: What each signing algorithm hashes with (RFC 6376 §3.3, RFC 8463).
HASHES: Final[dict[bytes, Callable[[], hashlib._Hash]]] = {
    b"rsa-sha256": hashlib.sha256,
    b"ed25519-sha256": hashlib.sha256,
    b"rsa-sha1": hashlib.sha1,
}

#: (algorithm, body canonicalization, l= or None)
BodyKey = tuple[bytes, bytes, int | None]


def body_key(tags: dict[bytes, bytes], *, default_c: bytes) -> BodyKey | None:
    """The body hash a signature asks for, or ``None`` if its tags make no sense."""
    algorithm = tags.get(b"a", b"").strip().lower()
    if algorithm not in HASHES:
        return None
    canon = b"".join(tags.get(b"c", default_c).split()).lower().split(b"/")
    body = canon[1] if len(canon) == 2 else b"simple"
    if body not in (b"simple", b"relaxed") or len(canon) > 2:
        return None
    length = None
    if b"l" in tags:
        raw = b"".join(tags[b"l"].split())
        if not raw.isdigit():
            return None
        length = int(raw)
    return algorithm, body, length


class _Canonicalizer:
    def __init__(self, key: BodyKey) -> None:
        algorithm, body, self._limit = key
        self._hash = HASHES[algorithm]()
        self._relaxed = body == b"relaxed"
        self._empty_lines = 0
        self._written = 0
        self._any = False

    def _emit(self, data: bytes) -> None:
        if self._limit is not None:
            data = data[: max(self._limit - self._written, 0)]
        self._written += len(data)
        self._hash.update(data)

    def line(self, text: bytes, *, last: bool = False) -> None:
        if self._relaxed:
            if not last:
                text = text.rstrip(b" \t")
            text = _WSP.sub(b" ", text)
        if not text:
            self._empty_lines += 1  # held back: empty lines at the end do not count
            return
        if self._empty_lines:
            self._emit(b"\r\n" * self._empty_lines)
            self._empty_lines = 0
        self._emit(text + b"\r\n")
        self._any = True

    def digest(self) -> bytes:
        if not self._any and not self._relaxed:
            self._emit(b"\r\n")  # RFC 6376 §3.4.3: an empty body is one CRLF
        return self._hash.digest()


def read_header_section(f: BinaryIO) -> bytes:
    """Read up to and including the empty line that ends the header section (or all)."""
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if not line or line in (b"\n", b"\r\n"):
            break
    return b"".join(lines)


def hash_body(f: BinaryIO, keys: set[BodyKey]) -> dict[BodyKey, bytes]:
    """Stream the rest of ``f`` (the body) once, into one hash per key."""
    canons = {key: _Canonicalizer(key) for key in keys}
    tail = b""
    while chunk := f.read(READ_SIZE):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for raw in lines:
            text = raw[:-1] if raw.endswith(b"\r") else raw
            for canon in canons.values():
                canon.line(text)
    if tail:
        for canon in canons.values():
            canon.line(tail, last=True)
    return {key: canon.digest() for key, canon in canons.items()}


@attrs.frozen
class ParsedMessage:
    """What the DKIM, DMARC and ARC checks need of a message, its body reduced to hashes.

    Attributes:
        header_section: The header section's bytes, with the empty line that ends it.
        headers: The header fields as ``(name, value)`` (dkimpy's parse).
        dkim_tags: The tag lists of every ``DKIM-Signature`` (``None``: unparsable).
        arc_tags: Those of every ``ARC-Seal`` and ``ARC-Message-Signature``.
        body_hashes: The body hash each signature asks for, by :data:`BodyKey`.
    """

    header_section: bytes
    headers: list[tuple[bytes, bytes]]
    dkim_tags: list[dict[bytes, bytes] | None]
    arc_tags: list[dict[bytes, bytes] | None]
    body_hashes: dict[BodyKey, bytes]


def parse_message(f: BinaryIO) -> ParsedMessage:
    """Read ``f`` once (blocking: call it in a thread): headers kept, body hashed."""
    import dkim

    from ._keys import signature_tags

    section = read_header_section(f)
    try:
        headers = [(bytes(k), bytes(v)) for k, v in dkim.rfc822_parse(section)[0]]
    except dkim.DKIMException:
        headers = []
    dkim_tags = signature_tags(headers, b"dkim-signature")
    seals = signature_tags(headers, b"arc-seal")
    ams = signature_tags(headers, b"arc-message-signature")
    keys = {k for t in dkim_tags if t and (k := body_key(t, default_c=b"simple/simple"))}
    keys |= {k for t in ams if t and (k := body_key(t, default_c=b"relaxed/relaxed"))}
    hashes = hash_body(f, keys) if keys else {}
    return ParsedMessage(section, headers, dkim_tags, seals + ams, hashes)


def checked_body(verifier_class: type, hashes: dict[BodyKey, bytes]) -> type:
    """A dkimpy ``DKIM`` or ``ARC`` subclass that checks ``bh=`` against ``hashes``.

    It is given the header section only: each signature's body hash is compared here (a
    mismatch raises dkimpy's own ``ValidationError("body hash mismatch ...")``), then
    dkimpy checks the header signature with ``bh=`` taken out of the tags it hashes from.
    (The ``DKIM-Signature`` header itself, ``bh=`` included, is still what the signature
    covers: dkimpy hashes the raw header, not the parsed tags.)
    """
    import dkim

    class BodyChecked(verifier_class):  # type: ignore[misc]
        def verify_sig(
            self, sig: dict[bytes, bytes], include_headers: Any, sig_header: Any, dnsfunc: Any
        ) -> Any:
            if b"bh" in sig:
                default = b"relaxed/relaxed" if verifier_class is dkim.ARC else b"simple/simple"
                key = body_key(sig, default_c=default)
                computed = hashes.get(key) if key is not None else None
                if computed is None:
                    raise dkim.ValidationError("unsupported body canonicalization or algorithm")
                try:
                    expected = base64.b64decode(b"".join(sig[b"bh"].split()))
                except (binascii.Error, ValueError):
                    raise dkim.ValidationError("bh= value is not valid base64") from None
                if computed != expected:
                    raise dkim.ValidationError(
                        f"body hash mismatch (got {base64.b64encode(computed)!r}, "
                        f"expected {sig[b'bh']!r})"
                    )
                sig = {k: v for k, v in sig.items() if k != b"bh"}
            return super().verify_sig(sig, include_headers, sig_header, dnsfunc)

    return BodyChecked

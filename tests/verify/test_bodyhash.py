"""Our streamed DKIM body hashes equal dkimpy's, whatever the body and however it is read."""

from __future__ import annotations

import hashlib
import io

from dkim.canonicalization import Relaxed, Simple
from hypothesis import given
from hypothesis import strategies as st

from trio_smtp.verify._bodyhash import hash_body, parse_message

# Bodies made of the characters that matter to canonicalization.
bodies = st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"x y"])).map(b"".join)


class Trickle(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        return super().read(2)


def dkimpy_canonical(body: bytes, relaxed: bool) -> bytes:
    # dkimpy's own path: rfc822_parse joins lines (split at \r?\n) with CRLF.
    import dkim

    _headers, joined = dkim.rfc822_parse(b"A: b\r\n\r\n" + body)
    return bytes((Relaxed if relaxed else Simple).canonicalize_body(joined))


@given(bodies, st.sampled_from([None, 0, 1, 5]))
def test_streamed_body_hash_equals_dkimpy(body: bytes, length: int | None) -> None:
    keys = {(b"rsa-sha256", b"simple", length), (b"rsa-sha256", b"relaxed", length)}
    got = hash_body(Trickle(body), keys)
    for key in keys:
        canonical = dkimpy_canonical(body, relaxed=key[1] == b"relaxed")
        if length is not None:
            canonical = canonical[:length]
        assert got[key] == hashlib.sha256(canonical).digest(), (body, key)


def test_header_section_is_kept_and_body_is_not() -> None:
    message = b"From: a@example.test\r\nDKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"
    message += b" d=example.test; s=s; bh=x; b=y; h=from\r\n\r\n" + b"body line\r\n" * 1000
    parsed = parse_message(io.BytesIO(message))
    assert parsed.header_section.endswith(b"h=from\r\n\r\n")
    assert len(parsed.header_section) < 200
    assert list(parsed.body_hashes) == [(b"rsa-sha256", b"relaxed", None)]

"""Keys and dkimpy signing for the verification tests: what a real sending domain publishes."""

from __future__ import annotations

import base64
import functools

import attrs
import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@attrs.frozen
class Key:
    selector: str
    domain: str
    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes  # what dkimpy's sign() takes
    txt: str  # the DNS TXT record at <selector>._domainkey.<domain>

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@functools.cache
def _rsa_material() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


@functools.cache
def _ed25519_material() -> tuple[bytes, str]:
    key = nacl.signing.SigningKey.generate()
    private = key.encode(encoder=nacl.encoding.Base64Encoder)
    public = key.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return private, public


def rsa_key(selector: str, domain: str) -> Key:
    private, public = _rsa_material()
    return Key(selector, domain, b"rsa-sha256", private, f"v=DKIM1; k=rsa; p={public}")


def ed25519_key(selector: str, domain: str) -> Key:
    private, public = _ed25519_material()
    return Key(selector, domain, b"ed25519-sha256", private, f"v=DKIM1; k=ed25519; p={public}")


def message(
    from_addr: str = "alice@example.test",
    body: str = "Hello, this is a signed message.\r\n",
    extra_headers: str = "",
) -> bytes:
    return (
        f"From: Alice <{from_addr}>\r\n"
        "To: bob@example.org\r\n"
        "Subject: verification test\r\n"
        "Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n"
        "Message-ID: <test-1@example.test>\r\n"
        f"{extra_headers}"
        "\r\n"
        f"{body}"
    ).encode()


def sign(content: bytes, key: Key) -> bytes:
    """``content`` with a DKIM-Signature by ``key`` prepended."""
    header = dkim.sign(
        content,
        key.selector.encode(),
        key.domain.encode(),
        key.private,
        signature_algorithm=key.algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(header) + content


def arc_seal(content: bytes, key: Key, srv_id: str) -> bytes:
    """What a forwarder does: record its Authentication-Results, then add an ARC set."""
    assert key.algorithm == b"rsa-sha256"
    with_ar = (
        f"Authentication-Results: {srv_id}; spf=pass smtp.mailfrom=example.test\r\n".encode()
        + content
    )
    headers = dkim.arc_sign(with_ar, key.selector.encode(), key.domain.encode(), key.private,
                            srv_id.encode())  # fmt: skip
    return b"".join(headers) + with_ar

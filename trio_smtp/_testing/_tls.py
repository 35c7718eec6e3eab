"""One throw-away certificate authority per process, for test servers with ``tls=True``."""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import trustme


@attrs.frozen(kw_only=True)
class TestCertificate:
    """A trustme CA and a leaf certificate for ``localhost``, ``127.0.0.1`` and ``::1``.

    Attributes:
        ca: The :class:`trustme.CA` that signed it.
        cert_file: The certificate chain (PEM), as the server's ``tls_cert``.
        key_file: The private key (PEM), as the server's ``tls_key``.
        ca_file: The CA certificate (PEM), for clients outside Python (``swaks``, ``curl``).
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    ca: trustme.CA
    cert_file: Path
    key_file: Path
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A new client SSL context that trusts this CA (and checks host names)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@functools.cache
def shared_certificate() -> TestCertificate:
    """The process's test certificate, made on first use (trustme is imported then)."""
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - the [testing] extra brings it
        raise RuntimeError('tls=True needs trustme: pip install "trio_smtp[testing]"') from exc
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
    directory = Path(tempfile.mkdtemp(prefix="trio_smtp-test-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert_file, key_file, ca_file = (
        directory / "cert.pem",
        directory / "key.pem",
        directory / "ca.pem",
    )
    cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    return TestCertificate(ca=ca, cert_file=cert_file, key_file=key_file, ca_file=ca_file)

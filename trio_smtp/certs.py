"""Make a throwaway certificate for trying TLS locally.

Run ``python -m trio_smtp.certs [--dir certs] [--days N]`` to write a certificate
for ``localhost``, ``127.0.0.1`` and ``::1`` to ``DIR/localhost.pem`` and its
private key to ``DIR/localhost-key.pem``.

The certificate is self-signed, so a client trusts it by using ``localhost.pem``
itself as its CA file. It is made with the ``cryptography`` package when that is
installed, else with ``trustme``, else with the ``openssl`` command. (trustme
needs cryptography, so in practice it is used only when asked for with
``--backend trustme``.) A trustme certificate is issued by a fresh trustme CA rather
than self-signed: ``localhost.pem`` then holds the certificate followed by that CA,
so that trusting ``localhost.pem`` still works, and the CA alone is also written to
``DIR/ca.pem``.

.. warning::
   These files are for local testing only. Anyone who has the key can impersonate
   the server; never use them in production.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

__all__ = ["BACKENDS", "DEFAULT_DAYS", "CertFiles", "CertGenerationError", "generate", "main"]

#: Validity of a generated certificate, in days (ten years).
DEFAULT_DAYS: Final = 3650

#: The backends :func:`generate` tries, in order.
BACKENDS: Final = ("cryptography", "trustme", "openssl")

_CERT_NAME: Final = "localhost.pem"
_KEY_NAME: Final = "localhost-key.pem"
_CA_NAME: Final = "ca.pem"
_DNS_NAMES: Final = ("localhost",)
_IP_ADDRESSES: Final = ("127.0.0.1", "::1")


class CertGenerationError(Exception):
    """No backend could make the certificate; the message is one line."""


class _BackendUnavailable(Exception):
    """This backend is not installed; try the next one."""


@attrs.frozen(kw_only=True)
class CertFiles:
    """What :func:`generate` wrote.

    Attributes:
        cert: The certificate (PEM); use it as the CA file on clients too.
        key: The unencrypted private key (PEM, PKCS#8).
        ca: The issuing CA (PEM) with the ``trustme`` backend, else ``None``.
        backend: Which backend made the files.
    """

    cert: Path
    key: Path
    ca: Path | None
    backend: str


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    # Write then rename, so that a server reading the old pair never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _with_cryptography(directory: Path, days: int) -> CertFiles:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise _BackendUnavailable("the cryptography package is not installed") from None

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    subject_key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in _DNS_NAMES]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in _IP_ADDRESSES]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little so that a client whose clock lags still accepts it.
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        # An end-entity certificate that is its own trust anchor. No KeyUsage: a
        # KeyUsage without keyCertSign stops OpenSSL from treating it as
        # self-signed, and keyCertSign is only allowed on CAs (RFC 5280 §4.2.1.3).
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(subject_key_id, critical=False)
        # Python 3.13's default client context (VERIFY_X509_STRICT) requires an AKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(subject_key_id),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / _CERT_NAME, directory / _KEY_NAME
    _write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return CertFiles(cert=cert_path, key=key_path, ca=None, backend="cryptography")


def _with_openssl(directory: Path, days: int) -> CertFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise _BackendUnavailable("the openssl command is not on PATH")
    san = ",".join([f"DNS:{n}" for n in _DNS_NAMES] + [f"IP:{a}" for a in _IP_ADDRESSES])
    cert_path, key_path = directory / _CERT_NAME, directory / _KEY_NAME
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_cert, tmp_key = Path(tmp, _CERT_NAME), Path(tmp, _KEY_NAME)
        command = [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-sha256",
            "-days",
            str(days),
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName={san}",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
            str(tmp_key),
            "-out",
            str(tmp_cert),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise CertGenerationError(
                f"openssl req failed with status {result.returncode}: {lines[0]}"
            )
        _write(key_path, tmp_key.read_bytes(), private=True)
        _write(cert_path, tmp_cert.read_bytes())
    return CertFiles(cert=cert_path, key=key_path, ca=None, backend="openssl")


def _with_trustme(directory: Path, days: int) -> CertFiles:
    try:
        import trustme
    except ImportError:
        raise _BackendUnavailable("the trustme package is not installed") from None

    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    issued = ca.issue_cert(
        *_DNS_NAMES,
        *_IP_ADDRESSES,
        not_before=now - datetime.timedelta(days=1),
        not_after=now + datetime.timedelta(days=days),
    )
    cert_path, key_path = directory / _CERT_NAME, directory / _KEY_NAME
    ca_path = directory / _CA_NAME
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    _write(key_path, issued.private_key_pem.bytes(), private=True)
    # The CA goes after the leaf: servers send it along (harmless), and clients
    # that use localhost.pem as their CA file find the root they must trust.
    _write(cert_path, chain + ca.cert_pem.bytes())
    _write(ca_path, ca.cert_pem.bytes())
    return CertFiles(cert=cert_path, key=key_path, ca=ca_path, backend="trustme")


_GENERATORS: Final[dict[str, Callable[[Path, int], CertFiles]]] = {
    "cryptography": _with_cryptography,
    "openssl": _with_openssl,
    "trustme": _with_trustme,
}


def generate(
    directory: str | os.PathLike[str] = "certs",
    *,
    days: int = DEFAULT_DAYS,
    backend: str | None = None,
) -> CertFiles:
    """Write a new certificate and key for ``localhost``, ``127.0.0.1`` and ``::1``.

    Existing files are replaced.

    Args:
        directory: Where to write; created if missing.
        days: How long the certificate stays valid.
        backend: One of :data:`BACKENDS`, or ``None`` to use the first that works.

    Returns:
        The paths written and the backend used.

    Raises:
        CertGenerationError: ``days`` is not positive, ``backend`` is unknown or
            unavailable, or no backend is available.
        OSError: The directory or files could not be written.
    """
    if days < 1:
        raise CertGenerationError(f"days must be at least 1, not {days!r}")
    if backend is not None and backend not in _GENERATORS:
        raise CertGenerationError(f"unknown certificate backend {backend!r}")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    reasons = []
    for name in (backend,) if backend is not None else BACKENDS:
        try:
            return _GENERATORS[name](path, days)
        except _BackendUnavailable as exc:
            reasons.append(str(exc))
    raise CertGenerationError("cannot generate a certificate: " + "; ".join(reasons))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0, or 2 on any error)."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_smtp.certs",
        description=(
            "Write a self-signed certificate and key for localhost, 127.0.0.1 and ::1. "
            "For local testing only: never use them in production."
        ),
    )
    parser.add_argument(
        "--dir", default="certs", type=Path, help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--days",
        default=DEFAULT_DAYS,
        type=_positive_int,
        help="validity in days (default: %(default)s)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="force one way of making the files"
    )
    args = parser.parse_args(argv)
    try:
        files = generate(args.dir, days=args.days, backend=args.backend)
    except (CertGenerationError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {files.cert} and {files.key} (with {files.backend})")
    if files.ca is not None:
        print(f"wrote {files.ca}: the CA that issued {files.cert.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

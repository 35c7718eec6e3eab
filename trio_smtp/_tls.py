"""Server-side TLS: SSL contexts, SNI certificate selection and handshake details.

Theory of operation
-------------------

One :class:`ssl.SSLContext` serves both STARTTLS (RFC 3207) and implicit TLS
(RFC 8314); the connection task wraps its socket stream in a :class:`trio.SSLStream`
with it. Every context built here carries an ``sni_callback``. OpenSSL calls it once
per handshake, after the ClientHello, with the name the client asked for (or
``None``). It does two things:

* it records that name on the :class:`ssl.SSLObject`, because on the server side
  :attr:`ssl.SSLObject.server_hostname` is always ``None`` and nothing else keeps the
  SNI name around. Our contexts create instances of :class:`_ServerSSLObject`, whose
  ``server_hostname`` reports the recorded name, so :func:`tls_info` can read it
  through :class:`trio.SSLStream`'s attribute forwarding;
* when ``sni`` maps that name (exactly, or through a ``*.example.com`` wildcard) to
  another certificate, it swaps ``ssl_object.context`` for a context built the same
  way around that certificate. OpenSSL then presents the new certificate. Unknown
  names, and clients that send no SNI at all, keep the default certificate.

Loading errors are turned into one-line :class:`TLSConfigError` messages naming the
file, because OpenSSL's own (``[SSL] PEM lib (_ssl.c:3905)``) say neither which file
nor what is wrong with it, and the CLI must print one clear line and exit 2.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import trio

from ._session import TLSInfo

__all__ = [
    "TLS_HANDSHAKE_TIMEOUT",
    "TLSConfigError",
    "server_ssl_context",
    "tls_info",
]

StrPath: TypeAlias = "str | os.PathLike[str]"

#: Seconds a client gets to finish the TLS handshake, after STARTTLS or on connect
#: to an implicit-TLS port, before the connection is dropped.
TLS_HANDSHAKE_TIMEOUT: Final = 30.0

# TLS 1.2 suites: forward-secret key exchange and AEAD ciphers only (the Mozilla
# "intermediate" profile). TLS 1.3 suites are all AEAD and are not affected by
# set_ciphers().
_TLS12_CIPHERS: Final = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
)

_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY: Final = b"PRIVATE KEY-----"


class TLSConfigError(ValueError):
    """A certificate, key or CA file could not be used.

    The message is one line naming the file and the reason, suitable for printing
    as is, e.g. ``cannot load TLS certificate '/x.pem': No such file or directory``.
    """


class _EncryptedKeyError(Exception):
    """Raised from the password callback: OpenSSL met an encrypted private key."""


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the controlling terminal, which
    # blocks a server forever; refuse instead.
    raise _EncryptedKeyError


class _ServerSSLObject(ssl.SSLObject):
    """An :class:`ssl.SSLObject` that remembers the SNI name its client sent."""

    _trio_smtp_sni: str | None = None

    @property
    def server_hostname(self) -> str | None:
        """On the server side, the SNI name the client sent; else the usual value."""
        if self.server_side:
            return self._trio_smtp_sni
        return super().server_hostname


def _read(path: StrPath, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TLSConfigError(f"cannot load {what} {os.fspath(path)!r}: {reason}") from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or exc.strerror or str(exc)
    return str(reason).replace("_", " ").lower()


def _load_cert_chain(context: ssl.SSLContext, cert: StrPath, key: StrPath) -> None:
    cert_pem = _read(cert, "TLS certificate")
    key_pem = _read(key, "TLS private key")
    if _PEM_CERTIFICATE not in cert_pem:
        raise TLSConfigError(
            f"cannot load TLS certificate {os.fspath(cert)!r}: no PEM certificate found"
        )
    if _PEM_PRIVATE_KEY not in key_pem:
        raise TLSConfigError(
            f"cannot load TLS private key {os.fspath(key)!r}: no PEM private key found"
        )
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKeyError:
        raise TLSConfigError(
            f"cannot load TLS private key {os.fspath(key)!r}: "
            "the key is encrypted; passphrase-protected keys are not supported"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"TLS private key {os.fspath(key)!r} does not match certificate {os.fspath(cert)!r}"
            ) from None
        raise TLSConfigError(
            f"cannot load TLS certificate {os.fspath(cert)!r} "
            f"with key {os.fspath(key)!r}: {_ssl_reason(exc)}"
        ) from None
    except OSError as exc:  # a file changed between our read and OpenSSL's
        raise TLSConfigError(
            f"cannot load TLS certificate {os.fspath(cert)!r} "
            f"with key {os.fspath(key)!r}: {exc.strerror or exc}"
        ) from None


def _load_client_ca(context: ssl.SSLContext, client_ca: StrPath) -> None:
    try:
        if os.path.isdir(client_ca):
            context.load_verify_locations(capath=client_ca)
        else:
            _read(client_ca, "TLS client CA")
            context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"cannot load TLS client CA {os.fspath(client_ca)!r}: {_ssl_reason(exc)}"
        ) from None
    except OSError as exc:
        raise TLSConfigError(
            f"cannot load TLS client CA {os.fspath(client_ca)!r}: {exc.strerror or exc}"
        ) from None


def _base_context(cert: StrPath, key: StrPath, client_ca: StrPath | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # RFC 8996 deprecates TLS 1.0 and 1.1; RFC 8314 §4.1 asks for TLS 1.2 or later.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # CRIME: compression leaks secrets (such as AUTH credentials) through lengths.
    context.options |= ssl.OP_NO_COMPRESSION
    # Client-initiated renegotiation is a cheap CPU denial of service.
    no_renegotiation: int | None = getattr(ssl, "OP_NO_RENEGOTIATION", None)
    if no_renegotiation is not None:
        context.options |= no_renegotiation
    context.set_ciphers(_TLS12_CIPHERS)
    context.sslobject_class = _ServerSSLObject
    _load_cert_chain(context, cert, key)
    if client_ca is not None:
        # CERT_OPTIONAL: ask for a certificate, so that hooks can see who the client
        # is, but let clients without one in. A certificate that is presented must
        # chain to client_ca, or the handshake fails.
        _load_client_ca(context, client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def _normalize_name(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        # Clients send A-labels in SNI (RFC 6066 §3); accept U-labels in the config.
        name = ".".join(
            label if label == "*" else label.encode("idna").decode("ascii")
            for label in name.split(".")
        )
    return name


def _is_valid_sni_key(name: str) -> bool:
    labels = name.split(".")
    if not all(labels):
        return False
    if labels[0] == "*":
        # Only a whole leftmost label may be a wildcard (RFC 6125 §6.4.3), and a
        # bare "*" would swallow every single-label name.
        return len(labels) > 1 and "*" not in name[2:]
    return "*" not in name


def _sni_lookup(contexts: Mapping[str, ssl.SSLContext], server_name: str) -> ssl.SSLContext | None:
    """The context for ``server_name``: an exact entry, else a ``*.`` wildcard one.

    A wildcard stands for exactly one whole leftmost label (RFC 6125 §6.4.3):
    ``*.example.com`` matches ``mail.example.com`` but neither ``example.com`` nor
    ``a.b.example.com``.
    """
    name = _normalize_name(server_name)
    context = contexts.get(name)
    if context is None and "." in name:
        context = contexts.get("*." + name.split(".", 1)[1])
    return context


def _make_sni_callback(
    contexts: Mapping[str, ssl.SSLContext],
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    def sni_callback(
        ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        if isinstance(ssl_object, _ServerSSLObject):
            ssl_object._trio_smtp_sni = server_name
        if server_name is not None and contexts:
            chosen = _sni_lookup(contexts, server_name)
            if chosen is not None:
                ssl_object.context = chosen
        # None: carry on with the handshake.
        return None

    return sni_callback


def server_ssl_context(
    cert: StrPath,
    key: StrPath,
    *,
    sni: Mapping[str, tuple[StrPath, StrPath]] | None = None,
    client_ca: StrPath | None = None,
) -> ssl.SSLContext:
    """Build the SSL context for STARTTLS and implicit-TLS listeners.

    The context speaks TLS 1.2 and 1.3 only, prefers the server's cipher order,
    allows only forward-secret AEAD suites on TLS 1.2, and refuses compression and
    renegotiation.

    Args:
        cert: PEM file with the default certificate, optionally followed by its chain.
        key: PEM file with the certificate's unencrypted private key (may be ``cert``).
        sni: Other certificates by server name, as ``(cert, key)`` pairs. A key is
            a host name (``mail.example.com``) or a wildcard for one label
            (``*.example.com``); matching ignores case and a trailing dot, and an
            exact name wins over a wildcard. Names not found here, and clients
            that send no SNI, get the default certificate.
        client_ca: A PEM file (or an OpenSSL hashed directory) of CAs for client
            certificates. When given, the server asks clients for a certificate,
            lets in clients without one, and refuses certificates that do not
            chain to these CAs; :func:`tls_info` reports the verified certificate.
            Without it, the server never asks.

    Returns:
        A server-side :class:`ssl.SSLContext`, for :class:`trio.SSLStream`.

    Raises:
        TLSConfigError: A file is missing, unreadable, not PEM, encrypted, or the
            key does not match the certificate. The message names the file.
    """
    context = _base_context(cert, key, client_ca)
    contexts: dict[str, ssl.SSLContext] = {}
    for name, (sni_cert, sni_key) in (sni or {}).items():
        try:
            normalized = _normalize_name(name)
        except UnicodeError:
            normalized = ""
        if not _is_valid_sni_key(normalized):
            raise TLSConfigError(f"invalid SNI server name {name!r}")
        contexts[normalized] = _base_context(sni_cert, sni_key, client_ca)
    context.sni_callback = _make_sni_callback(contexts)
    return context


def tls_info(stream: trio.SSLStream[Any], *, implicit: bool) -> TLSInfo:
    """Describe a server-side TLS connection after its handshake.

    Args:
        stream: A server-side :class:`trio.SSLStream` whose handshake is done.
        implicit: ``True`` for an implicit-TLS (SMTPS) listener, ``False`` after
            STARTTLS.

    Returns:
        The protocol version, cipher, secret bits, the SNI name the client asked
        for (known only with a context from :func:`server_ssl_context`), and the
        client's certificate when it sent one that was verified.

    Raises:
        trio.NeedHandshakeError: The handshake has not finished.
    """
    cipher: tuple[str, str, int] | None = stream.cipher()
    peer_certificate: dict[str, Any] | None = stream.getpeercert()
    server_hostname = stream.server_hostname
    return TLSInfo(
        version=stream.version(),
        cipher=cipher[0] if cipher is not None else None,
        bits=cipher[2] if cipher is not None else None,
        server_name=server_hostname if isinstance(server_hostname, str) else None,
        # An unverified certificate shows up as {}: report "none" rather than "empty".
        peer_certificate=peer_certificate or None,
        implicit=implicit,
    )

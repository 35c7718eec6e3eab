"""What the server knows about one connection, as hooks and sinks see it."""

from __future__ import annotations

import datetime
from typing import Any, Protocol

import attrs


@attrs.frozen(kw_only=True)
class TLSInfo:
    """The TLS details of a connection once the handshake is done.

    Attributes:
        version: The protocol version, e.g. ``"TLSv1.3"``.
        cipher: The cipher suite name, e.g. ``"TLS_AES_256_GCM_SHA384"``.
        bits: The cipher's secret bits.
        server_name: The SNI name the client asked for, or ``None``.
        peer_certificate: The client's certificate as returned by
            :meth:`ssl.SSLObject.getpeercert`, or ``None`` when it sent none.
        implicit: ``True`` for SMTPS (RFC 8314), ``False`` after STARTTLS.
    """

    version: str | None
    cipher: str | None
    bits: int | None = None
    server_name: str | None = None
    peer_certificate: dict[str, Any] | None = None
    implicit: bool = False


@attrs.frozen(kw_only=True)
class ProxyInfo:
    """What a PROXY protocol header said about the real client.

    Attributes:
        version: 1 or 2.
        source: The real client's ``(host, port)``, or ``None`` for ``LOCAL``/``UNKNOWN``.
        destination: The address the client connected to, or ``None``.
        tlvs: PROXY v2 type-length-value fields, by type.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: dict[int, bytes] = attrs.field(factory=dict)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class SessionFacts(Protocol):
    """What the protocol engine knows about the session (:class:`~trio_smtp.engine.Engine`)."""

    @property
    def helo_name(self) -> str | None: ...
    @property
    def esmtp(self) -> bool: ...
    @property
    def authenticated_as(self) -> str | None: ...
    @property
    def auth_mechanism(self) -> str | None: ...
    @property
    def close_reason(self) -> str | None: ...


@attrs.define(kw_only=True)
class Session:
    """One client connection.

    The server creates it when a connection is accepted; hooks read it as
    ``ctx.session`` and sinks as ``mail.session``. On a live connection
    ``helo_name``, ``esmtp``, ``authenticated_as``, ``auth_mechanism`` and
    ``close_reason`` are read from the protocol engine, which owns them (and forgets
    the first four after STARTTLS); a session built by hand (in a test) keeps the
    values it was given.

    Attributes:
        id: A short unique identifier, used in log lines and ``Received`` headers.
        peer: The client's ``(host, port)`` (the real one behind a PROXY header or XCLIENT).
        local: The server's ``(host, port)`` for this connection (XCLIENT's ``DESTADDR``
            and ``DESTPORT`` behind a proxy that gives them).
        client_name: The client's host name when a trusted proxy gave it (XCLIENT
            ``NAME``), else ``None`` (no DNS lookup is made; ``[UNAVAILABLE]`` and
            ``[TEMPUNAVAIL]`` are ``None`` too).
        hostname: The server's own name, as in the greeting.
        helo_name: The name the client gave in HELO, EHLO or LHLO, or ``None``.
        esmtp: ``True`` once the client used EHLO (or LHLO).
        lmtp: ``True`` on an LMTP server.
        tls: TLS details once TLS is active, else ``None``.
        authenticated_as: The login the client authenticated as, or ``None``.
        auth_mechanism: The SASL mechanism used, or ``None``.
        close_reason: Why the session ended, once it has (``"quit"``, ``"eof"``,
            ``"timeout"``, ``"server shutdown"``, ``"closed by hook"`` …; the
            ``close`` hook reads it), else ``None``.
        proxy: What a PROXY header said, or ``None``.
        started_at: When the connection was accepted (UTC).
        messages: How many messages this connection has had accepted.
    """

    id: str
    peer: tuple[str, int]
    local: tuple[str, int] | None = None
    client_name: str | None = None
    hostname: str = "localhost"
    lmtp: bool = False
    tls: TLSInfo | None = None
    proxy: ProxyInfo | None = None
    started_at: datetime.datetime = attrs.field(factory=_utcnow)
    messages: int = 0
    _helo_name: str | None = attrs.field(default=None, alias="helo_name", repr=False)
    _esmtp: bool = attrs.field(default=False, alias="esmtp", repr=False)
    _authenticated_as: str | None = attrs.field(default=None, alias="authenticated_as", repr=False)
    _auth_mechanism: str | None = attrs.field(default=None, alias="auth_mechanism", repr=False)
    _close_reason: str | None = attrs.field(default=None, alias="close_reason", repr=False)
    _facts: SessionFacts | None = attrs.field(default=None, alias="facts", repr=False, eq=False)

    @property
    def helo_name(self) -> str | None:
        """The name the client gave in HELO, EHLO or LHLO, or ``None``."""
        return self._facts.helo_name if self._facts is not None else self._helo_name

    @property
    def esmtp(self) -> bool:
        """``True`` once the client used EHLO (or LHLO)."""
        return self._facts.esmtp if self._facts is not None else self._esmtp

    @property
    def authenticated_as(self) -> str | None:
        """The login the client authenticated as, or ``None``."""
        return self._facts.authenticated_as if self._facts is not None else self._authenticated_as

    @property
    def auth_mechanism(self) -> str | None:
        """The SASL mechanism used, or ``None``."""
        return self._facts.auth_mechanism if self._facts is not None else self._auth_mechanism

    @property
    def close_reason(self) -> str | None:
        """Why the session ended, once it has; else ``None``."""
        return self._facts.close_reason if self._facts is not None else self._close_reason

    @property
    def peer_host(self) -> str:
        """The client's address without the port."""
        return self.peer[0]

    @property
    def protocol(self) -> str:
        """The RFC 3848 ``with`` keyword for ``Received`` headers (``ESMTPSA``, ``LMTPS`` …)."""
        if self.lmtp:
            base = "LMTP"
        elif self.esmtp:
            base = "ESMTP"
        else:
            return "SMTP"
        if self.tls is not None:
            base += "S"
        if self.authenticated_as is not None:
            base += "A"
        return base

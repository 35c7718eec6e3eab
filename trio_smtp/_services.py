"""What a :class:`~trio_smtp.Server` is built from: its dependencies, checked, and the
services its config names (logger, authenticator, TLS context, verifier).

Each builder refuses a bad value with a message naming it, at ``Server(...)``: a
server never starts with a sink that cannot deliver or a certificate it cannot load.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._auth_file import load_auth_file
from ._logger import Logger, LoggerLike, as_logger
from ._tls import server_ssl_context
from .verify._verifier import Verifier

if TYPE_CHECKING:
    from ._config import ServerConfig
    from ._settings import Authenticator

__all__ = ["authenticator", "dependencies", "logger", "ssl_context", "verifier"]


def verifier(config: ServerConfig) -> Verifier | None:
    """The SPF/DKIM/DMARC/ARC verifier ``verify`` asks for, or ``None``."""
    if not config.verify:
        return None
    return Verifier(
        config.verify,
        dns_servers=config.dns_servers,
        dmarc_enforce=config.dmarc_enforce,
        dns_budget=config.dns_budget,
    )


def dependencies(dependencies: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``dependencies`` mapping, its ``sink`` and ``authenticator`` checked."""
    if dependencies is not None and not isinstance(dependencies, Mapping):
        raise TypeError(f"dependencies must be a mapping, not {dependencies!r}")
    deps = dict(dependencies or {})
    sink = deps.get("sink")
    if sink is not None and not callable(getattr(sink, "deliver", None)):
        raise TypeError(f"sink {sink!r} has no deliver(mail) method")
    authenticator = deps.get("authenticator")
    if authenticator is not None and not callable(authenticator):
        raise TypeError(f"authenticator must be callable, not {authenticator!r}")
    return deps


def logger(deps: Mapping[str, Any], config: ServerConfig) -> LoggerLike:
    """The ``logger`` dependency as a logger, or the built-in one at ``log_level``."""
    logger = deps.get("logger")
    return Logger(level=config.log_level) if logger is None else as_logger(logger)


def authenticator(deps: Mapping[str, Any], config: ServerConfig) -> Authenticator | None:
    """The ``authenticator`` dependency, else one reading ``auth_file``, else ``None``."""
    authenticator: Authenticator | None = deps.get("authenticator")
    if authenticator is None and config.auth_file is not None:
        authenticator = load_auth_file(config.auth_file)
    return authenticator


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The context of ``tls_cert`` and ``tls_key`` (with SNI and client CAs), or ``None``."""
    if config.tls_cert is None:
        return None
    assert config.tls_key is not None
    return server_ssl_context(
        config.tls_cert, config.tls_key, sni=config.tls_sni, client_ca=config.tls_client_ca
    )

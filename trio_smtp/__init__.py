"""trio_smtp: an SMTP and LMTP server library for Trio, on a sans-IO engine.

``import trio_smtp.engine`` works without Trio installed: the Trio layer is imported
lazily, on first use of a name that needs it (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .engine import REPLY_CODES as REPLY_CODES
from .engine import Reply as Reply


def _version() -> str:
    # One version: pyproject.toml's, as the installed distribution records it (or,
    # run from a checkout, as pyproject.toml says). Read on first use:
    # importlib.metadata imports socket and email, which ``import trio_smtp.engine``
    # must not.
    import importlib.metadata

    try:
        return importlib.metadata.version("trio_smtp")
    except importlib.metadata.PackageNotFoundError:
        pass
    import pathlib
    import tomllib

    try:
        with (pathlib.Path(__file__).parent.parent / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0.0.0+unknown"


_LAZY = {
    "Server": "._server",
    "ServerConfig": "._config",
    "Schema": "._schema",
    "Context": "._schema",
    "Session": "._session",
    "TLSInfo": "._session",
    "ProxyInfo": "._session",
    "Mail": "._mail",
    "Recipient": "._mail",
    "Logger": "._logger",
    "Metrics": "._metrics",
    "AuthFile": "._auth_file",
    "AuthFileError": "._auth_file",
    "TLSConfigError": "._tls",
    "HookTimeout": "._hooks",
    "HookReturnError": "._hooks",
}

if TYPE_CHECKING:
    __version__: str
    from ._auth_file import AuthFile as AuthFile
    from ._auth_file import AuthFileError as AuthFileError
    from ._config import ServerConfig as ServerConfig
    from ._hooks import HookReturnError as HookReturnError
    from ._hooks import HookTimeout as HookTimeout
    from ._logger import Logger as Logger
    from ._mail import Mail as Mail
    from ._mail import Recipient as Recipient
    from ._metrics import Metrics as Metrics
    from ._schema import Context as Context
    from ._schema import Schema as Schema
    from ._server import Server as Server
    from ._session import ProxyInfo as ProxyInfo
    from ._session import Session as Session
    from ._session import TLSInfo as TLSInfo
    from ._tls import TLSConfigError as TLSConfigError


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = version = _version()
        return version
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_smtp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})


__all__ = [
    "REPLY_CODES",
    "AuthFile",
    "AuthFileError",
    "Context",
    "HookReturnError",
    "HookTimeout",
    "Logger",
    "Mail",
    "Metrics",
    "ProxyInfo",
    "Recipient",
    "Reply",
    "Schema",
    "Server",
    "ServerConfig",
    "Session",
    "TLSConfigError",
    "TLSInfo",
]

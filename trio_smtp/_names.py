"""How connections, addresses and command lines are named in log lines."""

from __future__ import annotations

import itertools
import secrets
from typing import Final

from .engine._state import SEQUENCE

_ids = itertools.count(1)
_ID_PREFIX: Final = secrets.token_hex(3)


def new_session_id() -> str:
    """A short identifier, unique in this process, for logs and ``Received`` headers."""
    return f"{_ID_PREFIX}{next(_ids):06x}"


def hostport(addr: tuple[str, int] | None) -> str:
    """``host:port``, with brackets around an IPv6 host; ``-`` when unknown."""
    if addr is None:
        return "-"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loggable(line: str) -> str:
    """A command line safe to log: AUTH arguments (secrets) are cut off."""
    if line[:4].upper() == "AUTH":
        return line[:4] + " ..."
    # A lone word that is no command may be a SASL response sent without waiting
    # for a 334 that never came (AUTH refused): base64 credentials, never logged.
    if " " not in line and line.upper() not in SEQUENCE:
        return f"<{len(line)} characters not shown>"
    return line[:200]

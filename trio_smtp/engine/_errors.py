"""Typed errors: a protocol error carries the reply it should produce."""

from __future__ import annotations

from ._replies import Reply


class ProtocolError(Exception):
    """Base class of the engine's errors."""


class RemoteProtocolError(ProtocolError):
    """The client broke the protocol; ``reply`` is what it should be told.

    The engine raises these internally and turns them into replies; they only escape
    to the caller from the grammar helpers, which are public for reuse.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply

    def __str__(self) -> str:
        return str(self.reply)


class LocalProtocolError(ProtocolError):
    """The caller used the engine wrongly (e.g. asked for an event before answering one)."""

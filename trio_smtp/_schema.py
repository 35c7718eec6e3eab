"""The smtpjs-shaped schema: validating ``events``/``config``/``data`` and calling hooks.

Hooks are looked up once, at construction, so that a typo in an event name fails
then, not at the first connection.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._config import ServerConfig, make_config

if TYPE_CHECKING:
    from ._logger import LoggerLike
    from ._mail import Mail
    from ._session import Session

#: One hook per SMTP/LMTP command.
COMMAND_EVENTS: Final = (
    "HELO",
    "EHLO",
    "LHLO",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "EXPN",
    "HELP",
    "STARTTLS",
    "AUTH",
)
#: Hooks for the life of a connection and a message. ``DATA_CHUNK`` sees each piece of a
#: body as it arrives (``ctx.chunk``) and may refuse the message early.
LIFECYCLE_EVENTS: Final = ("connect", "error", "DATA_CHUNK", "done", "close")
#: smtpjs spellings.
ALIASES: Final = {"MAIL FROM": "MAIL", "RCPT TO": "RCPT"}
EVENT_NAMES: Final = frozenset(COMMAND_EVENTS + LIFECYCLE_EVENTS) | frozenset(ALIASES)
SCHEMA_KEYS: Final = ("events", "config", "data")

Hook = Callable[..., Any]


@attrs.frozen(kw_only=True)
class Schema:
    """A validated schema.

    Attributes:
        events: Hooks by canonical event name (aliases resolved).
        config: The server settings.
        data: A factory for per-connection state (``ctx.data``), or ``None``.
    """

    events: Mapping[str, Hook] = attrs.field(factory=dict)
    config: ServerConfig = attrs.field(factory=ServerConfig)
    data: Callable[[], Any] | None = None


def _events(value: object) -> dict[str, Hook]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"schema 'events' must be a mapping of event name to hook, not {value!r}")
    hooks: dict[str, Hook] = {}
    for name, hook in value.items():
        name = str(name)
        if name not in EVENT_NAMES:
            raise ValueError(
                f"unknown event {name!r}; known events: "
                f"{', '.join(COMMAND_EVENTS + LIFECYCLE_EVENTS)} (and 'MAIL FROM', 'RCPT TO')"
            )
        if not callable(hook):
            raise TypeError(f"the hook for event {name!r} must be callable, not {hook!r}")
        canonical = ALIASES.get(name, name)
        if canonical in hooks:
            raise ValueError(f"event {canonical!r} is given twice (as {name!r} and its alias)")
        hooks[canonical] = hook
    return hooks


def make_schema(value: Schema | Mapping[str, Any] | None) -> Schema:
    """Validate a schema given as a mapping (or pass a :class:`Schema` through).

    Raises:
        ValueError, TypeError: naming the unknown key, event or bad hook.
    """
    if value is None:
        return Schema()
    if isinstance(value, Schema):
        return Schema(events=_events(value.events), config=value.config, data=value.data)
    if not isinstance(value, Mapping):
        raise TypeError(f"schema must be a mapping or a Schema, not {value!r}")
    for key in value:
        if key not in SCHEMA_KEYS:
            raise ValueError(f"unknown schema key {key!r}; expected {', '.join(SCHEMA_KEYS)}")
    data = value.get("data")
    if data is not None and not callable(data):
        raise TypeError(f"schema 'data' must be a factory (a callable), not {data!r}")
    return Schema(
        events=_events(value.get("events")),
        config=make_config(value.get("config")),
        data=data,
    )


async def call_hook(hook: Hook, *args: Any) -> Any:
    """Call a plain or async hook and return its result."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@attrs.define(kw_only=True, eq=False)
class Context:
    """What a command hook gets.

    Attributes:
        command: The command verb (``"MAIL"``, ``"RCPT"`` …).
        argument: The text after the verb (for AUTH, only the mechanism).
        address: For MAIL and RCPT, the address without brackets; else ``None``.
        params: For MAIL and RCPT, the ESMTP parameters (keys upper-cased).
        session: The connection.
        mail: The transaction in progress, or ``None``.
        data: This connection's state, from ``schema["data"]()``.
        logger: The server's logger.
        deps: The ``dependencies`` mapping given to the server.
        mechanism: For AUTH, ``"PLAIN"`` or ``"LOGIN"``.
        login: For AUTH, the login.
        password: For AUTH, the password (never in a ``repr``).
        authzid: For AUTH PLAIN, the authorization identity the client asked to act
            as (``""`` for none). One other than ``login`` is refused (535 5.7.8)
            unless the hook accepts the credentials.
        size: For BDAT, the chunk size; for DATA_CHUNK, the body's bytes so far.
        chunk: For DATA_CHUNK, the piece of the body that just arrived (dot-unstuffed).
        last: For BDAT, whether it is the last chunk.
    """

    command: str
    argument: str = ""
    address: str | None = None
    params: dict[str, str | None] = attrs.field(factory=dict)
    session: Session
    mail: Mail | None = None
    data: Any = None
    logger: LoggerLike
    deps: Mapping[str, Any] = attrs.field(factory=dict)
    mechanism: str | None = None
    login: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    authzid: str | None = None
    size: int | None = None
    last: bool | None = None
    chunk: bytes | None = attrs.field(default=None, repr=False)

"""The smtpjs-style logger and adapters for other loggers.

Lines look like ``[2026-11-28T14:39:08.611Z] [LOG] - Server start on ip: 127.0.0.1 port: 1337``.
Levels, from most to least verbose: ``debug info log warn error fatal``.

Theory of operation: much of what gets logged came from a client (addresses, HELO names,
logins, subjects), so :class:`Logger` escapes every character that is not printable (C0 and
C1 controls, DEL, NEL, U+2028/U+2029, bidi overrides, lone surrogates ...) as ``\\xNN`` /
``\\uNNNN`` before writing: no client can start a forged log line or send escape sequences to
the terminal that shows the log (``\\x9b2J`` clears one). A traceback is written on indented
continuation lines, each escaped on its own, so only the logger itself starts a line with ``[``.

With ``format="json"`` each record is one JSON object per line (``ts``, ``level``, ``msg`` and
the record's fields), ASCII-only, for Loki, ELK and ``jq``. Fields come from two places: the
ones a call passes (:func:`emit`), and the ones bound to the current Trio task with
:func:`bind` (the connection task binds ``session`` and ``peer``, so every line logged while
serving that connection carries them, hook and sink lines included).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Final, Protocol, TextIO, runtime_checkable

#: Level names from least to most severe.
LEVELS: Final = ("debug", "info", "log", "warn", "error", "fatal")
_RANK: Final = {name: i for i, name in enumerate(LEVELS)}
_STDLIB: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "log": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}


#: Output formats of :class:`Logger`.
FORMATS: Final = ("text", "json")

# Fields bound to the current task (and copied into the threads it starts).
_BOUND: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "trio_smtp_log_fields", default=types.MappingProxyType({})
)


def bind(**fields: object) -> None:
    """Attach fields to every record logged from now on in the current task.

    Trio gives each task its own copy of the context, so fields bound by one connection
    task never show up in another's records. ``None`` values are left out.

    Args:
        **fields: ``session="…"``, ``peer="…"`` and the like.
    """
    merged = dict(_BOUND.get())
    merged.update({k: v for k, v in fields.items() if v is not None})
    _BOUND.set(merged)


def bound_fields() -> Mapping[str, object]:
    """The fields :func:`bind` attached to the current task."""
    return _BOUND.get()


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    if ch == "\n":
        return "\\n"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str, *, keep: str = "") -> str:
    """Replace every non-printable character with a visible escape (``\\x1b``, ``\\u2028``).

    Args:
        text: The text to write.
        keep: Characters to leave as they are (``"\\n\\t"`` for a message body).

    Returns:
        ``text`` itself when it is all printable (the common case costs one C-level scan).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape_char(ch) for ch in text)


@runtime_checkable
class LoggerLike(Protocol):
    """What the server needs of a logger: one method per smtpjs level."""

    def fatal(self, message: str) -> object: ...
    def error(self, message: str) -> object: ...
    def warn(self, message: str) -> object: ...
    def info(self, message: str) -> object: ...
    def log(self, message: str) -> object: ...
    def debug(self, message: str) -> object: ...


def timestamp(now: datetime.datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, as JavaScript's ``toISOString()``."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def check_level(level: str) -> str:
    """Validate a level name.

    Raises:
        ValueError: naming the bad level.
    """
    low = level.lower() if isinstance(level, str) else level
    if low not in _RANK:
        raise ValueError(f"unknown log level {level!r}; choose from {', '.join(LEVELS)}")
    return low


def check_format(value: str) -> str:
    """Validate a log format name.

    Raises:
        ValueError: naming the bad format.
    """
    if value not in FORMATS:
        raise ValueError(f"unknown log format {value!r}; choose from {', '.join(FORMATS)}")
    return value


class Logger:
    """Writes ``[timestamp] [LEVEL] - message`` lines, or one JSON object per line.

    Every non-printable character of a message is escaped (see the module docstring).

    Args:
        level: The least severe level written.
        stream: Where lines go; ``sys.stderr`` (looked up at each write) by default.
        format: ``"text"`` (the smtpjs lines) or ``"json"``.
    """

    def __init__(
        self, level: str = "info", stream: TextIO | None = None, *, format: str = "text"
    ) -> None:
        self.level = check_level(level)
        self.format = check_format(format)
        self._min = _RANK[self.level]
        self._stream = stream

    def __repr__(self) -> str:
        return f"Logger(level={self.level!r}, format={self.format!r})"

    def enabled(self, level: str) -> bool:
        """Whether records at ``level`` are written."""
        return _RANK[level] >= self._min

    def write(
        self,
        level: str,
        message: str,
        fields: Mapping[str, object] | None = None,
        *,
        exc: BaseException | None = None,
        always: bool = False,
    ) -> None:
        """Write one record.

        Args:
            level: One of :data:`LEVELS`.
            message: The text; escaped here.
            fields: Extra fields (shown in the JSON format only), added to the bound ones.
            exc: An exception whose traceback follows the message.
            always: Write it whatever the level (the start lines).
        """
        if not always and _RANK[level] < self._min:
            return
        tb = "".join(traceback.format_exception(exc)).rstrip("\n") if exc is not None else None
        if self.format == "json":
            record: dict[str, object] = {"ts": timestamp(), "level": level, "msg": message}
            for key, value in {**_BOUND.get(), **(fields or {})}.items():
                record.setdefault(key, value)
            if tb is not None:
                record["traceback"] = tb
            line = json.dumps(record, ensure_ascii=True, default=str) + "\n"
        else:
            line = f"[{timestamp()}] [{level.upper()}] - {escape(message)}\n"
            if tb is not None:
                line += "".join(f"    {escape(part)}\n" for part in tb.split("\n"))
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the server down

    def fatal(self, message: str, **fields: object) -> None:
        """Log at ``fatal``."""
        self.write("fatal", message, fields)

    def error(self, message: str, **fields: object) -> None:
        """Log at ``error``."""
        self.write("error", message, fields)

    def warn(self, message: str, **fields: object) -> None:
        """Log at ``warn``."""
        self.write("warn", message, fields)

    def info(self, message: str, **fields: object) -> None:
        """Log at ``info``."""
        self.write("info", message, fields)

    def log(self, message: str, **fields: object) -> None:
        """Log at ``log``."""
        self.write("log", message, fields)

    def debug(self, message: str, **fields: object) -> None:
        """Log at ``debug``."""
        self.write("debug", message, fields)


class StdlibLogger:
    """Adapts a :class:`logging.Logger` to the smtpjs levels."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __repr__(self) -> str:
        return f"StdlibLogger({self.logger!r})"

    def _log(self, level: str, message: str, fields: Mapping[str, object]) -> None:
        # The fields go to ``extra`` (under a prefix, so they cannot clash with the
        # LogRecord's own attributes) for handlers that format them.
        extra = {f"smtp_{k}": v for k, v in {**_BOUND.get(), **fields}.items()}
        self.logger.log(_STDLIB[level], escape(message), extra=extra)

    def fatal(self, message: str, **fields: object) -> None:
        self._log("fatal", message, fields)

    def error(self, message: str, **fields: object) -> None:
        self._log("error", message, fields)

    def warn(self, message: str, **fields: object) -> None:
        self._log("warn", message, fields)

    def info(self, message: str, **fields: object) -> None:
        self._log("info", message, fields)

    def log(self, message: str, **fields: object) -> None:
        self._log("log", message, fields)

    def debug(self, message: str, **fields: object) -> None:
        self._log("debug", message, fields)


def as_logger(obj: object) -> LoggerLike:
    """Turn what the user gave as ``logger`` into something with the six level methods.

    Raises:
        TypeError: naming the missing methods.
    """
    if obj is None:
        return Logger()
    if isinstance(obj, logging.Logger):
        return StdlibLogger(obj)
    missing = [name for name in LEVELS if not callable(getattr(obj, name, None))]
    if missing:
        raise TypeError(
            f"logger {obj!r} lacks the methods {', '.join(missing)}; give an object with "
            f"{', '.join(LEVELS)} or a logging.Logger"
        )
    assert isinstance(obj, LoggerLike)
    return obj


def writes(logger: LoggerLike, level: str) -> bool:
    """Whether ``logger`` would write a record at ``level`` (``True`` when it cannot tell).

    Lets a caller skip the work of building a record nobody reads (the Subject of every
    message, parsed for the message log line).
    """
    if isinstance(logger, Logger):
        return logger.enabled(level)
    if isinstance(logger, StdlibLogger):
        return logger.logger.isEnabledFor(_STDLIB[level])
    return True


def emit(
    logger: LoggerLike,
    level: str,
    message: str,
    *,
    exc: BaseException | None = None,
    **fields: object,
) -> None:
    """Log ``message`` with structured fields, through whatever logger the server has.

    :class:`Logger` writes the fields in its JSON format and the traceback of ``exc`` on
    continuation lines; a :class:`logging.Logger` gets them as ``extra`` and ``exc_info``;
    any other smtpjs-style logger gets the message (and the traceback after it).

    Args:
        logger: The server's logger.
        level: One of :data:`LEVELS`.
        message: The text of the record.
        exc: An exception whose traceback belongs to the record.
        **fields: Structured fields (``message_id=``, ``result=`` ...).
    """
    if isinstance(logger, Logger):
        logger.write(level, message, fields, exc=exc)
    elif isinstance(logger, StdlibLogger):
        extra = {f"smtp_{k}": v for k, v in {**_BOUND.get(), **fields}.items()}
        logger.logger.log(
            _STDLIB[level],
            escape(message),
            extra=extra,
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )
    else:
        # Someone else's logger may not escape: give it a line that is safe as it is.
        text = escape(message)
        if exc is not None:
            tb = "".join(traceback.format_exception(exc)).rstrip("\n")
            text += "".join(f"\n    {escape(part)}" for part in tb.split("\n"))
        getattr(logger, level)(text)


def announce(logger: LoggerLike, message: str) -> None:
    """Log a start or stop line at ``log``, written whatever the level of a :class:`Logger`.

    Scripts learn the port from the start lines, so ``--log-level warn`` must not hide them.
    """
    if isinstance(logger, Logger):
        logger.write("log", message, always=True)
    else:
        logger.log(message)

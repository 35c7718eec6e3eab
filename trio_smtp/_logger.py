"""The smtpjs-style logger and adapters for other loggers.

Lines look like ``[2026-11-28T14:39:08.611Z] [LOG] - Server start on ip: 127.0.0.1 port: 1337``.
Levels, from most to least verbose: ``debug info log warn error fatal``.
"""

from __future__ import annotations

import datetime
import logging
import sys
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


class Logger:
    """Writes ``[timestamp] [LEVEL] - message`` lines.

    Args:
        level: The least severe level written.
        stream: Where lines go; ``sys.stderr`` (looked up at each write) by default.
    """

    def __init__(self, level: str = "info", stream: TextIO | None = None) -> None:
        self.level = check_level(level)
        self._min = _RANK[self.level]
        self._stream = stream

    def __repr__(self) -> str:
        return f"Logger(level={self.level!r})"

    def _write(self, level: str, message: str) -> None:
        if _RANK[level] < self._min:
            return
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(f"[{timestamp()}] [{level.upper()}] - {message}\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the server down

    def fatal(self, message: str) -> None:
        """Log at ``fatal``."""
        self._write("fatal", message)

    def error(self, message: str) -> None:
        """Log at ``error``."""
        self._write("error", message)

    def warn(self, message: str) -> None:
        """Log at ``warn``."""
        self._write("warn", message)

    def info(self, message: str) -> None:
        """Log at ``info``."""
        self._write("info", message)

    def log(self, message: str) -> None:
        """Log at ``log``."""
        self._write("log", message)

    def debug(self, message: str) -> None:
        """Log at ``debug``."""
        self._write("debug", message)


class StdlibLogger:
    """Adapts a :class:`logging.Logger` to the smtpjs levels."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __repr__(self) -> str:
        return f"StdlibLogger({self.logger!r})"

    def fatal(self, message: str) -> None:
        self.logger.log(_STDLIB["fatal"], message)

    def error(self, message: str) -> None:
        self.logger.log(_STDLIB["error"], message)

    def warn(self, message: str) -> None:
        self.logger.log(_STDLIB["warn"], message)

    def info(self, message: str) -> None:
        self.logger.log(_STDLIB["info"], message)

    def log(self, message: str) -> None:
        self.logger.log(_STDLIB["log"], message)

    def debug(self, message: str) -> None:
        self.logger.log(_STDLIB["debug"], message)


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

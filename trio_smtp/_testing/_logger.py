"""A logger that keeps what the server said, for assertions."""

from __future__ import annotations

from typing import Final

#: The smtpjs levels, quietest last.
LEVELS: Final = ("fatal", "error", "warn", "info", "log", "debug")


class RecordingLogger:
    """Keeps every ``(level, message)`` the server logs, in order.

    It has the six methods of the smtpjs logger interface, so it goes wherever a
    ``dependencies["logger"]`` does. Debug lines (one per refused command) are only
    counted when ``keep_debug`` is false, so that an attack of 10,000 commands does not
    fill the test's memory; ``max_lines`` keeps only the latest lines.

    Args:
        keep_debug: Whether debug lines are kept (they are always counted).
        max_lines: How many lines to keep at most (the latest), or ``None`` for all.
    """

    def __init__(self, *, keep_debug: bool = True, max_lines: int | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self.debug_lines = 0
        self.keep_debug = keep_debug
        self.max_lines = max_lines

    def __repr__(self) -> str:
        return f"<RecordingLogger {len(self.lines)} lines>"

    def _keep(self, level: str, message: str) -> None:
        self.lines.append((level, message))
        if self.max_lines is not None and len(self.lines) > self.max_lines:
            del self.lines[: -self.max_lines]

    def fatal(self, message: str) -> None:
        self._keep("fatal", message)

    def error(self, message: str) -> None:
        self._keep("error", message)

    def warn(self, message: str) -> None:
        self._keep("warn", message)

    def info(self, message: str) -> None:
        self._keep("info", message)

    def log(self, message: str) -> None:
        self._keep("log", message)

    def debug(self, message: str) -> None:
        self.debug_lines += 1
        if self.keep_debug:
            self._keep("debug", message)

    def messages(self, level: str | None = None) -> list[str]:
        """The messages logged (at ``level``, if given), in order."""
        return [m for lv, m in self.lines if level is None or lv == level]

    def find(self, fragment: str, level: str | None = None) -> list[str]:
        """The messages (at ``level``, if given) that contain ``fragment``."""
        return [m for m in self.messages(level) if fragment in m]

    def matching(self, fragment: str) -> list[str]:
        """The messages that contain ``fragment`` (``find`` at any level)."""
        return self.find(fragment)

    @property
    def text(self) -> str:
        """Every line as ``[level] message``, joined by newlines."""
        return "\n".join(f"[{level}] {message}" for level, message in self.lines)

    def clear(self) -> None:
        """Forget every line so far."""
        self.lines.clear()
        self.debug_lines = 0

"""Log a one-line summary of each message, and optionally print it: the default sink."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import trio

from .._logger import LoggerLike, escape
from .._message_log import describe, log_message, read_subject

if TYPE_CHECKING:
    from .._mail import Mail

# The frame Python's old smtpd.DebuggingServer printed, familiar to anyone who used it.
BODY_START: Final = "---------- MESSAGE FOLLOWS ----------"
BODY_END: Final = "------------ END MESSAGE ------------"


class _InfoLogger(Protocol):
    def info(self, message: str, /) -> Any: ...


def summary(mail: Mail, subject: str | None = None) -> str:
    """The one-line description of a message the print sink logs.

    Args:
        mail: The message.

    Returns:
        ``Message accepted: id=<id> from=<sender> to=<rcpt>,<rcpt> size=<n> subject="…"``,
        the format every sink and the server use (see :mod:`trio_smtp._message_log`), with
        every non-printable character escaped.
    """
    return escape(describe(mail, "accepted", subject=subject)[0])


def printable_body(content: bytes) -> str:
    """The message as ``--print-body`` shows it: UTF-8 text, LF line ends, nothing hidden.

    Undecodable bytes become U+FFFD; every other non-printable character (a lone CR, ESC,
    C1 controls, NEL, U+2028 …) is escaped as in log lines, so a message cannot move the
    cursor of, or run escape sequences in, the terminal that shows it. Tabs stay.
    """
    text = content.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return escape(text, keep="\n\t")


class PrintSink:
    """Log each message in one line and, if asked, print the whole message.

    Writing happens on the event loop: this sink is meant for development, where the output
    goes to a terminal, not for throughput.

    Args:
        logger: Anything with an ``info(str)`` method (the server's logger, a
            :class:`logging.Logger`); without one, the line goes to :data:`sys.stderr`.
        print_body: Also write each whole message to ``stream``, decoded as UTF-8 (undecodable
            bytes replaced, non-printable characters escaped), between :data:`BODY_START`
            and :data:`BODY_END` lines.
        stream: Where messages go with ``print_body``; :data:`sys.stdout` by default (looked
            up on each delivery, so redirection works).
    """

    #: The server need not log its own line for each message: this sink does.
    logs_messages: Final = True

    def __init__(
        self,
        logger: _InfoLogger | None = None,
        *,
        print_body: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.logger = logger
        self.print_body = print_body
        self.stream = stream

    def __repr__(self) -> str:
        return f"PrintSink(print_body={self.print_body!r})"

    async def deliver(self, mail: Mail) -> None:
        """Log the summary line, then print the message if ``print_body`` is set.

        Args:
            mail: The message.
        """
        await trio.lowlevel.checkpoint()
        logger = self.logger
        if isinstance(logger, LoggerLike):
            await log_message(logger, "info", mail, "accepted")  # JSON fields with our Logger
        else:
            line = summary(mail, await read_subject(mail))
            if logger is None:
                print(line, file=sys.stderr, flush=True)
            else:
                logger.info(line)
        if self.print_body:
            stream = self.stream if self.stream is not None else sys.stdout
            text = printable_body(mail.content)
            if not text.endswith("\n"):
                text += "\n"
            # One write, so that messages of concurrent connections do not interleave.
            stream.write(f"{BODY_START}\n{text}{BODY_END}\n")
            stream.flush()

"""Log a one-line summary of each message, and optionally print it: the default sink."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import trio

from .._received import MAX_PATH, printable

if TYPE_CHECKING:
    from .._mail import Mail

# The frame Python's old smtpd.DebuggingServer printed, familiar to anyone who used it.
BODY_START: Final = "---------- MESSAGE FOLLOWS ----------"
BODY_END: Final = "------------ END MESSAGE ------------"


class _InfoLogger(Protocol):
    def info(self, message: str, /) -> Any: ...


def summary(mail: Mail) -> str:
    """The one-line description of a message the print sink logs.

    Args:
        mail: The message.

    Returns:
        ``Message <id> from <sender> to <rcpt>, <rcpt> size <n> bytes (session <id>)``, with
        control characters in client-supplied values replaced.
    """
    sender = printable(mail.mail_from, limit=MAX_PATH)
    rcpts = ", ".join(f"<{printable(r, limit=MAX_PATH)}>" for r in mail.rcpt_tos)
    return (
        f"Message {printable(mail.id, limit=MAX_PATH)} from <{sender}> to {rcpts} "
        f"size {mail.content_size} bytes (session {printable(mail.session.id, limit=MAX_PATH)})"
    )


class PrintSink:
    """Log each message in one line and, if asked, print the whole message.

    Writing happens on the event loop: this sink is meant for development, where the output
    goes to a terminal, not for throughput.

    Args:
        logger: Anything with an ``info(str)`` method (the server's logger, a
            :class:`logging.Logger`); without one, the line goes to :data:`sys.stderr`.
        print_body: Also write each whole message to ``stream``, decoded as UTF-8 (undecodable
            bytes replaced), between :data:`BODY_START` and :data:`BODY_END` lines.
        stream: Where messages go with ``print_body``; :data:`sys.stdout` by default (looked
            up on each delivery, so redirection works).
    """

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

    async def deliver(self, mail: Mail) -> None:
        """Log the summary line, then print the message if ``print_body`` is set.

        Args:
            mail: The message.
        """
        await trio.lowlevel.checkpoint()
        line = summary(mail)
        if self.logger is not None:
            self.logger.info(line)
        else:
            print(line, file=sys.stderr, flush=True)
        if self.print_body:
            stream = self.stream if self.stream is not None else sys.stdout
            text = mail.content.decode("utf-8", errors="replace").replace("\r\n", "\n")
            if not text.endswith("\n"):
                text += "\n"
            # One write, so that messages of concurrent connections do not interleave.
            stream.write(f"{BODY_START}\n{text}{BODY_END}\n")
            stream.flush()

"""The body of the message being received: one DATA body, or the chunks of BDAT.

Theory of operation: the engine hands this object the receive buffer while its state is
DATA or BDAT. For DATA one :class:`~._data.DataReader` reads to the terminator; for BDAT
each chunk gets a :class:`~._data.BdatReader`, and the chunks of one message share one
set of text rules (:class:`~._data.BdatText`, RFC 3030 §3) unless the body is
BINARYMIME. When a body or chunk is complete, :meth:`MessageBody.feed` says what it
became: :class:`EndOfMessage`, :class:`MessageRejected` (DATA broke a rule), the
:class:`Bdat` event, or a :class:`CommandRejected` for a refused chunk. The engine sends
the replies and moves the session on.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._config import EngineConfig
from ._data import BdatReader, BdatText, DataReader
from ._errors import LocalProtocolError
from ._events import Bdat, CommandRejected, EndOfMessage, Event, MessageRejected
from ._replies import MESSAGE_OK, Reply


class MessageBody:
    """Reads the current message's body out of the engine's receive buffer.

    Args:
        config: The engine's settings (size limit, line limit, bare CR/LF policy).
    """

    __slots__ = ("_chunk", "_config", "_reader", "_recipients", "_refusal", "_text")

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._reader: DataReader | BdatReader | None = None
        self._text: BdatText | None = None
        self._chunk: Bdat | None = None
        self._refusal: Reply | None = None
        self._recipients = 0

    def start_data(self, *, recipients: int) -> None:
        """DATA was answered 354: read a dot-terminated body (RFC 5321 §4.1.1.4)."""
        c = self._config
        self._reader = DataReader(
            max_size=c.max_message_size,
            max_line_length=c.max_data_line,
            bare_line_endings=c.bare_line_endings,
        )
        self._recipients = recipients

    def start_chunk(self, chunk: Bdat, refusal: Reply | None, *, binary: bool) -> None:
        """Read the ``chunk.size`` octets of a BDAT chunk; a refused one is thrown away."""
        self._chunk = chunk
        self._refusal = refusal
        text = None
        if refusal is None and not binary:
            if self._text is None:
                c = self._config
                self._text = BdatText(
                    max_line_length=c.max_data_line, bare_line_endings=c.bare_line_endings
                )
            text = self._text
        self._reader = BdatReader(chunk.size, keep=refusal is None, text=text, last=chunk.last)

    def reset(self) -> None:
        """The transaction is over: forget the reader and the message's text state."""
        self._reader = None
        self._text = None

    def feed(self, buf: bytearray) -> tuple[bytes, Event | None]:
        """Consume what can be consumed of ``buf``.

        Returns:
            ``(content, end)``: content to hand on (maybe empty), and once the body or
            chunk is complete, what it became.
        """
        reader = self._reader
        assert reader is not None
        data, done = reader.feed(buf)
        if not done:
            return data, None
        self._reader = None
        if isinstance(reader, DataReader):
            if reader.error is not None:
                return data, MessageRejected(reply=reader.error)
            end = EndOfMessage(
                size=reader.size, recipients=self._recipients, default_reply=MESSAGE_OK
            )
            return data, end
        chunk = self._chunk
        assert chunk is not None
        refusal = self._refusal
        if refusal is None and self._text is not None and self._text.error is not None:
            # RFC 3030 §3: BDAT text is still text; bare CR/LF or an over-long line
            # fail the chunk where they were seen, and so the transaction.
            refusal = self._text.error
        if refusal is not None:
            return data, CommandRejected(line=f"BDAT {chunk.argument}", reply=refusal)
        return data, chunk


def message_replies(
    event: EndOfMessage, reply: Reply | Sequence[Reply] | None, *, lmtp: bool
) -> list[Reply]:
    """The replies to send for a received message, checked against the protocol.

    Raises:
        LocalProtocolError: for an SMTP message not given exactly one reply, or an
            LMTP one given neither one reply nor one per recipient.
    """
    if reply is None:
        replies = [event.default_reply]
    elif isinstance(reply, Reply):
        replies = [reply]
    else:
        replies = list(reply)
        if not all(isinstance(r, Reply) for r in replies):
            raise LocalProtocolError(f"expected replies, not {reply!r}")
    if lmtp:
        # RFC 2033 §4.2: one reply for each recipient that got a 250 to RCPT.
        if len(replies) == 1:
            replies = replies * event.recipients
        elif len(replies) != event.recipients:
            raise LocalProtocolError(f"LMTP needs {event.recipients} replies, got {len(replies)}")
    elif len(replies) != 1:
        raise LocalProtocolError("an SMTP message gets exactly one reply")
    return replies

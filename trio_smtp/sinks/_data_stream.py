"""A text body turned into what DATA may carry, piece by piece (RFC 5321 §4.5.2).

Theory of operation: :class:`DataEncoder` gives, for a body fed in pieces of any size, the
same bytes as encoding the whole body at once: every lone CR or LF becomes CRLF (so that no
upstream, however lenient, finds an end of data the sender hid in the body: SMTP smuggling),
and every line that starts with a dot gets one more. Two facts cross a piece boundary, and
both are carried:

* a CR at the very end of a piece may be the first half of a CRLF: it is held back until
  the next byte is known;
* whether the next byte starts a line (the last byte written was the LF of a CRLF), so
  that a dot there is stuffed.

Nothing else is held, so the memory used is that of one piece.
"""

from __future__ import annotations

import re
from typing import Final

# A lone CR or LF, which DATA cannot carry safely.
_BARE_CR_OR_LF: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# A dot that starts a line inside a piece (the piece's own start is handled apart).
_DOT_AFTER_CRLF: Final = re.compile(rb"(?<=\r\n)\.")

#: What ends DATA: the last line's CRLF is ours if the body did not end with one.
END_OF_DATA: Final = b".\r\n"


class DataEncoder:
    """CRLF-only lines and dot-stuffing for a body that arrives in pieces."""

    def __init__(self) -> None:
        self._held_cr = False
        #: Whether the next byte written starts a line.
        self._line_start = True

    def feed(self, piece: bytes) -> bytes:
        """The encoded bytes of ``piece`` that are known so far."""
        if self._held_cr:
            piece = b"\r" + piece
            self._held_cr = False
        if piece.endswith(b"\r"):
            piece = piece[:-1]
            self._held_cr = True
        if not piece:
            return b""
        out = _BARE_CR_OR_LF.sub(b"\r\n", piece)
        out = _DOT_AFTER_CRLF.sub(b"..", out)
        if self._line_start and out[:1] == b".":
            out = b"." + out
        self._line_start = out.endswith(b"\r\n")
        return out

    def end(self) -> bytes:
        """The rest, and the end of data: ``CRLF.CRLF`` (the CRLF only if still needed)."""
        tail = b"\r\n" if self._held_cr else b""
        self._held_cr = False
        if not (tail or self._line_start):
            tail = b"\r\n"
        self._line_start = True
        return tail + END_OF_DATA


def encode_data(body: bytes) -> bytes:
    """The whole of ``body`` as DATA carries it, end of data included."""
    encoder = DataEncoder()
    return encoder.feed(body) + encoder.end()

"""What every Python floor server answers: the least that gets ``smtp-source`` through.

Not an SMTP server and not meant to be one: no parsing, no checks, no limits. A command
line is anything up to CRLF; its first four octets decide the reply (``DATA``: ``354``,
``QUIT``: ``221``, anything else ``250``). After ``354`` everything up to CRLF.CRLF is the
body (RFC 5321 §4.1.1.4: the CRLF that ends the DATA line counts as the first CRLF of that
sequence, hence the CRLF put back in front of the body), then ``250``. The servers share
this class so that they differ only in how their bytes move.
"""

from __future__ import annotations

from typing import Final

GREETING: Final = b"220 floor ESMTP\r\n"
_OK: Final = b"250 ok\r\n"
_GO_AHEAD: Final = b"354 go ahead\r\n"
_BYE: Final = b"221 bye\r\n"
_END_OF_DATA: Final = b"\r\n.\r\n"


class Answers:
    """One connection's line splitting: feed it bytes, get the replies they call for."""

    __slots__ = ("_buf", "_in_data", "messages")

    def __init__(self) -> None:
        self._buf = b""
        self._in_data = False
        #: Messages whose CRLF.CRLF has been seen so far.
        self.messages = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The replies ``data`` calls for, and whether the client said ``QUIT``."""
        buf = self._buf + data if self._buf else data
        replies = b""
        while True:
            if self._in_data:
                end = buf.find(_END_OF_DATA)
                if end < 0:
                    # At most four octets of a CRLF.CRLF split over two reads.
                    self._buf = buf[-4:]
                    return replies, False
                buf = buf[end + 5 :]
                replies += _OK
                self._in_data = False
                self.messages += 1
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                self._buf = buf
                return replies, False
            verb = buf[:4].upper()
            if verb == b"DATA":
                replies += _GO_AHEAD
                self._in_data = True
                buf = buf[end:]  # keep the CRLF: the body may be empty
            elif verb == b"QUIT":
                self._buf = b""
                return replies + _BYE, True
            else:
                replies += _OK
                buf = buf[end + 2 :]

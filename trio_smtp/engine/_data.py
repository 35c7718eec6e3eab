"""Message bodies: the DATA reader (RFC 5321 §4.1.1.4, §4.5.2) and the BDAT reader (RFC 3030).

Theory of operation (DATA): the body is processed in *regions*, as large as what is
buffered, never line by line. For each call:

1. Find the first ``CRLF.CRLF`` with ``bytes.find`` (the start of the body counts as
   following a CRLF). Only that exact sequence ends the message: ``LF.LF``,
   ``LF.CRLF``, ``CRLF.LF`` and ``CR.CR`` are data (RFC 5321 §4.1.1.4; the SMTP
   smuggling family, CVE-2023-51764/51765/51766).
2. Without a terminator, hold back the longest suffix that could begin one, so a
   terminator split across reads is still seen, and so a region never ends in a CR
   whose LF has not arrived.
3. In the region, count CR, LF and CRLF (C speed). Equal counts mean no bare CR or
   LF; otherwise apply the policy: normalize each to CRLF, or refuse the message once
   its end is seen (550 5.6.0).
4. Remove dot-stuffing with one ``replace`` of ``CRLF.`` by ``CRLF`` (RFC 5321
   §4.5.2). It happens before normalization, so a dot after a bare LF is content.
5. Check line lengths and the size limit; once either is exceeded, keep reading to
   the terminator but keep nothing.

The reader never holds more than the region it is given, and what it returns it does
not keep.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

from ._replies import BARE_LINE_ENDING, LINE_TOO_LONG, MSG_TOO_BIG, Reply

_TERMINATOR: Final = b"\r\n.\r\n"
_BARE_RE: Final = re.compile(rb"\r\n|\r|\n")
#: An int: ``b"." in buf`` would first try b"." as an int (a formatted TypeError, cleared).
_DOT: Final = ord(".")


class BareLineEndings(Enum):
    """What a bare LF or bare CR inside DATA gets."""

    #: Rewrite it to CRLF (the default; what Postfix and Exchange do).
    NORMALIZE = "normalize"
    #: Read to the end of the message, then refuse it with 550 5.6.0.
    REJECT = "reject"


def _held_back(buf: bytearray | bytes, at_line_start: bool) -> int:
    """How many trailing bytes of ``buf`` could be the start of a terminator."""
    n = len(buf)
    if at_line_start and n <= 3 and _TERMINATOR[2 : 2 + n] == buf:
        return n
    for k in (4, 3, 2, 1):
        if n >= k and buf.endswith(_TERMINATOR[:k]):
            return k
    return 0


class DataReader:
    """Reads one DATA body out of a receive buffer.

    Args:
        max_size: The size limit of the (unstuffed) content, or ``None``.
        max_line_length: The longest text line allowed including CRLF (RFC 5321
            §4.5.3.1.6), or ``None`` for no limit.
        bare_line_endings: The policy for bare LF and CR.
    """

    __slots__ = (
        "_at_line_start",
        "_line_len",
        "_max_line",
        "_max_size",
        "_policy",
        "error",
        "size",
    )

    def __init__(
        self,
        *,
        max_size: int | None,
        max_line_length: int | None,
        bare_line_endings: BareLineEndings,
    ) -> None:
        self._max_size = max_size
        self._max_line = max_line_length
        self._policy = bare_line_endings
        self._at_line_start = True
        self._line_len = 0
        #: The reply the message gets after its end, once it is refused.
        self.error: Reply | None = None
        #: Octets of content so far.
        self.size = 0

    def feed(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume what can be consumed of ``buf``.

        Returns:
            ``(content, done)``: content to hand on (maybe empty), and whether the
            terminator was found (and consumed).
        """
        if not buf:
            return b"", False
        # Offsets of the stuffing dots found on the way, to cut them out by slicing.
        dots: list[int] = []
        if self._at_line_start and buf[:1] == b".":
            if buf.startswith(b".\r\n"):
                del buf[:3]
                return b"", True
            if len(buf) < 3 and b".\r\n".startswith(buf):
                return b"", False
            dots.append(0)
        # One scan finds both the terminator and dot-stuffed lines: every CRLF "."
        # is one or the other (or, at the very end, not yet known).
        n = len(buf)
        # memchr for "." first: most reads of a large message (an attachment in base64
        # has no dot at all) are then spared the slower search for CRLF ".".
        pos = buf.find(b"\r\n.") if _DOT in buf else -1
        while pos >= 0:
            after = pos + 3
            if buf[after : after + 2] == b"\r\n":
                region = bytes(memoryview(buf)[: pos + 2])
                del buf[: pos + 5]
                return self._process(region, dots), True
            if n - after < 2 and b"\r\n".startswith(buf[after:]):
                break
            dots.append(pos + 2)
            pos = buf.find(b"\r\n.", after)
        keep = _held_back(buf, self._at_line_start)
        if keep == n:
            return b"", False
        cut = n - keep
        region = bytes(memoryview(buf)[:cut])
        del buf[:cut]
        return self._process(region, dots), False

    def _process(self, region: bytes, dots: list[int]) -> bytes:
        ends_with_break = region.endswith((b"\n", b"\r"))
        self._at_line_start = region.endswith(b"\r\n")
        if self.error is not None:
            return b""
        # splitlines() breaks at CRLF (two octets), bare CR and bare LF (one octet each)
        # alike: the region is clean exactly when its line breaks take two octets each.
        lines = region.splitlines()
        breaks = len(lines) - (0 if ends_with_break else 1)
        clean = len(region) - sum(map(len, lines)) == 2 * breaks
        if not clean and self._policy is BareLineEndings.REJECT:
            self.error = BARE_LINE_ENDING
            return b""
        if self._max_line is not None and lines:
            self._check_lines(lines, ends_with_break)
            if self.error is not None:
                return b""
        if dots:
            # RFC 5321 §4.5.2: remove the leading dot of every line that starts with one.
            view = memoryview(region)
            pieces = []
            start = 0
            for dot in dots:
                pieces.append(view[start:dot])
                start = dot + 1
            pieces.append(view[start:])
            region = b"".join(pieces)
        if not clean:
            region = _BARE_RE.sub(b"\r\n", region)
        self.size += len(region)
        if self._max_size is not None and self.size > self._max_size:
            self.error = MSG_TOO_BIG
            return b""
        return region

    def _check_lines(self, lines: list[bytes], ends_with_break: bool) -> None:
        # Lengths here exclude the line ending; the limit includes CRLF.
        limit = self._max_line
        assert limit is not None
        budget = limit - 2
        first = self._line_len + len(lines[0])
        # lines[0] is counted again in max(): harmless, ``first`` already covers it.
        longest = first if len(lines) == 1 else max(first, max(map(len, lines)))
        if longest > budget:
            self.error = LINE_TOO_LONG
            return
        if ends_with_break:
            self._line_len = 0
        else:
            self._line_len = first if len(lines) == 1 else len(lines[-1])


class BdatReader:
    """Reads the octets of one BDAT chunk (RFC 3030 §2): an exact count, no unstuffing.

    Args:
        size: The chunk size the client declared.
        keep: Whether to return the bytes (False to swallow a refused chunk).
        text: The message's text rules, or ``None`` for ``BODY=BINARYMIME``.
        last: Whether this is the message's last chunk.
    """

    __slots__ = ("keep", "last", "remaining", "text")

    def __init__(
        self, size: int, *, keep: bool, text: BdatText | None = None, last: bool = False
    ) -> None:
        self.remaining = size
        self.keep = keep
        self.text = text
        self.last = last

    def feed(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume up to the rest of the chunk from ``buf``.

        Returns:
            ``(content, done)``.
        """
        n = min(self.remaining, len(buf))
        chunk = bytes(buf[:n]) if self.keep else b""
        del buf[:n]
        self.remaining -= n
        done = self.remaining == 0
        if self.text is not None:
            chunk = self.text.process(chunk, final=done and self.last)
        return chunk, done


class BdatText:
    """The text rules for the chunks of one BDAT message that is not ``BODY=BINARYMIME``.

    RFC 3030 §3 leaves a 7BIT or 8BITMIME body sent with BDAT a text body: lines end in
    CRLF and are at most 1000 octets (RFC 5321 §4.5.3.1.6). Chunks are cut anywhere, so
    the state runs across them: a CR at the end of a chunk waits for the next chunk's
    first octet, and a line's length carries over.

    Args:
        max_line_length: The longest line, CRLF included, or ``None``.
        bare_line_endings: The policy for bare LF and CR, as for DATA.
    """

    __slots__ = ("_cr", "_line_len", "_max_line", "_policy", "error")

    def __init__(self, *, max_line_length: int | None, bare_line_endings: BareLineEndings) -> None:
        self._max_line = max_line_length
        self._policy = bare_line_endings
        self._cr = False
        self._line_len = 0
        #: The reply the chunk gets once the body broke a rule.
        self.error: Reply | None = None

    def process(self, data: bytes, *, final: bool) -> bytes:
        """Check (and under ``normalize`` rewrite) the next octets of the body.

        Args:
            data: Octets in order; may be empty.
            final: Whether these are the last octets of the message (BDAT LAST).

        Returns:
            The octets to hand on; a trailing CR is held back until its follower is seen.
        """
        if self.error is not None:
            return b""
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if not final and data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        if not data:
            return b""
        # One splitlines() gives both facts: the region is clean when its line breaks
        # take two octets each (CRLF), and the longest line (DataReader does the same).
        ends_with_break = data.endswith((b"\n", b"\r"))
        lengths = list(map(len, data.splitlines()))
        breaks = len(lengths) - (0 if ends_with_break else 1)
        clean = len(data) - sum(lengths) == 2 * breaks
        if not clean and self._policy is BareLineEndings.REJECT:
            self.error = BARE_LINE_ENDING
            return b""
        if self._max_line is not None and lengths:
            budget = self._max_line - 2
            first = self._line_len + lengths[0]
            if first > budget or max(lengths) > budget:
                self.error = LINE_TOO_LONG
                return b""
            if ends_with_break:
                self._line_len = 0
            else:
                self._line_len = first if len(lengths) == 1 else lengths[-1]
        if not clean:
            data = _BARE_RE.sub(b"\r\n", data)
        return data

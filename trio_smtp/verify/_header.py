"""Putting our ``Authentication-Results`` on a message, and taking forged ones off.

RFC 8601 §5: a receiver MUST remove (or rename) any ``Authentication-Results`` field already in
the message that claims its own authserv-id before adding its own, or a sender could forge
our verdict. We remove them: from the header section only, each field with its continuation
lines, every other byte of the message left as it was.

The sinks prepend :func:`auth_header` and read the body through :func:`delivery_file` (or
:func:`delivery_parts` for bytes): one touch each, nothing when verification is off, no
optional dependency imported.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, BinaryIO, Final

if TYPE_CHECKING:
    from ._results import AuthResults

_FIELD: Final = b"authentication-results"
READ_SIZE: Final = 65536
#: The most of one header field held back while deciding whether it is forged.
MAX_FIELD: Final = 1 << 20
# The authserv-id: the first token of the value, after whitespace and comments (RFC 8601 §2.2).
_AUTHSERV_ID: Final = re.compile(rb"\A(?:\s|\([^()]*\))*([^\s;()]+)")


def authserv_id(value: bytes) -> str:
    """The authserv-id an ``Authentication-Results`` value claims, lower-cased ("" if none)."""
    m = _AUTHSERV_ID.match(value)
    return m.group(1).decode("ascii", "replace").lower() if m else ""


class DeliveryFile:
    """A binary file over a message that leaves out forged ``Authentication-Results`` fields.

    Reads ``raw`` in order, holding back one header field at a time (at most
    :data:`MAX_FIELD` bytes of it) until it knows whether the field claims ``our_id``; after
    the header section everything passes through untouched. Blocking reads, for a thread.
    """

    def __init__(self, raw: BinaryIO, our_id: str) -> None:
        self._raw = raw
        self._our = our_id.lower()
        self._out = bytearray()
        self._partial = b""
        self._field: list[bytes] = []
        self._field_size = 0
        self._dropping = False
        self._in_headers = True
        self._eof = False

    def __enter__(self) -> DeliveryFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._out) < size):
            self._fill()
        if size < 0 or size >= len(self._out):
            data = bytes(self._out)
            self._out.clear()
        else:
            data = bytes(self._out[:size])
            del self._out[:size]
        return data

    def _fill(self) -> None:
        chunk = self._raw.read(READ_SIZE)
        if not self._in_headers:
            self._out += chunk
            self._eof = not chunk
            return
        if not chunk:
            if self._partial:
                self._line(self._partial)
                self._partial = b""
            self._flush_field()
            self._eof = True
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line + b"\n")
        if not self._in_headers:
            self._out += self._partial
            self._partial = b""
        elif len(self._partial) > MAX_FIELD:
            # A line this long is no header we could judge: it passes as it is.
            self._flush_field()
            self._out += self._partial
            self._partial = b""
            self._dropping = False

    def _line(self, line: bytes) -> None:
        if not self._in_headers:
            self._out += line
        elif line in (b"\r\n", b"\n"):
            self._flush_field()
            self._out += line
            self._in_headers = False
        elif line[:1] in (b" ", b"\t") and (self._field or self._dropping):
            if self._dropping:
                return
            self._field.append(line)
            self._field_size += len(line)
            if self._field_size > MAX_FIELD:
                self._flush_field()
        else:
            self._flush_field()
            self._dropping = False
            self._field = [line]
            self._field_size = len(line)

    def _flush_field(self) -> None:
        if not self._field:
            return
        whole = b"".join(self._field)
        self._field, self._field_size = [], 0
        name, colon, value = whole.partition(b":")
        if colon and name.strip().lower() == _FIELD and authserv_id(value) == self._our:
            self._dropping = True  # and so are its continuation lines still to come
            return
        self._out += whole


def remove_forged(content: bytes, our_id: str) -> bytes:
    """``content`` without the header fields ``Authentication-Results: <our_id>; ...``."""
    if _FIELD not in content.lower():
        return content  # the common case: nothing to look at
    with DeliveryFile(io.BytesIO(content), our_id) as f:
        return f.read()


def auth_header(mail: Any) -> bytes:
    """Our ``Authentication-Results`` field for a sink to prepend (``b""`` if not verified)."""
    results: AuthResults | None = getattr(mail, "auth_results", None)
    return b"" if results is None else results.header_bytes()


def delivery_file(mail: Any) -> Any:
    """``mail.open_file()``, without forged ``Authentication-Results`` when it was verified."""
    results: AuthResults | None = getattr(mail, "auth_results", None)
    raw = mail.open_file()
    return raw if results is None else DeliveryFile(raw, results.authserv_id)


def delivery_parts(mail: Any, content: bytes) -> tuple[bytes, bytes]:
    """For sinks working on bytes: ``(our header, content without forged fields)``."""
    results: AuthResults | None = getattr(mail, "auth_results", None)
    if results is None:
        return b"", content
    return results.header_bytes(), remove_forged(content, results.authserv_id)

"""Putting our ``Authentication-Results`` on a message, and taking forged ones off.

RFC 8601 §5: a receiver MUST remove (or rename) any ``Authentication-Results`` field already in
the message that claims its own authserv-id before adding its own, or a sender could forge
our verdict. We remove them: from the header section only, each field with its continuation
lines, every other byte of the message left as it was.

The sinks call :func:`delivery_parts` with one line each; it costs nothing when verification
is off, and imports no optional dependency.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._results import AuthResults

_FIELD: Final = b"authentication-results"
# The authserv-id: the first token of the value, after whitespace and comments (RFC 8601 §2.2).
_AUTHSERV_ID: Final = re.compile(rb"\A(?:\s|\([^()]*\))*([^\s;()]+)")


def authserv_id(value: bytes) -> str:
    """The authserv-id an ``Authentication-Results`` value claims, lower-cased ("" if none)."""
    m = _AUTHSERV_ID.match(value)
    return m.group(1).decode("ascii", "replace").lower() if m else ""


def remove_forged(content: bytes, our_id: str) -> bytes:
    """``content`` without the header fields ``Authentication-Results: <our_id>; ...``."""
    our = our_id.lower()
    if _FIELD not in content[:65536].lower():
        return content  # the common case: nothing to look at
    lines = content.splitlines(keepends=True)
    out: list[bytes] = []
    dropping = False
    for index, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):
            out.extend(lines[index:])  # end of the header section: the rest as it is
            return b"".join(out)
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = False
        if colon and name.strip().lower() == _FIELD:
            # Unfold the whole field to read its authserv-id.
            whole = [value]
            for follow in lines[index + 1 :]:
                if follow[:1] not in (b" ", b"\t"):
                    break
                whole.append(follow)
            dropping = authserv_id(b"".join(whole)) == our
        if not dropping:
            out.append(line)
    return b"".join(out)


def delivery_parts(mail: Any, content: bytes) -> tuple[bytes, bytes]:
    """What a sink writes after its trace headers: ``(our header, content to deliver)``.

    ``(b"", content)`` unchanged when the mail was not verified.
    """
    results: AuthResults | None = getattr(mail, "auth_results", None)
    if results is None:
        return b"", content
    return results.header_bytes(), remove_forged(content, results.authserv_id)

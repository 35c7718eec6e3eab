"""What tests ask of a received message: its headers, its text, its attachments.

These read the parsed :class:`email.message.EmailMessage` of a :class:`~trio_smtp.Mail`
(``policy.default``: headers decoded from RFC 2047, bodies from their transfer encoding).
"""

from __future__ import annotations

import email.message
from collections.abc import Iterator, Mapping

import attrs


class Headers(Mapping[str, str]):
    """A message's headers: names compared without regard to case, values decoded.

    ``headers["subject"]`` is the first ``Subject``; :meth:`get_all` gives every one
    (``Received`` usually comes many times). Iterating yields each name once, in order.
    """

    def __init__(self, message: email.message.EmailMessage) -> None:
        self._items = [(name, str(value)) for name, value in message.items()]

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self._items:
            if key.lower() == wanted:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for key, _ in self._items:
            if key.lower() not in seen:
                seen.add(key.lower())
                yield key

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._items})

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in order (``[]`` if there is none)."""
        wanted = name.lower()
        return [value for key, value in self._items if key.lower() == wanted]


@attrs.frozen(kw_only=True)
class Attachment:
    """One attached file.

    Attributes:
        filename: The file name the sender gave, or ``None``.
        content_type: The MIME type, such as ``"application/pdf"``.
        content: The decoded bytes.
    """

    filename: str | None
    content_type: str
    content: bytes


def text_of(message: email.message.EmailMessage) -> str:
    """The decoded text body: the ``text/plain`` part, else the ``text/html`` one, else ``""``.

    Line ends are Python's ``\\n`` (the wire's CRLF is the transport's, not the text's).
    """
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    content = body.get_content()
    text = content if isinstance(content, str) else content.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def attachments_of(message: email.message.EmailMessage) -> list[Attachment]:
    """The message's attachments, in order."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append(
            Attachment(
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                content=payload if isinstance(payload, bytes) else b"",
            )
        )
    return found

"""SMTP replies: the :class:`Reply` type, the reply-code table and enhanced status codes.

A reply is also an exception, so that a hook can ``raise Reply(550, "5.1.1 no such user")``
as naturally as it returns one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

#: RFC 5321 §4.2.2, RFC 4954 §6, RFC 3207 §4, RFC 7504, RFC 3030, RFC 6531: every reply code
#: this server uses, with its standard meaning.
REPLY_CODES: Final[dict[int, str]] = {
    211: "System status, or system help reply",
    214: "Help message",
    220: "Service ready",
    221: "Service closing transmission channel",
    235: "Authentication succeeded",
    250: "Requested mail action okay, completed",
    251: "User not local; will forward",
    252: "Cannot VRFY user, but will accept message and attempt delivery",
    334: "Server challenge (SASL continuation)",
    354: "Start mail input; end with <CRLF>.<CRLF>",
    421: "Service not available, closing transmission channel",
    432: "A password transition is needed",
    450: "Requested mail action not taken: mailbox unavailable",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    454: "Temporary authentication failure",
    455: "Server unable to accommodate parameters",
    500: "Syntax error, command unrecognized",
    501: "Syntax error in parameters or arguments",
    502: "Command not implemented",
    503: "Bad sequence of commands",
    504: "Command parameter not implemented",
    521: "Host does not accept mail",
    530: "Authentication required",
    534: "Authentication mechanism is too weak",
    535: "Authentication credentials invalid",
    538: "Encryption required for requested authentication mechanism",
    541: "Message rejected by recipient policy",
    550: "Requested action not taken: mailbox unavailable",
    551: "User not local",
    552: "Requested mail action aborted: exceeded storage allocation",
    553: "Requested action not taken: mailbox name not allowed",
    554: "Transaction failed",
    555: "MAIL FROM/RCPT TO parameters not recognized or not implemented",
    556: "Domain does not accept mail",
}

SYSTEM_STATUS: Final = 211
HELP_MESSAGE: Final = 214
SERVICE_READY: Final = 220
SERVICE_CLOSING: Final = 221
AUTH_SUCCEEDED: Final = 235
OK: Final = 250
USER_NOT_LOCAL_WILL_FORWARD: Final = 251
CANNOT_VRFY: Final = 252
AUTH_CONTINUE: Final = 334
START_MAIL_INPUT: Final = 354
SERVICE_UNAVAILABLE: Final = 421
PASSWORD_TRANSITION_NEEDED: Final = 432
MAILBOX_UNAVAILABLE_TEMPORARY: Final = 450
LOCAL_ERROR: Final = 451
INSUFFICIENT_STORAGE: Final = 452
TEMPORARY_AUTH_FAILURE: Final = 454
CANNOT_ACCOMMODATE_PARAMETERS: Final = 455
SYNTAX_ERROR: Final = 500
SYNTAX_ERROR_IN_PARAMETERS: Final = 501
NOT_IMPLEMENTED: Final = 502
BAD_SEQUENCE: Final = 503
PARAMETER_NOT_IMPLEMENTED: Final = 504
DOES_NOT_ACCEPT_MAIL: Final = 521
AUTH_REQUIRED: Final = 530
AUTH_MECHANISM_TOO_WEAK: Final = 534
AUTH_INVALID: Final = 535
ENCRYPTION_REQUIRED: Final = 538
REJECTED_BY_POLICY: Final = 541
MAILBOX_UNAVAILABLE: Final = 550
USER_NOT_LOCAL: Final = 551
EXCEEDED_STORAGE: Final = 552
MAILBOX_NAME_NOT_ALLOWED: Final = 553
TRANSACTION_FAILED: Final = 554
PARAMETERS_NOT_RECOGNIZED: Final = 555
DOMAIN_DOES_NOT_ACCEPT_MAIL: Final = 556

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, code and CRLF included.
MAX_REPLY_LINE: Final = 512
# What is left of a line for the text once "250-" and CRLF are counted.
_TEXT_BUDGET: Final = MAX_REPLY_LINE - 6

# RFC 3463 §2: class "." subject "." detail, class in {2, 4, 5}.
_ENHANCED_RE: Final = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class Reply(Exception):
    """An SMTP reply: a three-digit code and human-readable text.

    Hooks return or raise it to answer a command::

        raise Reply(550, "5.1.1 no such user here")

    The text may start with an RFC 3463 enhanced status code; when it does not, the
    engine adds the generic one for the code's class (``2.0.0``, ``4.0.0``, ``5.0.0``)
    on the wire. Text may span several lines (``"\\n"`` separates them); each becomes
    one line of a multi-line reply (RFC 5321 §4.2.1).

    Args:
        code: The reply code, 200 to 599.
        text: The reply text. CR, LF-less control characters are not allowed.

    Raises:
        ValueError: if the code is out of range or the text holds a control character.
    """

    __slots__ = ("_wire", "code", "text")

    code: int
    text: str

    def __init__(self, code: int, text: str = "") -> None:
        if isinstance(code, bool) or not isinstance(code, int) or not 200 <= code <= 599:
            raise ValueError(f"reply code must be an integer from 200 to 599, not {code!r}")
        if not isinstance(text, str):
            raise TypeError(f"reply text must be a str, not {text!r}")
        for ch in text:
            if (ch < " " and ch != "\n") or ch == "\x7f":
                raise ValueError(f"reply text must not contain control characters: {text!r}")
        super().__init__(code, text)
        self.code = code
        self.text = text
        self._wire: dict[bool, bytes] = {}

    def __repr__(self) -> str:
        return f"Reply({self.code!r}, {self.text!r})"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return (self.code, self.text) == (other.code, other.text)

    def __hash__(self) -> int:
        return hash((self.code, self.text))

    @property
    def is_positive(self) -> bool:
        """True for 2xx and 3xx replies."""
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        """True for 4xx replies."""
        return 400 <= self.code < 500

    @property
    def enhanced_code(self) -> str | None:
        """The RFC 3463 code at the start of the text, if any."""
        m = _ENHANCED_RE.match(self.text)
        return m.group(0).strip() if m else None

    def lines(self, *, enhanced: bool = True) -> list[str]:
        """The text lines as they go on the wire, without the code.

        A line longer than the wire allows (RFC 5321 §4.5.3.1.5: 512 octets with the
        code and CRLF) is split into several, each with the enhanced code again, so a
        hook's long text becomes a multi-line reply instead of an over-long line.

        Args:
            enhanced: Whether to give every line an enhanced status code (RFC 2034 §3
                wants one on each line of a multi-line reply).
        """
        raw = self.text.split("\n") if self.text else [""]
        if not enhanced or self.code // 100 == 3:
            if self.code == 334:
                # RFC 4954 §4: a SASL challenge is one line; the engine's own are short.
                return raw
            return [piece for line in raw for piece in _split_line("", line)]
        first = _ENHANCED_RE.match(raw[0])
        if first is not None:
            prefix = first.group(0).strip()
            if first.group(1) != str(self.code // 100):
                # RFC 3463 §2: the class must match the reply code's first digit.
                prefix = f"{self.code // 100}.{first.group(2)}.{first.group(3)}"
                raw[0] = raw[0][first.end() :]
            else:
                raw[0] = raw[0][first.end() :]
        else:
            prefix = f"{self.code // 100}.0.0"
        out = []
        for line in raw:
            m = _ENHANCED_RE.match(line)
            if m is not None:
                line = line[m.end() :]
            out.extend(_split_line(f"{prefix} ", line))
        return out

    def to_bytes(self, *, enhanced: bool = True) -> bytes:
        """Format the reply for the wire (RFC 5321 §4.2.1), CRLF-terminated.

        Args:
            enhanced: Whether to include RFC 3463 enhanced status codes.
        """
        wire = self._wire.get(enhanced)
        if wire is None:
            lines = self.lines(enhanced=enhanced)
            code = str(self.code)
            parts = [f"{code}-{line}\r\n" for line in lines[:-1]]
            last = f"{code} {lines[-1]}"
            # RFC 4954 §4: a continuation is "334" SP [base64], the space even when empty.
            parts.append((last if self.code == 334 else last.rstrip()) + "\r\n")
            wire = self._wire[enhanced] = "".join(parts).encode("utf-8")
        return wire


def _split_line(prefix: str, text: str) -> list[str]:
    """``prefix + text`` as one wire line, or as several within the 512-octet limit.

    Pieces are cut at spaces where possible, never inside a UTF-8 sequence, and each
    starts with ``prefix`` (the enhanced code).
    """
    line = f"{prefix}{text}".rstrip()
    if len(line) <= _TEXT_BUDGET // 4 or len(line.encode()) <= _TEXT_BUDGET:
        return [line]
    budget = _TEXT_BUDGET - len(prefix.encode())
    out = []
    rest = text
    while rest:
        # Longest prefix of ``rest`` that fits in ``budget`` octets.
        cut = len(rest.encode()[:budget].decode("utf-8", "ignore"))
        if cut < len(rest):
            space = rest.rfind(" ", 0, cut + 1)
            if space > cut // 2:
                cut = space
        out.append(f"{prefix}{rest[:cut]}".rstrip())
        rest = rest[cut:].lstrip(" ")
    return out or [prefix.rstrip()]


def join_replies(replies: Iterable[Reply], *, enhanced: bool = True) -> bytes:
    """Concatenate several replies' wire forms."""
    return b"".join(r.to_bytes(enhanced=enhanced) for r in replies)


#: The named reply codes, exported by :mod:`trio_smtp.engine`.
CODE_NAMES: Final = (
    "SYSTEM_STATUS",
    "HELP_MESSAGE",
    "SERVICE_READY",
    "SERVICE_CLOSING",
    "AUTH_SUCCEEDED",
    "OK",
    "USER_NOT_LOCAL_WILL_FORWARD",
    "CANNOT_VRFY",
    "AUTH_CONTINUE",
    "START_MAIL_INPUT",
    "SERVICE_UNAVAILABLE",
    "PASSWORD_TRANSITION_NEEDED",
    "MAILBOX_UNAVAILABLE_TEMPORARY",
    "LOCAL_ERROR",
    "INSUFFICIENT_STORAGE",
    "TEMPORARY_AUTH_FAILURE",
    "CANNOT_ACCOMMODATE_PARAMETERS",
    "SYNTAX_ERROR",
    "SYNTAX_ERROR_IN_PARAMETERS",
    "NOT_IMPLEMENTED",
    "BAD_SEQUENCE",
    "PARAMETER_NOT_IMPLEMENTED",
    "DOES_NOT_ACCEPT_MAIL",
    "AUTH_REQUIRED",
    "AUTH_MECHANISM_TOO_WEAK",
    "AUTH_INVALID",
    "ENCRYPTION_REQUIRED",
    "REJECTED_BY_POLICY",
    "MAILBOX_UNAVAILABLE",
    "USER_NOT_LOCAL",
    "EXCEEDED_STORAGE",
    "MAILBOX_NAME_NOT_ALLOWED",
    "TRANSACTION_FAILED",
    "PARAMETERS_NOT_RECOGNIZED",
    "DOMAIN_DOES_NOT_ACCEPT_MAIL",
)

"""SMTP replies: the :class:`Reply` type, the reply-code table, enhanced status codes, and
every fixed reply the engine sends on its own (one place, imported by every module).

A reply is also an exception, so that a hook can ``raise Reply(550, "5.1.1 no such user")``
as naturally as it returns one.
"""

from __future__ import annotations

import re
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

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, code and CRLF included.
MAX_REPLY_LINE: Final = 512
# What is left of a line for the text once "250-" and CRLF are counted.
_TEXT_BUDGET: Final = MAX_REPLY_LINE - 6

# RFC 3463 §2: class "." subject "." detail, class in {2, 4, 5}.
_ENHANCED_RE: Final = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
# What reply text may not hold: control characters other than LF (which splits lines).
_CONTROL_RE: Final = re.compile("[\x00-\x09\x0b-\x1f\x7f]")


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
        if _CONTROL_RE.search(text) is not None:
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


class ReplyTemplate:
    """Single-line replies that differ only in their last word, formatted without the
    work of a :class:`Reply` built from any text.

    ``ReplyTemplate(250, "2.0.0 OK queued as ")(mail_id)`` equals ``Reply(250, "2.0.0 OK
    queued as " + mail_id)`` and goes on the wire as the same bytes; the text before the
    word is checked and formatted once, here, and each reply only appends the word (a
    message's reply is built for every message: a fifth of the engine's share of it).

    Args:
        code: The reply code.
        text: The text before the word, with its enhanced status code.

    Raises:
        ValueError: when ``text`` is not a valid single-line reply text with an
            enhanced code.
    """

    __slots__ = ("_head", "code", "text")

    def __init__(self, code: int, text: str) -> None:
        sample = Reply(code, text + "x")
        wire = sample.to_bytes()
        if "\n" in text or _ENHANCED_RE.match(text) is None or not wire.endswith(b"x\r\n"):
            raise ValueError(f"not a single-line reply text with an enhanced code: {text!r}")
        self.code = code
        self.text = text
        self._head = wire[:-3]

    def __repr__(self) -> str:
        return f"ReplyTemplate({self.code!r}, {self.text!r})"

    def __call__(self, word: str) -> Reply:
        """The reply with ``word`` at the end (checked: printable ASCII, no space)."""
        if not (word.isascii() and word.isprintable()) or " " in word or len(word) > 64:
            return Reply(self.code, self.text + word)
        reply = Reply.__new__(Reply)
        text = self.text + word
        Exception.__init__(reply, self.code, text)
        reply.code = self.code
        reply.text = text
        reply._wire = {True: self._head + word.encode("ascii") + b"\r\n"}
        return reply


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


# ---------------------------------------------------------------- the engine's fixed replies
# Default answers to commands (what Engine.respond() sends when given no reply).

OK: Final = Reply(250, "2.0.0 OK")
SENDER_OK: Final = Reply(250, "2.1.0 sender OK")
RECIPIENT_OK: Final = Reply(250, "2.1.5 recipient OK")
START_DATA: Final = Reply(354, "end data with <CR><LF>.<CR><LF>")
MESSAGE_OK: Final = Reply(250, "2.0.0 OK message accepted")
AUTH_INVALID: Final = Reply(535, "5.7.8 authentication credentials invalid")
READY_TLS: Final = Reply(220, "2.0.0 ready to start TLS")
NO_EXPN: Final = Reply(502, "5.5.1 EXPN not available")
CANNOT_VRFY: Final = Reply(
    252, "2.0.0 cannot VRFY user, but will accept message and attempt delivery"
)

# Refusals of the engine's own.
NOT_IMPLEMENTED: Final = Reply(502, "5.5.1 command not implemented")
NOT_RECOGNIZED: Final = Reply(500, "5.5.2 command not recognized")
EMPTY_COMMAND: Final = Reply(500, "5.5.2 empty command")
NOT_UTF8: Final = Reply(500, "5.5.2 command is not valid UTF-8")
CONTROL_CHARACTERS: Final = Reply(501, "5.5.2 control characters in command")
NEED_TLS: Final = Reply(530, "5.7.0 must issue a STARTTLS command first")
NEED_AUTH: Final = Reply(530, "5.7.0 authentication required")
TOO_MANY_RCPTS: Final = Reply(452, "4.5.3 too many recipients")
#: RFC 5321 §4.5.3.1.4 (commands) and §4.5.3.1.6 (text lines in a body).
LINE_TOO_LONG: Final = Reply(500, "5.5.6 line too long")
AUTH_LINE_TOO_LONG: Final = Reply(500, "5.5.6 authentication line too long")
MSG_TOO_BIG: Final = Reply(552, "5.3.4 message size exceeds fixed maximum message size")
BARE_LINE_ENDING: Final = Reply(550, "5.6.0 bare LF or CR in message; use CRLF line endings")
BDAT_FAILED: Final = Reply(503, "5.5.1 previous BDAT failed; send RSET")
XCLIENT_DENIED: Final = Reply(550, "5.7.0 XCLIENT not permitted from this client")

# Replies that end the session (sent, then the engine closes).
TOO_MANY_ERRORS: Final = Reply(421, "4.7.0 too many errors, closing connection")
TOO_MANY_AUTH: Final = Reply(421, "4.7.0 too many failed authentication attempts")
BAD_PIPELINING: Final = Reply(421, "4.5.0 improper pipelining after refused DATA")
TLS_ON_PLAIN_PORT: Final = Reply(421, "4.7.0 TLS handshake on a plain SMTP port; use STARTTLS")
HTTP: Final = Reply(421, "4.7.0 this is an SMTP server, not an HTTP server")
BDAT_UNTRUSTED: Final = Reply(
    421, "4.5.4 BDAT needs exactly: BDAT chunk-size [LAST]; closing connection"
)

"""SASL PLAIN (RFC 4616) and LOGIN exchanges for AUTH (RFC 4954).

The engine only decodes: it turns the client's base64 lines into a login and a
password, and the caller decides whether they are good. :class:`Authentication` keeps,
for one session, the exchange in progress and the count of failed attempts.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from ._errors import RemoteProtocolError
from ._events import AuthCredentials
from ._receivebuffer import LINE_TOO_LONG
from ._replies import AUTH_INVALID, AUTH_LINE_TOO_LONG, Reply

MECHANISMS: Final = ("PLAIN", "LOGIN")
#: RFC 4954 §4: "*" cancels the exchange.
CANCELLED: Final = Reply(501, "5.7.0 authentication cancelled")
BAD_BASE64: Final = Reply(501, "5.5.2 cannot decode the response as base64")
BAD_PLAIN: Final = Reply(501, "5.5.2 malformed PLAIN response")
BAD_UTF8: Final = Reply(501, "5.5.2 credentials are not valid UTF-8")
#: The base64 of "Username:" and "Password:", as every LOGIN client expects.
LOGIN_USERNAME: Final = Reply(334, "VXNlcm5hbWU6")
LOGIN_PASSWORD: Final = Reply(334, "UGFzc3dvcmQ6")
PLAIN_CHALLENGE: Final = Reply(334, "")


def decode_response(line: str) -> bytes:
    """Decode one base64 client response (``=`` is the empty response)."""
    if line == "*":
        raise RemoteProtocolError(CANCELLED)
    if line == "=":
        return b""
    try:
        return base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RemoteProtocolError(BAD_BASE64) from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(BAD_UTF8) from None


def parse_plain(raw: bytes) -> tuple[str, str, str]:
    """Split a PLAIN message ``authzid NUL authcid NUL passwd`` (RFC 4616 §2).

    Returns:
        ``(authzid, login, password)``.
    """
    parts = raw.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise RemoteProtocolError(BAD_PLAIN)
    authzid, login, password = (_text(p) for p in parts)
    return authzid, login, password


class SaslExchange:
    """The state of one AUTH exchange.

    Args:
        mechanism: ``"PLAIN"`` or ``"LOGIN"``.
    """

    __slots__ = ("login", "mechanism", "password")

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.login: str | None = None
        self.password: str | None = None

    def __repr__(self) -> str:
        return f"<SaslExchange {self.mechanism} login={self.login!r}>"

    def start(self, initial: str | None) -> Reply | tuple[str, str, str]:
        """Begin with the optional initial response.

        Returns:
            The next challenge to send, or ``(authzid, login, password)`` when done.
        """
        if self.mechanism == "PLAIN":
            if initial is None:
                return PLAIN_CHALLENGE
            return parse_plain(decode_response(initial))
        if initial is None:
            return LOGIN_USERNAME
        self.login = _text(decode_response(initial))
        return LOGIN_PASSWORD

    def step(self, line: str) -> Reply | tuple[str, str, str]:
        """Take the client's next response line."""
        raw = decode_response(line)
        if self.mechanism == "PLAIN":
            return parse_plain(raw)
        if self.login is None:
            self.login = _text(raw)
            return LOGIN_PASSWORD
        return "", self.login, _text(raw)


class Authentication:
    """AUTH within one session: the exchange in progress and the failed attempts.

    Args:
        max_failures: Failed attempts (any answer but 235) that end the session.
    """

    __slots__ = ("_exchange", "_failures", "_max_failures")

    def __init__(self, *, max_failures: int) -> None:
        self._exchange: SaslExchange | None = None
        self._failures = 0
        self._max_failures = max_failures

    def started(
        self, exchange: SaslExchange, result: Reply | tuple[str, str, str]
    ) -> Reply | AuthCredentials:
        """AUTH was parsed: the challenge to send (a response line follows), or the
        credentials when the initial response completed the exchange."""
        if isinstance(result, Reply):
            self._exchange = exchange
            return result
        self._exchange = None
        authzid, login, password = result
        return AuthCredentials(
            verb="AUTH",
            argument=exchange.mechanism,
            mechanism=exchange.mechanism,
            login=login,
            password=password,
            authzid=authzid,
            default_reply=AUTH_INVALID,
        )

    def line(self, raw: bytes) -> Reply | AuthCredentials:
        """Take the client's response line (:data:`LINE_TOO_LONG` for an over-long one).

        Raises:
            RemoteProtocolError: the exchange failed (cancelled, bad base64 …) and is over.
        """
        exchange = self._exchange
        assert exchange is not None
        self._exchange = None
        if raw is LINE_TOO_LONG:
            raise RemoteProtocolError(AUTH_LINE_TOO_LONG)
        return self.started(exchange, exchange.step(raw.decode("ascii", "replace").strip()))

    def cancel(self) -> None:
        """The session ended in the middle of an exchange."""
        self._exchange = None

    def answered(self, code: int) -> bool:
        """Count the caller's answer to :class:`AuthCredentials`; True when it was one
        failure too many and the session must end."""
        if code == 235:
            self._failures = 0
            return False
        self._failures += 1
        return self._failures >= self._max_failures

"""``--auth-file``: users and passwords for AUTH PLAIN and LOGIN.

One ``user:secret`` per line; blank lines and lines starting with ``#`` are skipped.
The secret is a plain password, or a scheme-tagged hash:

* ``{PLAIN}password`` — a plain password (the same as no tag);
* ``{PBKDF2-SHA256}iterations$salt$hash`` — PBKDF2-HMAC-SHA256 with base64 salt and
  hash, as written by ``python -m trio_smtp.passwd``;
* ``{SCRYPT}n$r$p$salt$hash`` — scrypt with base64 salt and hash.

Comparison is constant-time (:func:`hmac.compare_digest`); unknown users cost the same
work as known ones, so timing does not tell which logins exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from typing import Final

DEFAULT_ITERATIONS: Final = 600_000
_SCHEMES: Final = ("PLAIN", "PBKDF2-SHA256", "SCRYPT")


class AuthFileError(ValueError):
    """The auth file cannot be read or has a bad line."""


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A ``{PBKDF2-SHA256}`` secret for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return (
        f"{{PBKDF2-SHA256}}{iterations}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


class _Secret:
    __slots__ = ("_check",)

    _check: Callable[[str], bool]

    def __init__(self, text: str, where: str) -> None:
        if text.startswith("{"):
            scheme, sep, rest = text[1:].partition("}")
            if not sep or scheme.upper() not in _SCHEMES:
                raise AuthFileError(f"{where}: unknown password scheme {text.split('}')[0]}}}")
            scheme = scheme.upper()
        else:
            scheme, rest = "PLAIN", text
        try:
            if scheme == "PLAIN":
                expected = rest.encode()
                self._check = lambda pw: hmac.compare_digest(pw.encode(), expected)
            elif scheme == "PBKDF2-SHA256":
                iters, salt, digest = rest.split("$")
                n, s, d = int(iters), base64.b64decode(salt), base64.b64decode(digest)
                self._check = lambda pw: hmac.compare_digest(
                    hashlib.pbkdf2_hmac("sha256", pw.encode(), s, n), d
                )
            else:
                cost, r, p, salt, digest = rest.split("$")
                nn, rr, pp = int(cost), int(r), int(p)
                s, d = base64.b64decode(salt), base64.b64decode(digest)
                self._check = lambda pw: hmac.compare_digest(
                    hashlib.scrypt(pw.encode(), salt=s, n=nn, r=rr, p=pp, dklen=len(d)), d
                )
        except (ValueError, binascii.Error):
            raise AuthFileError(f"{where}: malformed {scheme} secret") from None

    def __repr__(self) -> str:
        return "<secret>"

    def check(self, password: str) -> bool:
        return bool(self._check(password))


class AuthFile:
    """Checks logins against an auth file; call it as ``(mechanism, login, password)``.

    Args:
        path: The file.

    Raises:
        AuthFileError: naming the file (and line) that cannot be used.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AuthFileError(f"cannot read auth file {self.path!r}: {reason}") from None
        self._users: dict[str, _Secret] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, secret = line.partition(":")
            where = f"auth file {self.path!r} line {number}"
            if not sep or not user:
                raise AuthFileError(f"{where}: expected user:password")
            self._users[user] = _Secret(secret, where)
        # Unknown users are checked against this, so they cost the same as known ones.
        self._decoy = _Secret(hash_password(secrets.token_hex(8), iterations=1000), "decoy")

    def __repr__(self) -> str:
        return f"AuthFile({self.path!r}, users={len(self._users)})"

    def __len__(self) -> int:
        return len(self._users)

    def __call__(self, mechanism: str, login: str, password: str) -> bool:
        secret = self._users.get(login)
        if secret is None:
            self._decoy.check(password)
            return False
        return secret.check(password)


def load_auth_file(path: str | os.PathLike[str]) -> AuthFile:
    """Read an auth file (see the module docs for the format)."""
    return AuthFile(path)

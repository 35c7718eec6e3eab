"""``--auth-file``: users and passwords for AUTH PLAIN and LOGIN.

One ``user:secret`` per line; blank lines and lines starting with ``#`` are skipped.
The secret is a plain password, or a scheme-tagged hash:

* ``{PLAIN}password`` — a plain password (the same as no tag);
* ``{PBKDF2-SHA256}iterations$salt$hash`` — PBKDF2-HMAC-SHA256 with base64 salt and
  hash, as written by ``python -m trio_smtp.passwd``;
* ``{SCRYPT}n$r$p$salt$hash`` — scrypt with base64 salt and hash.

Whitespace: the user name may be surrounded by spaces (they are dropped), and a hash
may be followed by some; a plain password is taken exactly as written, and one that
begins or ends with whitespace (or is empty) is refused with the line number, because
that is far more often an editing slip than a real password. A password that really
begins or ends with a space is written hashed: ``python -m trio_smtp.passwd`` keeps
every character of it.

Theory of operation (timing): a failed attempt must cost the same whether or not the
login exists, and whichever scheme its entry uses. The file's entries fall into a few
*cost classes* (the scheme with its parameters: PBKDF2 rounds, scrypt ``n r p``,
lengths). Every check runs exactly one verification per class present in the file:
the real one for the class of the login's entry, and against a decoy (same class,
random salt and hash, so it never matches) for every other class, and for all of them
when the login is unknown. So the work done per attempt is identical for every login.
Plain passwords are compared as SHA-256 digests with :func:`hmac.compare_digest`, so
their length does not show either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from typing import Final

DEFAULT_ITERATIONS: Final = 600_000
_SCHEMES: Final = ("PLAIN", "PBKDF2-SHA256", "SCRYPT")
#: scrypt memory (128 * n * r bytes) above this is refused when the file is read.
_SCRYPT_MAX_MEMORY: Final = 1 << 30


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


def _b64(text: str) -> bytes:
    raw = base64.b64decode(text.strip(), validate=True)
    if not raw:
        raise ValueError("empty")
    return raw


class _Secret:
    """One verifier: its cost class, and a digest to compare with in constant time."""

    __slots__ = ("_digest", "_params", "_salt", "cost_class")

    _digest: bytes
    _salt: bytes
    _params: tuple[int, ...]
    #: The scheme and everything that sets the cost of one verification.
    cost_class: tuple[str | int, ...]

    def __init__(self, text: str, where: str) -> None:
        if text.startswith("{"):
            scheme, sep, rest = text[1:].partition("}")
            if not sep or scheme.upper() not in _SCHEMES:
                raise AuthFileError(f"{where}: unknown password scheme {text.split('}')[0]}}}")
            scheme = scheme.upper()
        else:
            scheme, rest = "PLAIN", text
        if scheme == "PLAIN":
            if not rest:
                raise AuthFileError(f"{where}: empty password")
            if rest != rest.strip():
                raise AuthFileError(
                    f"{where}: the plain password begins or ends with whitespace; remove it, "
                    "or write the password hashed (python -m trio_smtp.passwd keeps spaces)"
                )
            self._salt, self._params = b"", ()
            self._digest = hashlib.sha256(rest.encode()).digest()
            self.cost_class = ("PLAIN",)
            return
        try:
            if scheme == "PBKDF2-SHA256":
                iters, salt, digest = rest.split("$")
                self._params = (int(iters),)
                if self._params[0] < 1:
                    raise ValueError("rounds")
            else:
                n, r, p, salt, digest = rest.split("$")
                self._params = (int(n), int(r), int(p))
                nn, rr, pp = self._params
                if nn < 2 or nn & (nn - 1) or rr < 1 or pp < 1:
                    raise ValueError("cost")
                if 128 * nn * rr > _SCRYPT_MAX_MEMORY:
                    raise ValueError("memory")
            self._salt, self._digest = _b64(salt), _b64(digest)
        except (ValueError, binascii.Error):
            raise AuthFileError(f"{where}: malformed {scheme} secret") from None
        self.cost_class = (scheme, *self._params, len(self._salt), len(self._digest))

    @classmethod
    def decoy(cls, like: _Secret) -> _Secret:
        """A secret of the same cost class as ``like`` that matches no password."""
        out = cls.__new__(cls)
        out.cost_class = like.cost_class
        out._params = like._params
        out._salt = secrets.token_bytes(len(like._salt))
        out._digest = secrets.token_bytes(len(like._digest))
        return out

    def __repr__(self) -> str:
        return "<secret>"

    def _derive(self, password: bytes) -> bytes:
        scheme = self.cost_class[0]
        if scheme == "PLAIN":
            return hashlib.sha256(password).digest()
        if scheme == "PBKDF2-SHA256":
            return hashlib.pbkdf2_hmac("sha256", password, self._salt, self._params[0])
        n, r, p = self._params
        return hashlib.scrypt(
            password,
            salt=self._salt,
            n=n,
            r=r,
            p=p,
            dklen=len(self._digest),
            maxmem=_SCRYPT_MAX_MEMORY + (1 << 20),
        )

    def check(self, password: str) -> bool:
        return hmac.compare_digest(self._derive(password.encode()), self._digest)


class AuthFile:
    """Checks logins against an auth file; call it as ``(mechanism, login, password)``.

    A call runs one verification per cost class in the file (see the module docs), so
    it takes as long for an unknown login as for a known one. It blocks: the server
    runs it in a worker thread.

    Args:
        path: The file.

    Raises:
        AuthFileError: naming the file (and line) that cannot be used.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AuthFileError(f"cannot read auth file {self.path!r}: {reason}") from None
        self._users: dict[str, _Secret] = {}
        # Only LF (and a CR before it) end a line: str.splitlines() would also split at
        # form feeds and Unicode separators, which may be part of a password.
        for number, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, secret = line.partition(":")
            user = user.strip()
            where = f"auth file {self.path!r} line {number}"
            if not sep or not user:
                raise AuthFileError(f"{where}: expected user:password")
            if not secret.startswith("{") or secret[1:].upper().startswith("PLAIN}"):
                self._users[user] = _Secret(secret, where)
            else:
                self._users[user] = _Secret(secret.rstrip(), where)
        decoys: dict[tuple[str | int, ...], _Secret] = {}
        for secret_ in self._users.values():
            decoys.setdefault(secret_.cost_class, _Secret.decoy(secret_))
        if not decoys:
            # An empty file still costs a hash per attempt.
            plain = _Secret(secrets.token_hex(8), "decoy")
            decoys[plain.cost_class] = _Secret.decoy(plain)
        self._decoys = decoys

    def __repr__(self) -> str:
        return f"AuthFile({self.path!r}, users={len(self._users)})"

    def __len__(self) -> int:
        return len(self._users)

    def __call__(self, mechanism: str, login: str, password: str) -> bool:
        secret = self._users.get(login)
        ok = False
        for cost_class, decoy in self._decoys.items():
            if secret is not None and secret.cost_class == cost_class:
                ok = secret.check(password)
            else:
                decoy.check(password)
        return ok


def load_auth_file(path: str | os.PathLike[str]) -> AuthFile:
    """Read an auth file (see the module docs for the format)."""
    return AuthFile(path)

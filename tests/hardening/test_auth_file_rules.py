"""The auth file: uniform cost per attempt, no empty secrets, whitespace taken exactly.

Attacks:

* timing: a wrong password for an unknown login must cost the same work as for a known
  one, whatever scheme the known login's entry uses. Wall time is never measured here
  (the suite must pass on a loaded machine): the verifier's hash calls are counted
  instead, which is what the time follows;
* ``carol:`` (an empty secret) let carol in with an empty password;
* ``alice:pw `` silently became ``pw``, while ``python -m trio_smtp.passwd`` keeps
  trailing spaces: the same password meant two things.
"""

from __future__ import annotations

import base64
import hashlib
import smtplib
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from _harden_support import cli_env, run_cli, serving, smtp

from trio_smtp import Server
from trio_smtp._auth_file import AuthFile, AuthFileError, hash_password


def _scrypt_secret(password: str, n: int = 1024) -> str:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    return (
        f"{{SCRYPT}}{n}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        "alice:plain-pw\n"
        f"bob:{hash_password('bob-pw', iterations=2000)}\n"
        f"carol:{_scrypt_secret('carol-pw')}\n"
        f"dave:{hash_password('dave-pw', iterations=2000)}\n",
        encoding="utf-8",
    )
    return path


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[Any, ...]]:
    """Count every hash the verifier computes, with the parameters that set its cost."""
    calls: Counter[tuple[Any, ...]] = Counter()

    def wrap(name: str, real: Callable[..., Any], key: Callable[..., tuple[Any, ...]]) -> None:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[(name, *key(*args, **kwargs))] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(hashlib, name, counted)

    wrap("pbkdf2_hmac", hashlib.pbkdf2_hmac, lambda _h, _p, salt, n, *a, **k: (n, len(salt)))
    wrap("scrypt", hashlib.scrypt, lambda _p, **k: (k["n"], k["r"], k["p"], len(k["salt"])))
    wrap("sha256", hashlib.sha256, lambda *a, **k: ())
    return calls


@pytest.mark.parametrize("login", ["alice", "bob", "carol", "dave", "nobody", ""])
def test_a_failed_attempt_costs_the_same_work_for_every_login(
    mixed_file: Path, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    users = AuthFile(mixed_file)
    reference = _counting(monkeypatch)
    assert users("PLAIN", "nobody-at-all", "wrong") is False
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    assert users("PLAIN", login, "wrong") is False
    # The same hash functions, with the same costs, the same number of times.
    assert calls == reference
    assert sum(n for key, n in calls.items() if key[0] == "pbkdf2_hmac") == 1
    assert sum(n for key, n in calls.items() if key[0] == "scrypt") == 1


def test_good_passwords_still_work_with_every_scheme(mixed_file: Path) -> None:
    users = AuthFile(mixed_file)
    for login in ("alice", "bob", "carol", "dave"):
        password = "plain-pw" if login == "alice" else f"{login}-pw"
        assert users("PLAIN", login, password) is True
        assert users("PLAIN", login, password + "x") is False
    assert users("PLAIN", "bob", "dave-pw") is False  # another user's password


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("alice:pw\n\ncarol:\n", 3, "empty password"),
        ("carol:{PLAIN}\n", 1, "empty password"),
        ("alice:pw \n", 1, "whitespace"),
        ("alice: pw\n", 1, "whitespace"),
        ("alice:\tpw\n", 1, "whitespace"),
        ("alice:{PLAIN}pw \n", 1, "whitespace"),
        ("alice:{SCRYPT}3$8$1$AAAA$AAAA\n", 1, "malformed SCRYPT"),
    ],
)
def test_bad_secrets_are_refused_with_the_line_number(
    tmp_path: Path, content: str, line: int, reason: str
) -> None:
    path = tmp_path / "users"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AuthFileError, match=rf"line {line}: .*{reason}"):
        AuthFile(path)
    with pytest.raises(ValueError, match=rf"line {line}"):
        Server({"config": {"port": 0, "auth_file": str(path)}})


def test_cli_exits_2_for_an_empty_secret_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# users\nalice:pw\ncarol:\n", encoding="utf-8")
    done = run_cli("--port", "0", "--auth-file", str(path), "--auth-insecure")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "line 3" in lines[0]
    assert "empty password" in lines[0]


def _login(user: str, password: str) -> Callable[[smtplib.SMTP], int]:
    def use(client: smtplib.SMTP) -> int:
        client.ehlo()
        try:
            return client.login(user, password)[0]
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code

    return use


async def test_a_passwd_hash_keeps_trailing_spaces_over_a_real_socket(tmp_path: Path) -> None:
    """The password with its spaces logs in; the stripped one does not."""
    made = await trio.run_process(
        [sys.executable, "-m", "trio_smtp.passwd", "--iterations", "1000", "alice"],
        stdin=b"pw with space \n",
        capture_stdout=True,
        env=cli_env(),
    )
    path = tmp_path / "users"
    path.write_bytes(made.stdout)
    config = {"auth_file": str(path), "auth_insecure": True}
    async with serving(config) as live:
        assert await smtp(live.port, _login("alice", "pw with space ")) == 235
        assert await smtp(live.port, _login("alice", "pw with space")) == 535


async def test_plain_secret_is_taken_exactly(tmp_path: Path) -> None:
    path = tmp_path / "users"
    # Inner spaces and a colon belong to the password; only the line ending goes.
    path.write_bytes(b"alice:a b:c\r\n")
    config = {"auth_file": str(path), "auth_insecure": True}
    async with serving(config) as live:
        assert await smtp(live.port, _login("alice", "a b:c")) == 235
        assert await smtp(live.port, _login("alice", "a b:c\r")) == 535


def test_form_feed_in_a_password_does_not_split_the_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:a\x0cb\n", encoding="utf-8")
    assert AuthFile(path)("PLAIN", "alice", "a\x0cb") is True
    assert len(AuthFile(path)) == 1

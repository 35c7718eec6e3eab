"""``python -m trio_smtp.passwd``: secrets that the auth file accepts."""

from __future__ import annotations

import getpass
import io
import subprocess
import sys
from pathlib import Path

import pytest

from trio_smtp import passwd
from trio_smtp._auth_file import AuthFile

FAST = "1000"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _check(tmp_path: Path, line: str, user: str, password: str) -> bool:
    path = tmp_path / "users"
    path.write_text(line + "\n", encoding="utf-8")
    return AuthFile(path)("PLAIN", user, password)


def test_secret_from_stdin_is_accepted_by_the_auth_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pw \nignored second line\n"))
    assert passwd.main(["--iterations", FAST]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("{PBKDF2-SHA256}1000$")
    assert "s3cret" not in out + err
    # Trailing spaces belong to the password; only the line ending is dropped.
    assert _check(tmp_path, f"alice:{secret}", "alice", "s3cret pw ")
    assert not _check(tmp_path, f"alice:{secret}", "alice", "s3cret pw")
    assert not _check(tmp_path, f"alice:{secret}", "alice", "ignored second line")


def test_user_argument_prints_a_whole_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\r\n"))
    assert passwd.main(["--iterations", FAST, "bob@example.com"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("bob@example.com:{PBKDF2-SHA256}1000$")
    assert _check(tmp_path, line, "bob@example.com", "pw")


def test_each_run_uses_a_new_salt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = set()
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.StringIO("same\n"))
        assert passwd.main(["--iterations", FAST]) == 0
        secrets.add(capsys.readouterr().out)
    assert len(secrets) == 2


def test_default_iterations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    monkeypatch.setattr(
        passwd,
        "hash_password",
        lambda password, *, iterations: f"{{PBKDF2-SHA256}}{iterations}$x$y",
    )
    assert passwd.main([]) == 0
    assert capsys.readouterr().out == f"{{PBKDF2-SHA256}}{passwd.DEFAULT_ITERATIONS}$x$y\n"


def test_terminal_prompts_twice_without_echo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return "typed"

    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert passwd.main(["--iterations", FAST, "carol"]) == 0
    assert prompts == ["Password: ", "Again: "]
    assert _check(tmp_path, capsys.readouterr().out.strip(), "carol", "typed")


def test_terminal_mismatch_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert passwd.main(["--iterations", FAST]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "the passwords do not match" in err
    assert "one" not in err
    assert "two" not in err


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_empty_password_is_refused(
    stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert passwd.main(["--iterations", FAST]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "empty password" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--iterations", "999"], "must be at least 1000, not 999"),
        (["--iterations", "0"], "must be at least 1000, not 0"),
        (["--iterations", "lots"], "not a whole number: 'lots'"),
        (["a:b"], "not a usable auth-file user name: 'a:b'"),
        (["#root"], "not a usable auth-file user name: '#root'"),
        ([" pad"], "not a usable auth-file user name: ' pad'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    with pytest.raises(SystemExit) as exc_info:
        passwd.main(argv)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_with_piped_password(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_smtp.passwd", "--iterations", FAST, "dave"],
        input="hunter2\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "hunter2" not in done.stdout
    assert _check(tmp_path, done.stdout.strip(), "dave", "hunter2")

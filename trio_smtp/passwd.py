"""Hash a password for ``--auth-file``.

Run ``python -m trio_smtp.passwd [--iterations N] [USER]``. At a terminal it asks for
the password twice, without echo; otherwise it reads the first line of standard
input, so that ``printf '%s\\n' "$PW" | python -m trio_smtp.passwd alice`` works in
scripts. It prints a ``{PBKDF2-SHA256}iterations$salt$hash`` secret, or with ``USER``
a whole ``USER:secret`` line to append to the auth file::

    $ python -m trio_smtp.passwd alice >> users.txt
    Password:
    Again:

The password is never taken from the command line, where other local users could
read it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Final, TextIO

from ._auth_file import DEFAULT_ITERATIONS, hash_password

__all__ = ["DEFAULT_ITERATIONS", "MIN_ITERATIONS", "PasswordError", "main", "read_password"]

#: Fewer PBKDF2 rounds than this are refused: they would make the hash cheap to crack.
MIN_ITERATIONS: Final = 1000


class PasswordError(Exception):
    """No usable password was given; the message is one line."""


def read_password(stdin: TextIO | None = None) -> str:
    """Get the password: prompt twice at a terminal, else read one line.

    Args:
        stdin: Where to read; ``sys.stdin`` by default.

    Returns:
        The password, without its line ending.

    Raises:
        PasswordError: The password is empty, or the two typed at a terminal differ.
    """
    stdin = stdin if stdin is not None else sys.stdin
    if stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise PasswordError("the passwords do not match")
    else:
        line = stdin.readline()
        # Only the line ending goes: spaces may be part of a password.
        password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise PasswordError("empty password")
    return password


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < MIN_ITERATIONS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_ITERATIONS}, not {value!r}")
    return value


def _user(text: str) -> str:
    # The auth file splits each line at its first colon.
    if not text or ":" in text or text != text.strip() or text.startswith("#"):
        raise argparse.ArgumentTypeError(f"not a usable auth-file user name: {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 for a bad password, 2 for usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_smtp.passwd",
        description=(
            "Print a {PBKDF2-SHA256} secret for an auth file. The password is asked for "
            "at a terminal, or read from the first line of standard input."
        ),
    )
    parser.add_argument(
        "--iterations",
        type=_iterations,
        default=DEFAULT_ITERATIONS,
        help="PBKDF2 rounds (default: %(default)s)",
    )
    parser.add_argument(
        "user", nargs="?", type=_user, help="print a whole 'user:secret' auth-file line"
    )
    args = parser.parse_args(argv)
    try:
        password = read_password()
    except PasswordError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 1
    secret = hash_password(password, iterations=args.iterations)
    print(f"{args.user}:{secret}" if args.user is not None else secret)
    return 0


if __name__ == "__main__":
    sys.exit(main())

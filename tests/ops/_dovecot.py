"""An unprivileged Dovecot test instance: LMTP on a TCP port and on a Unix socket.

Shared by the Dovecot tests of tests/ops; each says only who its users are (the passdb,
userdb and plugin part of the configuration).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _proc import TIMEOUT
from conftest import require_tool

#: What Dovecot says when a listener's port is taken.
_ADDRESS_IN_USE = "Address already in use"
#: Free ports tried before giving up: another program may take one between our probe
#: and Dovecot's bind.
_PORT_TRIES = 3


class Dovecot:
    """A running instance: its configuration, LMTP port and socket, and mail root."""

    def __init__(self, root: Path, lmtp_port: int) -> None:
        self.root = root
        self.conf = root / "dovecot.conf"
        self.port = lmtp_port
        self.socket = root / "run" / "lmtp"
        self.mail = root / "mail"

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm`` against this instance; its stdout (it must succeed)."""
        result = subprocess.run(
            [require_tool("doveadm"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, name: str, port: int, accounts: str) -> str:
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", str(os.getuid()))
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = trio-smtp-{name}-{os.getpid()}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {user}
default_internal_group = {"root" if os.geteuid() == 0 else user}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%n
{accounts}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""


@contextmanager
def running_dovecot(name: str, accounts: Callable[[Path, int, int], str]) -> Iterator[Dovecot]:
    """Start an instance, yield it, stop it and remove its files.

    Args:
        name: Names the instance and its directory (two may run at once).
        accounts: Given the instance's root and the uid and gid that mail is written as
            (as root, nobody's; otherwise our own), the passdb, userdb and plugin part of
            the configuration.
    """
    binary = require_tool("dovecot")
    require_tool("doveadm")
    # Not under pytest's 0700 tmp_path: Dovecot delivers as an unprivileged user.
    base = Path(tempfile.mkdtemp(prefix=f"trio-smtp-{name}-"))
    try:
        base.chmod(0o755)
        root = base / "dovecot"
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir(parents=True)
        for sub in ("mail", "home"):
            os.chmod(root / sub, 0o777)
        uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        text = accounts(root, uid, gid)
        output = root / "start.log"
        instance = Dovecot(root, 0)
        try:
            for _ in range(_PORT_TRIES):
                instance = Dovecot(root, _free_port())
                instance.conf.write_text(_config(root, name, instance.port, text))
                # The master binds every listener before it goes to the background: once
                # this returns 0, both LMTP listeners accept connections. Its output goes
                # to a file: the background master keeps what it inherits open (a pipe
                # would never end).
                with output.open("w") as out:
                    started = subprocess.run(
                        [binary, "-c", str(instance.conf)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=TIMEOUT,
                        check=False,
                    )
                if started.returncode == 0 or _ADDRESS_IN_USE not in output.read_text():
                    break
            assert started.returncode == 0, output.read_text()
            deadline = time.monotonic() + TIMEOUT
            while not instance.socket.exists():
                assert time.monotonic() < deadline, "Dovecot made no LMTP socket"
                time.sleep(0.05)
            yield instance
        finally:
            # Also after a start that failed or hung: stopping no instance is harmless.
            if instance.conf.exists():
                subprocess.run(
                    [binary, "-c", str(instance.conf), "stop"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=TIMEOUT,
                    check=False,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)

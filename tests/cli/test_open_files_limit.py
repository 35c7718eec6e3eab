"""The command line makes room for --max-connections under the open files limit."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
from pathlib import Path


def _serve(max_connections: int, soft: int, hard: int) -> tuple[int, bytes]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_smtp",
            "--port",
            "0",
            "--hostname",
            "mx.test",
            "--max-connections",
            str(max_connections),
        ],
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    assert proc.stderr is not None
    seen = b""
    try:
        while b"Server start on ip" not in seen:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        m = re.search(r"Max open files\s+(\d+)", limits)
        assert m, limits
        return int(m.group(1)), seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_soft_limit_is_raised_to_fit_max_connections() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3200:
        hard_for_test = hard
    else:
        hard_for_test = 3200
    soft, log = _serve(3000, 256, hard_for_test)
    assert soft == min(3128, hard_for_test)
    assert b"open files limit" not in log or hard_for_test < 3128


def test_a_hard_limit_too_low_is_reported() -> None:
    soft, log = _serve(3000, 256, 600)
    assert soft == 600
    assert b"[WARN] - open files limit is 600: fewer than --max-connections 3000" in log

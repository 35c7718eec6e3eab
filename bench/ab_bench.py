"""Server CPU per message of trio_smtp from several checkouts, interleaved (A/B).

Usage::

    python bench/ab_bench.py [--sessions 20] [--messages 10000] [--rounds 5] [--new] DIR DIR...

Each DIR is a checkout (``git worktree add`` or ``git archive REV | tar -x -C DIR``); its
``bench/trio_server.py`` runs with ``PYTHONPATH=DIR``. After a warm-up, every round sends
``--messages`` 1 KiB messages to each server with Postfix's ``smtp-source`` (``-d``:
connections kept, unless ``--new``), rotating which goes first, and reads the server's
user and system CPU time from ``/proc/PID/stat`` around each run. It prints the medians:
msg/s and CPU µs per message. On a shared machine the CPU per message is the steadier
figure; compare checkouts within one invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def _load(args: argparse.Namespace, port: int, messages: int) -> float:
    command = ["smtp-source", "-l", str(args.size), "-m", str(messages)]
    command += ["-s", str(args.sessions), "-f", "a@x", "-t", "b@x"]
    if not args.new:
        command.append("-d")
    start = time.monotonic()
    subprocess.run([*command, f"127.0.0.1:{port}"], check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--new", action="store_true", help="a new connection per message")
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    servers: list[tuple[Path, subprocess.Popen[bytes], int]] = []
    results: dict[Path, list[tuple[float, float, float]]] = {d: [] for d in args.dirs}
    try:
        for directory in args.dirs:
            process = subprocess.Popen(
                [sys.executable, str(directory / "bench" / "trio_server.py"), "--port", "0"],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(directory)},
                cwd=directory,
            )
            assert process.stdout is not None
            servers.append((directory, process, int(process.stdout.readline().split()[1])))
        for _, _, port in servers:
            _load(args, port, max(args.messages // 10, 2 * args.sessions))
        for round_ in range(args.rounds):
            shift = round_ % len(servers)
            for directory, process, port in servers[shift:] + servers[:shift]:
                user0, sys0 = _cpu(process.pid)
                elapsed = _load(args, port, args.messages)
                user1, sys1 = _cpu(process.pid)
                per = 1e6 / args.messages
                results[directory].append(
                    (args.messages / elapsed, (user1 - user0) * per, (sys1 - sys0) * per)
                )
    finally:
        for _, process, _ in servers:
            process.terminate()
            process.wait()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"load average {load}; {args.sessions} sessions, {args.messages} messages x "
        f"{args.rounds} rounds, {'new' if args.new else 'kept'} connections"
    )
    for directory, runs in results.items():
        total = [user + system for _, user, system in runs]
        print(
            f"{directory!s:40} {statistics.median(r[0] for r in runs):7.0f} msg/s  "
            f"CPU {statistics.median(total):6.1f} µs/msg (min {min(total):6.1f}; user "
            f"{statistics.median(r[1] for r in runs):6.1f}, system "
            f"{statistics.median(r[2] for r in runs):5.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

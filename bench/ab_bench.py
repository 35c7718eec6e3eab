"""Server CPU per message of trio_smtp from several checkouts, interleaved (A/B).

Usage::

    python bench/ab_bench.py [--sessions 20] [--messages 10000] [--rounds 5] [--new] DIR DIR...
    python bench/ab_bench.py --callgrind [--sessions 1] [--messages 1000] [--keep OUT] DIR DIR...

Each DIR is a checkout (``git worktree add`` or ``git archive REV | tar -x -C DIR``); its
``bench/trio_server.py`` runs with ``PYTHONPATH=DIR``. After a warm-up, every round sends
``--messages`` 1 KiB messages to each server with Postfix's ``smtp-source`` (``-d``:
connections kept, unless ``--new``), rotating which goes first, and reads the server's
user and system CPU time from ``/proc/PID/stat`` around each run. It prints the medians:
msg/s and CPU µs per message. On a shared machine the CPU per message is the steadier
figure; compare checkouts within one invocation only.

``--callgrind`` counts instead of timing: each server runs under valgrind's callgrind
(``valgrind`` and ``callgrind_control`` on ``PATH``; ~50x slower, a minute or more to
start), its counters are zeroed after the warm-up and dumped after one run of
``--messages``, and the report is the server's instructions per message. The count does
not move with what else runs on the machine, so a change of a few percent shows on a
shared machine where CPU time cannot show it; it weighs every instruction alike (a
syscall's kernel side is not counted), so confirm a gain with the timed bench when the
machine is quiet. Use ``--sessions 1``: with one client the server takes the same path
for every message whatever the timing, and with the hash seed fixed two runs of one
checkout agree within ~0.3%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def _instructions(args: argparse.Namespace, directory: Path) -> int:
    """Instructions the server in ``directory`` runs for ``--messages`` (callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/callgrind.%p",
                sys.executable,
                str(directory / "bench" / "trio_server.py"),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # A fixed hash seed: dict and set layouts, and so the count, repeat.
            env={**os.environ, "PYTHONPATH": str(directory), "PYTHONHASHSEED": "0"},
            cwd=directory,
        )
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline().split()[1])
            _load(args, port, max(args.messages // 5, 2 * args.sessions))
            pid = str(process.pid)
            subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
            _load(args, port, args.messages)
            subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        finally:
            process.terminate()
            process.wait()
        dump = Path(tmp) / f"callgrind.{process.pid}.1"
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, args.keep / f"callgrind.{directory.name}.{process.pid}")
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction count in {dump}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--new", action="store_true", help="a new connection per message")
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions per message (valgrind)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="with --callgrind: copy each server's dump into DIR (for callgrind_annotate)",
    )
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.callgrind:
        for directory in args.dirs:
            per = _instructions(args, directory) / args.messages
            print(f"{directory!s:40} {per:10,.0f} instructions/msg", flush=True)
        return 0
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

"""``--workers 2`` against ``--workers 1``: messages/s through the command line server.

Usage::

    python bench/workers_bench.py [--messages 20000] [--sessions 100] [--runs 3]

Each run starts ``python -m trio_smtp --workers N --port 0 --log-level warn`` (the print
sink, with its per-message line below the log level, is a discard sink), waits for every
worker's start line, and sends ``--messages`` 1 KiB messages over ``--sessions``
persistent connections with Postfix's ``smtp-source -d`` (or the Python load generator
when smtp-source is missing). It prints the median messages/s for 1 and 2 workers and
their ratio. The load generator shares the machine's cores with the workers, so on a
2-core machine the ratio is bounded well below 2. The kernel spreads connections over the
workers by a hash of their addresses, so it takes many sessions (100 by default) for both
workers to get an even share: with 40, one worker was often left idle near the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = re.compile(rb"Server start on ip: \S+ port: (\d+)")


def start(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trio_smtp",
            "--workers",
            str(workers),
            "--port",
            "0",
            "--hostname",
            "bench.test",
            "--log-level",
            "log",
            # All the load comes from 127.0.0.1: the per-address limit must not cap it.
            "--max-connections-per-ip",
            "1000",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen, port = 0, 0
    deadline = time.monotonic() + 30
    while seen < workers and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = START.search(line)
        if m:
            seen += 1
            port = int(m.group(1))
    if seen < workers:
        proc.kill()
        raise SystemExit(f"server with {workers} workers did not start")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def load(port: int, messages: int, sessions: int) -> float:
    """Seconds to deliver ``messages`` over ``sessions`` persistent connections."""
    source = shutil.which("smtp-source")
    started = time.perf_counter()
    if source:
        subprocess.run(
            [
                source,
                "-d",
                "-c",
                "-l",
                "1024",
                "-m",
                str(messages),
                "-s",
                str(sessions),
                "-f",
                "a@bench.test",
                "-t",
                "b@bench.test",
                f"127.0.0.1:{port}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started
    sys.path.insert(0, str(ROOT / "bench"))
    from loadgen import LoadSpec, run_load

    result = run_load(
        LoadSpec(
            host="127.0.0.1",
            port=port,
            messages=messages,
            sessions=sessions,
            size=1024,
            mode="persistent",
        )
    )
    return float(result.elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    generator = "smtp-source -d" if shutil.which("smtp-source") else "bench/loadgen.py"
    print(
        f"{os.cpu_count()} cores, {args.messages} x 1 KiB over {args.sessions} persistent "
        f"sessions, {generator}, median of {args.runs}"
    )
    rates: dict[int, float] = {}
    for workers in (1, 2):
        runs = []
        for _ in range(args.runs):
            proc, port = start(workers)
            try:
                load(port, 500, 10)  # warm up
                runs.append(args.messages / load(port, args.messages, args.sessions))
            finally:
                stop(proc)
        rates[workers] = statistics.median(runs)
        print(
            f"--workers {workers}: {rates[workers]:,.0f} msg/s  "
            f"[runs: {', '.join(f'{r:,.0f}' for r in runs)}]"
        )
    print(f"ratio workers 2 / workers 1: {rates[2] / rates[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

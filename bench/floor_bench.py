"""The floor: what the thinnest SMTP responder costs per message, beside trio_smtp and smtp-server.

Usage::

    python bench/floor_bench.py [--quick] [--reps N] [--scenario NAME ...] [--callgrind]

Issue 15 asks trio_smtp for at most 1.5x smtp-server's server CPU per message on kept-alive
connections. Whether a Trio server can get there at all depends on what the least a Trio
server can do already costs. This bench runs, with the same ``smtp-source`` loads, warm-up,
interleaved rotating runs, disturbed-run rule, medians and ``/proc`` CPU accounting as
``server_bench.py`` (its :func:`run_scenario` does the measuring), these servers:

- ``trio-floor`` (``floor/trio_floor.py``): a nursery task per connection, a stdlib
  non-blocking socket, ``trio.lowlevel.wait_readable`` only when ``recv()`` would block,
  replies by a direct ``send()``: the shortcuts trio_smtp's transport takes, and nothing else;
- ``trio-stream-floor`` (``floor/trio_stream_floor.py``): the same in idiomatic Trio,
  ``serve_tcp`` with ``SocketStream.receive_some``/``send_all``;
- ``asyncio-floor`` (``floor/asyncio_floor.py``): an :class:`asyncio.Protocol`, what the
  stdlib event loop alone costs;
- ``node-floor`` (``floor/node_floor.js``): Node's ``net`` module, so that what smtp-server
  itself adds shows;
- ``trio_smtp`` (``trio_server.py``) and ``smtp-server`` (``node/smtp_server.js``), as
  ``server_bench.py`` runs them.

The floor servers answer 220, 250 to every command, 354 to DATA, 250 after CRLF.CRLF and
221 to QUIT, with no parsing and no checks (``floor/_answers.py``): they are floors, not
servers. Loads: ``server_bench.py``'s ``small-persistent`` (``smtp-source -d -s 20``, 1 KiB)
and ``small-persistent-1`` (``-d -s 1``). The table gives, per server and load, the medians
of msg/s and of server CPU µs per message, both as ratios to smtp-server, and the CPU per
message as a share of trio_smtp's. Raw runs go to ``bench/results/floor.json``.

``--callgrind`` adds instructions per message (valgrind's callgrind, user space, one session,
hash seed fixed: a count that does not move with the machine's load) for the Python servers,
with the trio-floor's count split by ``callgrind_annotate`` into the event loop's system-call
wrappers (epoll, recv, send) and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import server_bench
from _servers import BENCH_DIR, SERVER_SCRIPTS
from server_bench import SCENARIOS, ScenarioResult, load_average, run_scenario

FLOOR_DIR: Final = BENCH_DIR / "floor"
FLOOR_SCRIPTS: Final = {
    "trio-floor": FLOOR_DIR / "trio_floor.py",
    "trio-stream-floor": FLOOR_DIR / "trio_stream_floor.py",
    "asyncio-floor": FLOOR_DIR / "asyncio_floor.py",
    "node-floor": FLOOR_DIR / "node_floor.js",
}
# _servers.start_server looks a server up by kind in SERVER_SCRIPTS; the floors are kinds of
# this bench only, so they are added here rather than offered to server_bench.py.
SERVER_SCRIPTS.update(FLOOR_SCRIPTS)
SERVERS: Final = (*FLOOR_SCRIPTS, "trio_smtp", "smtp-server")
LOADS: Final = ("small-persistent", "small-persistent-1")
DEFAULT_REPS: Final = 3
QUICK_REPS: Final = 2
DEFAULT_RESULTS: Final = BENCH_DIR / "results" / "floor.json"
#: Messages counted under callgrind (~50x slower than native) after a warm-up of a fifth.
CALLGRIND_MESSAGES: Final = 1000
CALLGRIND_SERVERS: Final = ("trio-floor", "trio-stream-floor", "asyncio-floor", "trio_smtp")
#: C functions of CPython's socket and select modules: the system calls' side of a loop.
_SYSCALL_WRAPPERS: Final = {
    "epoll": "select_epoll_poll",
    "recv": "sock_recv",
    "send": "sock_send",
}
_LOAD_LABELS: Final = {"small-persistent": "-d -s 20", "small-persistent-1": "-d -s 1"}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cpu_percent(result: ScenarioResult, label: str) -> float | None:
    runs = result.counted_runs(label)
    values = [100 * run.server_cpu / run.elapsed for run in runs if run.elapsed]
    return statistics.median(values) if values else None


def render_table(results: list[ScenarioResult]) -> str:
    """One markdown table per load: a row per server, medians and ratios."""
    out: list[str] = []
    for result in results:
        label = _LOAD_LABELS.get(result.scenario.name, result.scenario.name)
        node_rate = result.median("smtp-server", "messages_per_second")
        node_cpu = result.median("smtp-server", "server_us_per_message")
        trio_cpu = result.median("trio_smtp", "server_us_per_message")
        disturbed = sum(run.disturbed for run in result.runs)
        out += [
            f"`smtp-source {label} -l 1024` ({result.scenario.name}), load average "
            f"{result.load_average}, {disturbed} of {len(result.runs)} runs disturbed:",
            "",
            "| server | msg/s | x smtp-server msg/s | server CPU µs/msg | x smtp-server CPU "
            "| % of trio_smtp's CPU | server CPU % of a core |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for server in result.labels:
            rate = result.median(server, "messages_per_second")
            cpu = result.median(server, "server_us_per_message")
            share = _ratio(cpu, trio_cpu)
            runs = result.counted_runs(server)
            star = "*" if runs and any(run.disturbed for run in runs) else ""
            cells = [
                _fmt(rate, ".0f") + star,
                _fmt(_ratio(rate, node_rate), ".2f"),
                _fmt(cpu, ".0f"),
                _fmt(_ratio(cpu, node_cpu), ".2f"),
                _fmt(None if share is None else 100 * share, ".0f"),
                _fmt(_cpu_percent(result, server), ".0f"),
            ]
            out.append(f"| {server} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- callgrind


def _smtp_source(port: int, sessions: int, messages: int) -> None:
    command = ["smtp-source", "-d", "-l", "1024", "-m", str(messages), "-s", str(sessions)]
    command += ["-f", "a@x", "-t", "b@x", f"127.0.0.1:{port}"]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, timeout=server_bench.RUN_TIMEOUT)


def _inclusive(dump: Path) -> dict[str, int]:
    """Inclusive instruction counts of the system-call wrappers, from callgrind_annotate."""
    completed = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    )
    counts: dict[str, int] = {}
    for line in completed.stdout.splitlines():
        match = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*:(\w+)", line)
        if match is None:
            continue
        function = match.group(2)
        for name, prefix in _SYSCALL_WRAPPERS.items():
            if function.startswith(prefix) and name not in counts:
                counts[name] = int(match.group(1).replace(",", ""))
    return counts


def callgrind(kind: str, messages: int) -> dict[str, Any]:
    """Instructions per message of ``kind`` under ``smtp-source -d -s 1`` (callgrind)."""
    script = SERVER_SCRIPTS[kind]
    with tempfile.TemporaryDirectory(prefix="floor-callgrind-") as tmp:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCH_DIR.parent), env.get("PYTHONPATH", "")) if p
        )
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/callgrind.%p",
                sys.executable,
                str(script),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=BENCH_DIR.parent,
        )
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline().split()[1])
            _smtp_source(port, 1, max(messages // 5, 2))
            pid = str(process.pid)
            subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
            _smtp_source(port, 1, messages)
            subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        finally:
            process.terminate()
            process.wait()
        dump = Path(tmp) / f"callgrind.{process.pid}.1"
        total = 0
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
                break
        wrappers = _inclusive(dump)
    return {
        "server": kind,
        "messages": messages,
        "instructions_per_message": total / messages,
        "syscall_wrappers_per_message": {k: v / messages for k, v in wrappers.items()},
    }


def render_callgrind(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Instructions per message, `smtp-source -d -s 1 -l 1024 -m {rows[0]['messages']}`"
        " under callgrind (user space only; the wrappers' counts are inclusive: the C side of"
        " epoll, recv and send, the kernel not counted):",
        "",
        "| server | instructions/msg | % of trio_smtp's | epoll wrapper | recv wrapper "
        "| send wrapper | rest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    trio = next((r["instructions_per_message"] for r in rows if r["server"] == "trio_smtp"), None)
    for row in rows:
        total = row["instructions_per_message"]
        wrappers = row["syscall_wrappers_per_message"]
        cells = [
            f"{total:,.0f}",
            _fmt(None if not trio else 100 * total / trio, ".0f"),
            *(f"{wrappers.get(name, 0):,.0f}" for name in _SYSCALL_WRAPPERS),
            f"{total - sum(wrappers.values()):,.0f}",
        ]
        lines.append(f"| {row['server']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPS} reps, server_bench's quick sizes"
    )
    parser.add_argument(
        "--reps", type=int, help=f"measured runs per server (default {DEFAULT_REPS})"
    )
    parser.add_argument(
        "--scenario", action="append", choices=LOADS, help="run only this load (repeatable)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)} (trio_smtp and smtp-server are"
        " the references of the ratios)",
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="also count instructions per message (valgrind)"
    )
    parser.add_argument(
        "--callgrind-only", action="store_true", help="only the callgrind counts, no timed runs"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    args.kinds = tuple(args.servers.split(","))
    unknown = [kind for kind in args.kinds if kind not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown {unknown!r}; choose from {','.join(SERVERS)}")
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps must be at least 1, not {args.reps!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the loads against every server; exit 1 if a server failed or a run had errors."""
    args = _parse_args(argv)
    reps: int = args.reps or (QUICK_REPS if args.quick else DEFAULT_REPS)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    if not args.callgrind_only:
        with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp:
            for name in args.scenario or LOADS:
                scenario = SCENARIOS[name]
                print(f"== {name}: {scenario.description}", flush=True)
                results.append(
                    run_scenario(
                        scenario,
                        kinds=args.kinds,
                        reps=reps,
                        quick=args.quick,
                        generator_choice="smtp-source",
                        certs=None,
                        log_dir=Path(tmp),
                    )
                )
    counts: list[dict[str, Any]] = []
    if args.callgrind or args.callgrind_only:
        for kind in CALLGRIND_SERVERS:
            if kind in args.kinds:
                print(f"== callgrind: {kind}", flush=True)
                counts.append(callgrind(kind, CALLGRIND_MESSAGES))
    total = time.monotonic() - started
    environment = server_bench._environment()
    print()
    print(
        f"commit {environment['commit']}, {environment['date']}, {reps} reps, "
        f"load average now {load_average()}, total {total:.0f} s"
    )
    print()
    print(render_table(results))
    if counts:
        print(render_callgrind(counts))
        print()
    failures = [f"{r.scenario.name}: {text}" for r in results for text in r.failures.values()]
    for failure in failures:
        print(f"FAILED {failure}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": environment,
        "quick": args.quick,
        "reps": reps,
        "total_seconds": total,
        "scenarios": [r.as_dict() for r in results],
        "callgrind": counts,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    errors = sum(run.errors for r in results for run in r.runs)
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())

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
- ``trio-hook-floor`` (``floor/trio_hook_floor.py``): trio-floor plus an I/O deadline per
  connection (pushed ahead before each wait) and an ``async`` hook per message under its own
  cancel scope: the Trio structure a real server cannot skip, priced alone;
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
with ``blocking-floor`` (``floor/blocking_floor.py``: the same answers over a blocking socket,
no event loop) as the baseline: trio-floor's count over it is what Trio's run loop and I/O
manager cost per message. ``callgrind_annotate`` gives the inclusive count of CPython's epoll,
recv and send wrappers.
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

import attrs
import server_bench
from _servers import BENCH_DIR, SERVER_SCRIPTS, ServerProcess
from server_bench import SCENARIOS, ScenarioResult, load_average, run_scenario

FLOOR_DIR: Final = BENCH_DIR / "floor"
FLOOR_SCRIPTS: Final = {
    "trio-floor": FLOOR_DIR / "trio_floor.py",
    "trio-hook-floor": FLOOR_DIR / "trio_hook_floor.py",
    "trio-stream-floor": FLOOR_DIR / "trio_stream_floor.py",
    "asyncio-floor": FLOOR_DIR / "asyncio_floor.py",
    "node-floor": FLOOR_DIR / "node_floor.js",
    "blocking-floor": FLOOR_DIR / "blocking_floor.py",
}
# _servers.start_server looks a server up by kind in SERVER_SCRIPTS; the floors are kinds of
# this bench only, so they are added here rather than offered to server_bench.py.
SERVER_SCRIPTS.update(FLOOR_SCRIPTS)
#: The timed servers, in table order (``blocking-floor`` is for ``--callgrind`` only: with 20
#: sessions its threads would measure the GIL).
SERVERS: Final = (
    "trio-floor",
    "trio-hook-floor",
    "trio-stream-floor",
    "asyncio-floor",
    "node-floor",
    "trio_smtp",
    "smtp-server",
)
LOADS: Final = ("small-persistent", "small-persistent-1")
#: Messages per measured run. More than server_bench's 12,000 / 6,000: a floor server needs
#: ~30 µs of CPU per message, and /proc counts CPU time in ticks of 10 ms, so 6,000 messages
#: of a floor (~0.2 s) would read to +-5%; 20,000 bring that to ~1.5%.
DEFAULT_MESSAGES: Final = 20_000
DEFAULT_REPS: Final = 3
QUICK_REPS: Final = 2
DEFAULT_RESULTS: Final = BENCH_DIR / "results" / "floor.json"
#: Messages counted under callgrind (~50x slower than native) after a warm-up of a fifth.
CALLGRIND_MESSAGES: Final = 1000
CALLGRIND_SERVERS: Final = (
    "blocking-floor",
    "trio-floor",
    "trio-hook-floor",
    "trio-stream-floor",
    "asyncio-floor",
    "trio_smtp",
)
#: C functions of CPython's socket and select modules: the system calls' side of a loop.
_SYSCALL_WRAPPERS: Final = {
    "epoll": "select_epoll_poll",
    "recv": "sock_recv",
    "send": "sock_send",
}
_LOAD_LABELS: Final = {"small-persistent": "-d -s 20", "small-persistent-1": "-d -s 1"}


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: id(Run) -> (user, system) CPU seconds of the server during that run.
_SPLITS: dict[int, tuple[float, float]] = {}
_measure = server_bench._measure


def _user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (``/proc/PID/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def _measure_split(
    scenario: server_bench.Scenario,
    generator: str,
    server: ServerProcess,
    messages: int,
    rep: int,
) -> server_bench.Run:
    """server_bench's ``_measure``, also noting the user/system split of the server's CPU."""
    before = _user_system(server.pid)
    run = _measure(scenario, generator, server, messages, rep)
    if server.alive():
        after = _user_system(server.pid)
        _SPLITS[id(run)] = (after[0] - before[0], after[1] - before[1])
    else:
        _SPLITS.pop(id(run), None)
    return run


# run_scenario calls _measure through its module's globals: this wrapper adds the split and
# changes nothing else (server_bench's own CPU figure is still the one in every Run).
server_bench._measure = _measure_split


def _split_us(result: ScenarioResult, label: str) -> tuple[float | None, float | None]:
    """Medians of user and system CPU µs per message over the runs the medians count."""
    user, system = [], []
    for run in result.counted_runs(label):
        split = _SPLITS.get(id(run))
        if split is not None and run.delivered:
            user.append(1e6 * split[0] / run.delivered)
            system.append(1e6 * split[1] / run.delivered)
    return (
        statistics.median(user) if user else None,
        statistics.median(system) if system else None,
    )


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
            "| % of trio_smtp's CPU | user / system µs/msg | server CPU % of a core |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
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
                " / ".join(_fmt(value, ".0f") for value in _split_us(result, server)),
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
    """The callgrind counts as a markdown table, against trio_smtp and blocking-floor."""
    by_server = {row["server"]: row["instructions_per_message"] for row in rows}
    trio = by_server.get("trio_smtp")
    blocking = by_server.get("blocking-floor")
    lines = [
        f"Instructions per message, `smtp-source -d -s 1 -l 1024 -m {rows[0]['messages']}`"
        " under callgrind (user space only: the kernel's side of each system call is not"
        " counted). Wrappers: the C functions of CPython's select and socket modules for"
        " epoll, recv and send, inclusive.",
        "",
        "| server | instructions/msg | % of trio_smtp's | over blocking-floor "
        "| epoll + recv + send wrappers |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        total = row["instructions_per_message"]
        wrappers = sum(row["syscall_wrappers_per_message"].values())
        cells = [
            f"{total:,.0f}",
            _fmt(None if not trio else 100 * total / trio, ".0f"),
            "n/a" if blocking is None else f"{total - blocking:+,.0f}",
            f"{wrappers:,.0f}",
        ]
        lines.append(f"| {row['server']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument(
        "--callgrind-servers",
        default=",".join(CALLGRIND_SERVERS),
        help=f"the servers --callgrind counts (default {','.join(CALLGRIND_SERVERS)})",
    )
    parser.add_argument(
        "--messages",
        type=int,
        help=f"messages per measured run (default {DEFAULT_MESSAGES:,};"
        " with --quick, server_bench's quick counts)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    args.kinds = tuple(args.servers.split(","))
    unknown = [kind for kind in args.kinds if kind not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown {unknown!r}; choose from {','.join(SERVERS)}")
    args.callgrind_kinds = tuple(args.callgrind_servers.split(","))
    unknown = [kind for kind in args.callgrind_kinds if kind not in CALLGRIND_SERVERS]
    if unknown:
        parser.error(f"--callgrind-servers: unknown {unknown!r}")
    if args.messages is not None and args.messages < 100:
        parser.error(f"--messages must be at least 100, not {args.messages!r}")
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
                if args.messages:
                    scenario = attrs.evolve(
                        scenario, messages=args.messages, quick_messages=args.messages
                    )
                elif not args.quick:
                    scenario = attrs.evolve(scenario, messages=DEFAULT_MESSAGES)
                count = scenario.quick_messages if args.quick else scenario.messages
                print(f"== {name}: {scenario.description}, {count:,} per run", flush=True)
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
        for kind in args.callgrind_kinds:
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

"""Throughput of trio_smtp against aiosmtpd 1.4.6 and Nodemailer's smtp-server, side by side.

Usage::

    python bench/server_bench.py [--quick] [--scenario NAME ...] [--servers A,B[,C...]]

For each scenario every server runs as a subprocess with a discard sink; after a warm-up
run each, the same load is sent R times to each, rotating which goes first, and the
medians are printed as a markdown table with the ratios of the first server to each other
one (trio_smtp/aiosmtpd and trio_smtp/smtp-server by default: above 1 means trio_smtp is
faster) and the server CPU time per message (from ``/proc/PID/stat``). The raw runs go to
``bench/results/latest.json``.

``--servers aiosmtpd,aiosmtpd`` runs aiosmtpd against itself, which checks the harness: the
ratio should come out near 1.00, and how far it strays is the noise to expect.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import attrs
import loadgen
from _servers import (
    BENCH_DIR,
    NODE_DIR,
    REPO_ROOT,
    SERVER_SCRIPTS,
    CertPair,
    ServerProcess,
    ServerStartError,
    make_certificate,
    start_server,
)

DEFAULT_RESULTS: Final = BENCH_DIR / "results" / "latest.json"
DEFAULT_REPS: Final = 5
QUICK_REPS: Final = 3
#: Seconds one generator run may take before it counts as hung.
RUN_TIMEOUT: Final = 300.0
SMTP_SOURCE: Final = "smtp-source"
#: Seconds of idle machine sampled before each scenario to spot other load.
BACKGROUND_SAMPLE: Final = 1.0
#: Above this many cores' worth of other activity the numbers are flagged as noisy.
BACKGROUND_WARNING: Final = 0.15
#: Above this fraction of a core used by other processes during a run, the run is disturbed.
DISTURBED: Final = 0.15
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@attrs.frozen(kw_only=True)
class Scenario:
    """One kind of load.

    Attributes:
        name: What ``--scenario`` selects.
        description: One line for the README and the report.
        size: Bytes per message (for smtp-source: the payload after its ~110 header bytes).
        sessions: Concurrent SMTP sessions.
        mode: ``new`` (connection per message) or ``persistent`` (connection per session).
        messages: Messages per measured run in full mode.
        quick_messages: Messages per measured run with ``--quick``.
        starttls: Every connection upgrades with STARTTLS.
        smtp_source_ok: Postfix's smtp-source can generate this load (no TLS in it).
        driver: The Python loadgen driver that loaded this scenario hardest (see README).
        procs: The Python loadgen worker count that loaded this scenario hardest.
    """

    name: str
    description: str
    size: int
    sessions: int
    mode: str
    messages: int
    quick_messages: int
    starttls: bool = False
    smtp_source_ok: bool = True
    driver: str = loadgen.DEFAULT_DRIVER
    procs: int = loadgen.DEFAULT_PROCS


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario(
            name="small-new",
            description="1 KiB messages, 20 sessions, a new connection per message",
            size=1024,
            sessions=20,
            mode="new",
            messages=5000,
            quick_messages=2000,
        ),
        Scenario(
            name="small-persistent",
            description="1 KiB messages, 20 sessions, one connection per session",
            size=1024,
            sessions=20,
            mode="persistent",
            messages=12000,
            quick_messages=5000,
        ),
        Scenario(
            name="small-persistent-1",
            description="1 KiB messages, 1 session, one connection",
            size=1024,
            sessions=1,
            mode="persistent",
            messages=6000,
            quick_messages=2500,
        ),
        Scenario(
            name="large",
            description="1 MiB messages, 4 sessions, one connection per session",
            size=1024 * 1024,
            sessions=4,
            mode="persistent",
            messages=240,
            quick_messages=80,
            smtp_source_ok=False,
        ),
        Scenario(
            name="small-starttls",
            description="1 KiB messages, 20 sessions, a new connection and STARTTLS per message",
            size=1024,
            sessions=20,
            mode="new",
            starttls=True,
            messages=2500,
            quick_messages=1000,
            smtp_source_ok=False,
        ),
    )
}


@attrs.frozen(kw_only=True)
class Run:
    """One generator run against one server."""

    server: str
    rep: int
    delivered: int
    errors: int
    elapsed: float
    size: int
    server_cpu: float
    generator_cpu: float
    #: CPU seconds the rest of the machine used during the run (other processes, and
    #: kernel work charged to no process): a high value means a disturbed run.
    other_cpu: float = 0.0
    note: str = ""

    @property
    def messages_per_second(self) -> float:
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.messages_per_second * self.size / 1e6

    @property
    def server_us_per_message(self) -> float:
        """Server CPU time (user + system) per delivered message, in microseconds."""
        return 1e6 * self.server_cpu / self.delivered if self.delivered else 0.0

    @property
    def disturbed(self) -> bool:
        """Whether other activity on the machine took enough CPU to skew this run."""
        return self.elapsed > 0 and self.other_cpu / self.elapsed > DISTURBED

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["disturbed"] = self.disturbed
        data["messages_per_second"] = self.messages_per_second
        data["megabytes_per_second"] = self.megabytes_per_second
        data["server_us_per_message"] = self.server_us_per_message
        data["server_cpu_percent"] = 100 * self.server_cpu / self.elapsed if self.elapsed else 0
        data["generator_cpu_percent"] = (
            100 * self.generator_cpu / self.elapsed if self.elapsed else 0
        )
        data["other_cpu_percent"] = 100 * self.other_cpu / self.elapsed if self.elapsed else 0
        return data


def _machine_cpu_seconds() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far, from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


def background_load(seconds: float = BACKGROUND_SAMPLE) -> float:
    """Cores' worth of CPU the rest of the machine uses while no benchmark load runs."""
    busy_before, total_before = _machine_cpu_seconds()
    time.sleep(seconds)
    busy_after, total_after = _machine_cpu_seconds()
    cores = os.cpu_count() or 1
    elapsed_cores = total_after - total_before
    return cores * (busy_after - busy_before) / elapsed_cores if elapsed_cores else 0.0


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages from ``/proc/loadavg``."""
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _generator_name(scenario: Scenario, choice: str) -> str:
    if scenario.smtp_source_ok and choice in ("auto", "smtp-source"):
        if shutil.which(SMTP_SOURCE):
            return SMTP_SOURCE
        if choice == "smtp-source":
            raise SystemExit(f"--generator smtp-source: {SMTP_SOURCE!r} is not on PATH")
    return f"loadgen ({scenario.driver}, {scenario.procs} proc)"


def _generate(
    scenario: Scenario, generator: str, port: int, messages: int
) -> tuple[int, int, float, str]:
    """Send ``messages`` to ``port``; return delivered, errors, elapsed and a note."""
    if generator == SMTP_SOURCE:
        command = [SMTP_SOURCE, "-l", str(scenario.size), "-m", str(messages)]
        command += ["-s", str(scenario.sessions), "-f", "a@x", "-t", "b@x"]
        if scenario.mode == "persistent":
            command.append("-d")
        command.append(f"127.0.0.1:{port}")
        start = time.monotonic()
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        elapsed = time.monotonic() - start
        if completed.returncode != 0:
            # smtp-source stops at the first unexpected reply: nothing it sent is trusted.
            stderr = completed.stderr.decode(errors="replace").strip().splitlines()
            note = f"smtp-source exit status {completed.returncode}: {' / '.join(stderr[-2:])}"
            return 0, messages, elapsed, note
        return messages, 0, elapsed, ""
    result = loadgen.run_load(
        loadgen.LoadSpec(
            port=port,
            size=scenario.size,
            messages=messages,
            sessions=scenario.sessions,
            mode=scenario.mode,
            starttls=scenario.starttls,
            procs=scenario.procs,
            driver=scenario.driver,
        )
    )
    return result.delivered, result.errors, result.elapsed, "; ".join(result.error_samples)


def _measure(
    scenario: Scenario, generator: str, server: ServerProcess, messages: int, rep: int
) -> Run:
    server_before = server.cpu_seconds()
    children_before = _children_cpu()
    machine_before, _ = _machine_cpu_seconds()
    delivered, errors, elapsed, note = _generate(scenario, generator, server.port, messages)
    machine = _machine_cpu_seconds()[0] - machine_before
    generator_cpu = _children_cpu() - children_before
    server_cpu = server.cpu_seconds() - server_before if server.alive() else 0.0
    if not server.alive():
        note = (note + "; " if note else "") + f"server exited: {server.stderr_tail(3)}"
    return Run(
        server=server.label,
        rep=rep,
        delivered=delivered,
        errors=errors,
        elapsed=elapsed,
        size=scenario.size,
        server_cpu=server_cpu,
        generator_cpu=generator_cpu,
        other_cpu=max(machine - server_cpu - generator_cpu, 0.0),
        note=note,
    )


@attrs.define(kw_only=True)
class ScenarioResult:
    scenario: Scenario
    generator: str
    labels: list[str]
    runs: list[Run] = attrs.Factory(list)
    failures: dict[str, str] = attrs.Factory(dict)
    #: Cores' worth of CPU used by other processes just before the scenario started.
    background: float = 0.0
    #: ``/proc/loadavg`` just before the scenario started.
    load_average: str = ""

    def runs_of(self, label: str) -> list[Run]:
        return [run for run in self.runs if run.server == label]

    def counted_runs(self, label: str) -> list[Run]:
        """The runs a median is taken over: the undisturbed ones when every server has
        some, else all of them (for every server alike, so that a ratio never sets a
        calm median against a disturbed one)."""
        runs = self.runs_of(label)
        if all(any(not run.disturbed for run in self.runs_of(other)) for other in self.labels):
            return [run for run in runs if not run.disturbed]
        return runs

    def median(self, label: str, attribute: str) -> float | None:
        values = [getattr(run, attribute) for run in self.counted_runs(label)]
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        medians: dict[str, Any] = {}
        for label in self.labels:
            runs = self.runs_of(label)
            medians[label] = (
                {
                    "messages_per_second": self.median(label, "messages_per_second"),
                    "megabytes_per_second": self.median(label, "megabytes_per_second"),
                    "server_us_per_message": self.median(label, "server_us_per_message"),
                    "errors": sum(run.errors for run in runs),
                    "runs_counted": len(self.counted_runs(label)),
                    "only_disturbed_runs": all(run.disturbed for run in runs),
                }
                if runs
                else None
            )
        return {
            "scenario": attrs.asdict(self.scenario),
            "generator": self.generator,
            "servers": self.labels,
            "medians": medians,
            "ratios": {f"{self.labels[0]}/{b}": self.ratio(b) for b in self.labels[1:]},
            "failures": self.failures,
            "background_cpu_cores": self.background,
            "load_average": self.load_average,
            "runs": [run.as_dict() for run in self.runs],
        }

    def ratio(self, other: str) -> float | None:
        """The first server's median messages/s over ``other``'s."""
        a = self.median(self.labels[0], "messages_per_second")
        b = self.median(other, "messages_per_second")
        return a / b if a and b else None


def _server_args(scenario: Scenario, certs: CertPair | None) -> tuple[str, ...]:
    if scenario.starttls:
        assert certs is not None
        return ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    return ()


def _maildir_args(kind: str, directory: Path) -> tuple[str, ...]:
    """Flags that make ``kind`` store every message in a Maildir (``--maildir``)."""
    for sub in ("tmp", "new", "cur"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    if kind == "trio_smtp":
        return ("--sink", "maildir", "--maildir", str(directory))
    return ("--maildir", str(directory))  # aiosmtpd: aiosmtpd.handlers.Mailbox


def run_scenario(
    scenario: Scenario,
    *,
    maildir: bool = False,
    kinds: tuple[str, ...],
    reps: int,
    quick: bool,
    generator_choice: str,
    certs: CertPair | None,
    log_dir: Path,
    retries: int = 1,
) -> ScenarioResult:
    """Start the servers, warm them up, measure ``reps`` rotating runs, stop them.

    A run during which other processes used more than :data:`DISTURBED` of a core is
    measured again, up to ``retries`` times, keeping the least disturbed attempt.
    """
    labels = [
        kind if kind not in kinds[:index] else f"{kind}#{index + 1}"
        for index, kind in enumerate(kinds)
    ]
    generator = _generator_name(scenario, generator_choice)
    result = ScenarioResult(scenario=scenario, generator=generator, labels=labels)
    result.load_average = load_average()
    result.background = background_load()
    if result.background > BACKGROUND_WARNING:
        print(
            f"!! {scenario.name}: other processes use {result.background:.2f} cores of "
            f"{os.cpu_count()} right now (load average {result.load_average});"
            " expect noisy numbers",
            file=sys.stderr,
            flush=True,
        )
    messages = scenario.quick_messages if quick else scenario.messages
    servers: list[ServerProcess] = []
    try:
        for kind, label in zip(kinds, labels, strict=True):
            try:
                servers.append(
                    start_server(
                        kind,
                        label=label,
                        extra_args=_server_args(scenario, certs)
                        + (_maildir_args(kind, log_dir / f"maildir-{label}") if maildir else ()),
                        log_dir=log_dir,
                    )
                )
            except ServerStartError as exc:
                result.failures[label] = str(exc)
                print(f"!! {scenario.name}: {exc}", file=sys.stderr, flush=True)
        # Warm-up: imports, caches, the first TLS handshakes; not recorded.
        warmup = max(messages // 10, 2 * scenario.sessions)
        for server in servers:
            _measure(scenario, generator, server, warmup, rep=-1)
        for rep in range(reps):
            # Rotate who goes first so that slow drift in the machine hits all alike.
            shift = rep % len(servers) if servers else 0
            order = servers[shift:] + servers[:shift]
            for server in order:
                if not server.alive():
                    result.failures.setdefault(
                        server.label, f"{server.label} exited: {server.stderr_tail(5)}"
                    )
                    continue
                run = _measure(scenario, generator, server, messages, rep)
                for _ in range(retries):
                    if not run.disturbed:
                        break
                    # Another process took CPU mid-run: its rate says little about the
                    # server. Measure again and keep the calmer of the two.
                    retry = _measure(scenario, generator, server, messages, rep)
                    run = min(run, retry, key=lambda r: r.other_cpu / r.elapsed)
                result.runs.append(run)
                status = (
                    f"{run.messages_per_second:8.0f} msg/s {run.megabytes_per_second:7.2f} MB/s"
                    f"  (cpu: server {100 * run.server_cpu / run.elapsed:3.0f}%,"
                    f" generator {100 * run.generator_cpu / run.elapsed:3.0f}%,"
                    f" other {100 * run.other_cpu / run.elapsed:3.0f}%)"
                )
                extra = f"  {run.errors} errors: {run.note}" if run.errors or run.note else ""
                print(
                    f"   {scenario.name:18} rep {rep + 1}/{reps} {server.label:11} {status}"
                    f" {run.server_us_per_message:5.0f} us/msg{extra}",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _short(label: str) -> str:
    return (
        label.replace("trio_smtp", "trio").replace("aiosmtpd", "aio").replace("smtp-server", "node")
    )


def render_table(results: list[ScenarioResult]) -> str:
    """The markdown table of medians (and a second one with CPU use, for diagnosis)."""
    if not results:
        return ""
    labels = results[0].labels
    first, others = labels[0], labels[1:]
    short = {label: _short(label) for label in labels}
    lines = [
        "| scenario | generator | "
        + " | ".join(f"{label} msg/s" for label in labels)
        + " | "
        + " | ".join(f"{short[first]}/{short[b]}" for b in others)
        + " | "
        + " | ".join(f"{short[label]} CPU µs/msg" for label in labels)
        + " | "
        + " | ".join(f"{short[label]} MB/s" for label in labels)
        + " |",
        "|---|---|" + "---:|" * (3 * len(labels) + len(others)),
    ]
    for r in results:

        def rate(label: str, r: ScenarioResult = r) -> str:
            # A star: the median counts disturbed runs.
            runs = r.counted_runs(label)
            star = "*" if runs and any(run.disturbed for run in runs) else ""
            return _fmt(r.median(label, "messages_per_second"), ".0f") + star

        cells = [rate(label) for label in labels]
        cells += [_fmt(r.ratio(b), ".2f") for b in others]
        cells += [_fmt(r.median(label, "server_us_per_message"), ".0f") for label in labels]
        cells += [_fmt(r.median(label, "megabytes_per_second"), ".2f") for label in labels]
        lines.append(f"| {r.scenario.name} | {r.generator} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU use, in % of one core (medians over the runs counted above). A server at ~100%"
        " was saturated. Other load: the rest of the machine, just before the scenario /"
        " during its runs (all of them); much above ~10% means disturbed runs. Load average:"
        " /proc/loadavg before the scenario.",
        "",
        "| scenario | "
        + " | ".join(f"{label} CPU | generator CPU vs {short[label]}" for label in labels)
        + " | other load before / during | load average | errors |",
        "|---|" + "---:|" * (2 * len(labels) + 1) + "---|---:|",
    ]
    for r in results:
        cells = []
        for label in labels:
            runs = r.counted_runs(label)
            server = [100 * x.server_cpu / x.elapsed for x in runs if x.elapsed]
            gen = [100 * x.generator_cpu / x.elapsed for x in runs if x.elapsed]
            cells.append(_fmt(statistics.median(server) if server else None, ".0f"))
            cells.append(_fmt(statistics.median(gen) if gen else None, ".0f"))
        errors = sum(run.errors for run in r.runs)
        during = [100 * x.other_cpu / x.elapsed for x in r.runs if x.elapsed]
        median_during = statistics.median(during) if during else None
        cells.append(f"{100 * r.background:.0f} / {_fmt(median_during, '.0f')}")
        cells.append(r.load_average)
        lines.append(f"| {r.scenario.name} | " + " | ".join(cells) + f" | {errors} |")
    return "\n".join(lines)


def _node_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"node": None, "smtp-server": None}
    package = NODE_DIR / "node_modules" / "smtp-server" / "package.json"
    try:
        versions["smtp-server"] = json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        completed = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=True
        )
        versions["node"] = completed.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip()


def _environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": _git_commit(),
        "versions": {
            **{name: _version(name) for name in ("trio_smtp", "trio", "aiosmtpd")},
            **_node_versions(),
        },
        "load_average": load_average(),
        "smtp_source": shutil.which(SMTP_SOURCE),
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare trio_smtp with aiosmtpd 1.4.6 and Nodemailer's smtp-server"
        " (messages/s, medians)."
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPS} reps, fewer messages")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--reps", type=int, help="measured runs per server and scenario")
    parser.add_argument(
        "--servers",
        default="trio_smtp,aiosmtpd,smtp-server",
        help="the servers to compare, as A,B[,C...]; the ratios are A/B, A/C... "
        "(aiosmtpd,aiosmtpd checks the harness)",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "smtp-source", "python"),
        default="auto",
        help="load generator for the plain small scenarios (default: smtp-source if found)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-measure a run disturbed by other processes up to this many times (default 1)",
    )
    parser.add_argument(
        "--maildir",
        action="store_true",
        help="store every message in a Maildir instead of dropping it (trio_smtp's MaildirSink, "
        "aiosmtpd's Mailbox handler; not smtp-server)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    kinds = tuple(args.servers.split(","))
    if args.maildir and not set(kinds) <= {"trio_smtp", "aiosmtpd"}:
        parser.error(f"--maildir works with trio_smtp and aiosmtpd only, not {args.servers!r}")
    if len(kinds) < 2 or any(kind not in SERVER_SCRIPTS for kind in kinds):
        parser.error(
            f"--servers must be two or more of {sorted(SERVER_SCRIPTS)!r}, not {args.servers!r}"
        )
    args.kinds = kinds
    if args.retries < 0:
        parser.error(f"--retries must be at least 0, not {args.retries!r}")
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps must be at least 1, not {args.reps!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; exit 1 if a server failed or a run had errors."""
    args = _parse_args(argv)
    reps: int = args.reps or (QUICK_REPS if args.quick else DEFAULT_REPS)
    scenarios = [SCENARIOS[name] for name in (args.scenario or list(SCENARIOS))]
    started = time.monotonic()
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as tmp:
        log_dir = Path(tmp)
        certs = make_certificate(log_dir) if any(s.starttls for s in scenarios) else None
        for scenario in scenarios:
            print(f"== {scenario.name}: {scenario.description}", flush=True)
            results.append(
                run_scenario(
                    scenario,
                    maildir=args.maildir,
                    kinds=args.kinds,
                    reps=reps,
                    quick=args.quick,
                    generator_choice=args.generator,
                    certs=certs,
                    log_dir=log_dir,
                    retries=args.retries,
                )
            )
    total = time.monotonic() - started
    print()
    print(render_table(results))
    print()
    failures = [f"{r.scenario.name}: {text}" for r in results for text in r.failures.values()]
    for failure in failures:
        print(f"FAILED {failure}")
    disturbed = sum(run.disturbed for r in results for run in r.runs)
    if disturbed:
        print(
            f"WARNING: {disturbed} measured runs shared the CPU with other processes (over"
            f" {100 * DISTURBED:.0f}% of a core); medians leave them out where every server"
            " has undisturbed runs, and * marks a median that counts disturbed runs"
        )
    print(f"{reps} reps per server and scenario, total time {total:.0f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "environment": _environment(),
        "quick": args.quick,
        "reps": reps,
        "total_seconds": total,
        "scenarios": [r.as_dict() for r in results],
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.output}")
    errors = sum(run.errors for r in results for run in r.runs)
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())

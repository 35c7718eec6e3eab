"""A lean pure-Python SMTP load generator, as a library (:func:`run_load`) and a CLI.

Theory of operation
-------------------
One Python process cannot keep a Python SMTP server busy on its own, so the load is spread
over ``procs`` forked worker processes, each running its share of the ``sessions``. Every
session sends its share of ``messages`` one after the other, either opening a new connection
per message (mode ``new``: greeting, EHLO, [STARTTLS, EHLO,] MAIL, RCPT, DATA, body, QUIT) or
reusing one connection (mode ``persistent``: the greeting and EHLO once, then MAIL, RCPT,
DATA, body for each message with no RSET in between, and QUIT at the end).

Everything a session sends is computed before the clock starts, as a list of steps: the
bytes of one write and the reply codes that must come back for it. With PIPELINING
(RFC 2920 §3.1) MAIL, RCPT and DATA go in one write, as does the final dot with a QUIT that
follows it. The driver only writes a step, parses reply codes until it has as many as the
step expects, and compares them: no SMTP parsing beyond "three digits, then a space ends a
reply" (RFC 5321 §4.2.1).

A message counts as delivered only when the reply to its final dot is ``250``; everything
else (a refused connection, an unexpected code, a timeout, a dropped connection) counts as
an error and the session moves on to its next message on a fresh connection.

Two drivers run the sessions inside a worker: ``threads`` (a blocking socket per session in
its own thread) and ``asyncio`` (one event loop, a minimal :class:`asyncio.Protocol` per
connection). Workers wait on a barrier and report monotonic start and end times; elapsed
time is from the first start to the last end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

MODES: Final = ("new", "persistent")
DRIVERS: Final = ("threads", "asyncio")
#: Chosen by measurement on the 2-core bench machine (see bench/README.md).
DEFAULT_DRIVER: Final = "asyncio"
DEFAULT_PROCS: Final = 1
#: Seconds any one step may wait for its replies before the message counts as an error.
DEFAULT_TIMEOUT: Final = 30.0
#: Length of a body line including its CRLF: RFC 5322 §2.1.1 recommends at most 78 + CRLF.
_LINE_LENGTH: Final = 78
_MAX_ERROR_SAMPLES: Final = 5


def _check_mode(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in MODES:
        raise ValueError(f"mode must be one of {MODES!r}, not {value!r}")


def _check_driver(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS!r}, not {value!r}")


def _check_positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class LoadSpec:
    """What load to generate.

    Attributes:
        port: The server's port.
        host: The server's address (loopback only: this is a local benchmark).
        size: Bytes of each message as sent, headers included, before dot-stuffing (there
            is none: no line starts with a dot) and without the final ``.<CRLF>``.
        messages: Messages to send in total, over all sessions.
        sessions: Concurrent SMTP sessions.
        mode: ``new`` (a connection per message) or ``persistent`` (a connection per session).
        starttls: Upgrade every connection with STARTTLS (the certificate is not verified).
        pipelining: Send MAIL, RCPT and DATA in one write (RFC 2920).
        procs: Worker processes to spread the sessions over.
        driver: ``threads`` or ``asyncio``.
        timeout: Seconds a step may wait for its replies.
        mail_from: The reverse-path.
        rcpt_to: The one forward-path.
    """

    port: int
    host: str = "127.0.0.1"
    size: int = attrs.field(default=1024, validator=_check_positive)
    messages: int = attrs.field(default=1000, validator=_check_positive)
    sessions: int = attrs.field(default=20, validator=_check_positive)
    mode: str = attrs.field(default="new", validator=_check_mode)
    starttls: bool = False
    pipelining: bool = False
    procs: int = attrs.field(default=DEFAULT_PROCS, validator=_check_positive)
    driver: str = attrs.field(default=DEFAULT_DRIVER, validator=_check_driver)
    timeout: float = DEFAULT_TIMEOUT
    mail_from: str = "a@x"
    rcpt_to: str = "b@x"


@attrs.frozen(kw_only=True)
class LoadResult:
    """What a run achieved.

    Attributes:
        delivered: Messages whose final dot got ``250``.
        errors: Messages not delivered, plus unexpected replies after a delivered one.
        elapsed: Wall-clock seconds from the first session's start to the last one's end.
        size: Bytes per message (as in :class:`LoadSpec`).
        error_samples: A few error descriptions, for diagnosis.
    """

    delivered: int
    errors: int
    elapsed: float
    size: int
    error_samples: tuple[str, ...] = ()

    @property
    def messages_per_second(self) -> float:
        """Delivered messages per second of wall-clock time."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Delivered message bytes per second, in MB (10**6 bytes)."""
        return self.messages_per_second * self.size / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data, rates included."""
        return {
            "delivered": self.delivered,
            "errors": self.errors,
            "elapsed": self.elapsed,
            "size": self.size,
            "messages_per_second": self.messages_per_second,
            "megabytes_per_second": self.megabytes_per_second,
            "error_samples": list(self.error_samples),
        }


def build_message(size: int) -> bytes:
    """Build a message of exactly ``size`` bytes: short headers and 78-byte text lines.

    No line starts with ``.``, so the bytes go on the wire unchanged, and the last line ends
    with CRLF, so appending ``.<CRLF>`` ends DATA (RFC 5321 §4.1.1.4).

    Raises:
        ValueError: If ``size`` cannot even hold the headers.
    """
    header = b"From: <a@x>\r\nTo: <b@x>\r\nSubject: bench\r\nMessage-ID: <bench@x>\r\n\r\n"
    room = size - len(header)
    if room < 2:
        raise ValueError(f"message size must be at least {len(header) + 2}, not {size!r}")
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
    line = (alphabet * 2)[: _LINE_LENGTH - 2] + b"\r\n"
    full, rest = divmod(room, _LINE_LENGTH)
    body = line * full
    if rest == 1:
        # One byte cannot hold a line and its CRLF: stretch the last full line instead.
        body = body[:-2] + b"x\r\n" if body else b"\r\n"
    elif rest:
        body += b"y" * (rest - 2) + b"\r\n"
    message = header + body
    assert len(message) == size
    return message


@attrs.frozen(kw_only=True)
class _Step:
    """One write and the replies it must get back."""

    data: bytes
    expect: tuple[int, ...]
    #: The first reply answers a final dot: ``250`` there is a delivered message.
    delivers: bool = False
    #: After these replies, start TLS on the connection.
    starttls: bool = False


@attrs.frozen(kw_only=True)
class _Script:
    """Every byte one session sends, as steps, computed before the clock starts."""

    #: From the greeting to the EHLO that MAIL follows (after STARTTLS if any).
    opening: tuple[_Step, ...]
    #: One message, ending with the step that delivers it.
    transaction: tuple[_Step, ...]
    #: What ends the connection; empty when the last transaction step carries QUIT.
    closing: tuple[_Step, ...]


def _build_script(spec: LoadSpec) -> _Script:
    ehlo = _Step(data=b"EHLO loadgen.localhost\r\n", expect=(250,))
    opening = [_Step(data=b"", expect=(220,)), ehlo]
    if spec.starttls:
        # RFC 3207 §4.2: the client must forget what EHLO said and send it again.
        opening += [_Step(data=b"STARTTLS\r\n", expect=(220,), starttls=True), ehlo]
    mail = f"MAIL FROM:<{spec.mail_from}> SIZE={spec.size}\r\n".encode()
    rcpt = f"RCPT TO:<{spec.rcpt_to}>\r\n".encode()
    body = build_message(spec.size) + b".\r\n"
    quit_ = b"QUIT\r\n"
    closing: tuple[_Step, ...] = (_Step(data=quit_, expect=(221,)),)
    if spec.pipelining:
        # RFC 2920 §3.1: DATA ends a group, and so does the final dot; QUIT may follow it.
        transaction = [_Step(data=mail + rcpt + b"DATA\r\n", expect=(250, 250, 354))]
        if spec.mode == "new":
            transaction.append(_Step(data=body + quit_, expect=(250, 221), delivers=True))
            closing = ()
        else:
            transaction.append(_Step(data=body, expect=(250,), delivers=True))
    else:
        transaction = [
            _Step(data=mail, expect=(250,)),
            _Step(data=rcpt, expect=(250,)),
            _Step(data=b"DATA\r\n", expect=(354,)),
            _Step(data=body, expect=(250,), delivers=True),
        ]
    return _Script(opening=tuple(opening), transaction=tuple(transaction), closing=closing)


class _UnexpectedReply(Exception):
    """A step got codes other than the ones it expects."""


def _take_replies(buf: bytearray, codes: list[int]) -> None:
    """Move every complete reply's code from ``buf`` to ``codes``.

    RFC 5321 §4.2.1: a reply ends with the line whose code is followed by a space (or by
    nothing); ``-`` after the code marks a continuation line.
    """
    start = 0
    while True:
        end = buf.find(b"\r\n", start)
        if end < 0:
            break
        if end - start == 3 or buf[start + 3] == 0x20:
            codes.append(int(buf[start : start + 3]))
        start = end + 2
    if start:
        del buf[:start]


def _client_tls_context() -> ssl.SSLContext:
    # The bench certificate is made up on the spot; checking it would measure nothing, and
    # loading the system CA store (create_default_context) costs ~15 ms per context.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --------------------------------------------------------------------------- threads driver


class _BlockingConnection:
    """A blocking socket that hands out reply codes."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.sock: socket.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.codes: list[int] = []
        try:
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise

    def run(self, step: _Step) -> list[int]:
        if step.data:
            self.sock.sendall(step.data)
        wanted = len(step.expect)
        while len(self.codes) < wanted:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
            _take_replies(self.buf, self.codes)
        got = self.codes[:wanted]
        del self.codes[:wanted]
        return got

    def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        if self.buf or self.codes:
            raise _UnexpectedReply("bytes after the STARTTLS reply")
        self.sock = context.wrap_socket(self.sock, server_hostname=host)

    def close(self) -> None:
        self.sock.close()


@attrs.define
class _Tally:
    """What one session did; only its own thread or task writes it."""

    delivered: int = 0
    errors: int = 0
    samples: list[str] = attrs.Factory(list)

    def fail(self, error: BaseException | str) -> None:
        self.errors += 1
        if len(self.samples) < _MAX_ERROR_SAMPLES:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.samples.append(text)


def _run_steps_blocking(
    conn: _BlockingConnection,
    steps: Sequence[_Step],
    tally: _Tally,
    tls: ssl.SSLContext | None,
    host: str,
) -> None:
    """Run ``steps``, counting a delivery in ``tally``; raise on any failure."""
    for step in steps:
        codes = conn.run(step)
        if step.delivers and codes[0] == 250:
            tally.delivered += 1
        if tuple(codes) != step.expect:
            raise _UnexpectedReply(f"expected {step.expect!r}, got {tuple(codes)!r}")
        if step.starttls:
            assert tls is not None
            conn.start_tls(tls, host)


def _blocking_session(
    spec: LoadSpec,
    script: _Script,
    count: int,
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
    tally: _Tally,
) -> None:
    conn: _BlockingConnection | None = None
    remaining = count
    while remaining:
        remaining -= 1
        try:
            if conn is None:
                conn = _BlockingConnection(address, spec.timeout)
                _run_steps_blocking(conn, script.opening, tally, tls, spec.host)
            _run_steps_blocking(conn, script.transaction, tally, tls, spec.host)
            if spec.mode == "new" or not remaining:
                _run_steps_blocking(conn, script.closing, tally, tls, spec.host)
                conn.close()
                conn = None
        except (OSError, ValueError, _UnexpectedReply) as exc:
            # A failure after the 250 (at QUIT, say) is an error but keeps the delivery.
            tally.fail(exc)
            if conn is not None:
                conn.close()
                conn = None
    if conn is not None:
        conn.close()


def _run_threads(
    spec: LoadSpec,
    script: _Script,
    counts: Sequence[int],
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
) -> list[_Tally]:
    tallies = [_Tally() for _ in counts]
    threads = [
        threading.Thread(
            target=_blocking_session,
            args=(spec, script, count, address, tls, tally),
            daemon=True,
        )
        for count, tally in zip(counts, tallies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


# --------------------------------------------------------------------------- asyncio driver


class _ReplyProtocol(asyncio.Protocol):
    """Collects reply codes and wakes the one session waiting for enough of them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.codes: list[int] = []
        self.wanted = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        _take_replies(self.buf, self.codes)
        if self.waiter is not None and len(self.codes) >= self.wanted:
            if not self.waiter.done():
                self.waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self._wake(ConnectionError("server closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._wake(exc or ConnectionError("server closed the connection"))

    def _wake(self, exc: BaseException) -> None:
        self.lost = exc
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def run(self, step: _Step) -> list[int]:
        assert self.transport is not None
        if step.data:
            self.transport.write(step.data)
        wanted = len(step.expect)
        if len(self.codes) < wanted:
            if self.lost is not None:
                raise self.lost
            self.wanted = wanted
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        got = self.codes[:wanted]
        del self.codes[:wanted]
        return got


async def _run_steps_async(
    proto: _ReplyProtocol,
    steps: Sequence[_Step],
    tally: _Tally,
    tls: ssl.SSLContext | None,
    host: str,
) -> None:
    for step in steps:
        codes = await proto.run(step)
        if step.delivers and codes[0] == 250:
            tally.delivered += 1
        if tuple(codes) != step.expect:
            raise _UnexpectedReply(f"expected {step.expect!r}, got {tuple(codes)!r}")
        if step.starttls:
            assert tls is not None
            assert proto.transport is not None
            if proto.buf or proto.codes:
                raise _UnexpectedReply("bytes after the STARTTLS reply")
            loop = asyncio.get_running_loop()
            new = await loop.start_tls(proto.transport, proto, tls, server_hostname=host)
            assert isinstance(new, asyncio.Transport)
            proto.transport = new


async def _async_session(
    spec: LoadSpec,
    script: _Script,
    count: int,
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
    tally: _Tally,
) -> None:
    loop = asyncio.get_running_loop()
    proto: _ReplyProtocol | None = None
    remaining = count
    while remaining:
        remaining -= 1
        try:
            async with asyncio.timeout(spec.timeout):
                if proto is None:
                    _, proto = await loop.create_connection(_ReplyProtocol, *address)
                    await _run_steps_async(proto, script.opening, tally, tls, spec.host)
                await _run_steps_async(proto, script.transaction, tally, tls, spec.host)
                if spec.mode == "new" or not remaining:
                    await _run_steps_async(proto, script.closing, tally, tls, spec.host)
                    assert proto.transport is not None
                    proto.transport.close()
                    proto = None
        except (OSError, ValueError, _UnexpectedReply, TimeoutError) as exc:
            tally.fail(exc)
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
            proto = None
    if proto is not None and proto.transport is not None:
        proto.transport.close()


def _run_asyncio(
    spec: LoadSpec,
    script: _Script,
    counts: Sequence[int],
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
) -> list[_Tally]:
    tallies = [_Tally() for _ in counts]

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for count, tally in zip(counts, tallies, strict=True):
                group.create_task(_async_session(spec, script, count, address, tls, tally))

    asyncio.run(main())
    return tallies


# --------------------------------------------------------------------------- workers


def _split(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative integers."""
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


def _worker(
    spec: LoadSpec,
    counts: list[int],
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[tuple[int, int, float, float, list[str]]],
) -> None:
    script = _build_script(spec)
    address = (spec.host, spec.port)
    tls = _client_tls_context() if spec.starttls else None
    run = _run_threads if spec.driver == "threads" else _run_asyncio
    barrier.wait()
    start = time.monotonic()
    tallies = run(spec, script, counts, address, tls)
    end = time.monotonic()
    samples = [sample for tally in tallies for sample in tally.samples]
    results.put(
        (
            sum(tally.delivered for tally in tallies),
            sum(tally.errors for tally in tallies),
            start,
            end,
            samples[:_MAX_ERROR_SAMPLES],
        )
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Generate the load described by ``spec`` and report what it achieved.

    Forks ``spec.procs`` workers (fewer if there are fewer sessions), waits for all of them
    to be ready, then lets them go at once. Returns when every session is done.

    Raises:
        RuntimeError: If a worker died without reporting.
    """
    build_message(spec.size)  # fail here, not in every worker, on a bad size
    procs = min(spec.procs, spec.sessions)
    sessions_per_proc = _split(spec.sessions, procs)
    session_counts = _split(spec.messages, spec.sessions)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(procs + 1)
    results: multiprocessing.Queue[tuple[int, int, float, float, list[str]]] = context.Queue()
    workers = []
    first = 0
    for n in sessions_per_proc:
        counts = [c for c in session_counts[first : first + n] if c]
        first += n
        worker = context.Process(target=_worker, args=(spec, counts, barrier, results), daemon=True)
        worker.start()
        workers.append(worker)
    try:
        barrier.wait(timeout=60)
        reports = []
        for _ in workers:
            # Bounded so that a hung server cannot hang the bench forever.
            deadline = spec.timeout * max(spec.messages, 1) + 60
            reports.append(results.get(timeout=deadline))
    except Exception as exc:
        raise RuntimeError(f"load generator worker failed: {exc!r}") from exc
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    delivered = sum(r[0] for r in reports)
    errors = sum(r[1] for r in reports)
    elapsed = max(r[3] for r in reports) - min(r[2] for r in reports)
    samples = tuple(s for r in reports for s in r[4])[:_MAX_ERROR_SAMPLES]
    return LoadResult(
        delivered=delivered, errors=errors, elapsed=elapsed, size=spec.size, error_samples=samples
    )


def _parse_args(argv: list[str] | None) -> tuple[LoadSpec, bool]:
    parser = argparse.ArgumentParser(description="Pure-Python SMTP load generator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--messages", type=int, default=1000, help="messages in total")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("--mode", choices=MODES, default="new")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--pipelining", action="store_true")
    parser.add_argument("--procs", type=int, default=DEFAULT_PROCS)
    parser.add_argument("--driver", choices=DRIVERS, default=DEFAULT_DRIVER)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        spec = LoadSpec(
            host=args.host,
            port=args.port,
            size=args.size,
            messages=args.messages,
            sessions=args.sessions,
            mode=args.mode,
            starttls=args.starttls,
            pipelining=args.pipelining,
            procs=args.procs,
            driver=args.driver,
            timeout=args.timeout,
        )
        build_message(spec.size)
    except ValueError as exc:
        parser.error(str(exc))
    as_json: bool = args.json
    return spec, as_json


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit status 1 if any message was not delivered."""
    spec, as_json = _parse_args(argv)
    result = run_load(spec)
    if as_json:
        print(json.dumps({"spec": attrs.asdict(spec), "result": result.as_dict()}, indent=2))
    else:
        print(
            f"{result.delivered} delivered, {result.errors} errors in {result.elapsed:.2f} s: "
            f"{result.messages_per_second:.0f} msg/s, {result.megabytes_per_second:.2f} MB/s"
        )
        for sample in result.error_samples:
            print(f"  error: {sample}", file=sys.stderr)
    return 0 if result.errors == 0 and result.delivered == spec.messages else 1


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the sans-IO engine alone: no sockets, no event loop, no hooks.

Usage::

    python bench/engine_bench.py [--messages 20000] [--body-mib 32] [--runs 5]

Three measurements, each the median of ``--runs`` runs:

1. **commands/s** for one pipelined session of many small messages: EHLO once, then
   ``--messages`` times (MAIL, RCPT, DATA, a 3-line body, "."), fed in 64 KiB chunks, every
   event answered with its default reply and ``data_to_send()`` drained whenever the
   engine asks for more input (as a server task would).
2. **MB/s** for one ``--body-mib`` MiB DATA body of 76-octet lines (74 octets of text and
   CRLF, one line in 50 dot-stuffed), fed in 64 KiB and in 256 KiB chunks, and for a
   base64 attachment of the same size (what most large messages are made of).
3. **MB/s** for the same body sent as BDAT chunks of 1 MiB, fed in 64 KiB chunks.

MB is 10**6 octets. Time is this process's CPU time (``time.process_time``) by default:
the loops are single-threaded and CPU-bound, so on an idle machine it equals the wall
clock, and on a shared one it leaves out the time other processes held the core
(``--clock wall`` for the wall clock).

``ENGINE_BENCH_ROOT=DIR`` measures the ``trio_smtp`` in DIR instead of this checkout's,
e.g. a copy whose engine was compiled with mypyc (see bench/README.md).

The last line compares the DATA figure with aiosmtpd's roughly 50 MB/s for a whole server
(sockets and event loop included): not like for like, but it shows how much of the budget
the engine leaves to the rest of the server.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

# ENGINE_BENCH_ROOT=DIR imports trio_smtp from DIR instead of this checkout.
sys.path.insert(0, os.environ.get("ENGINE_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))

from trio_smtp.engine import (
    NEED_DATA,
    Engine,
    EngineConfig,
    Event,
    MessageData,
)
from trio_smtp.engine import _connection as _engine_module

CHUNK_64K: Final = 64 * 1024
CHUNK_256K: Final = 256 * 1024
LINE_OCTETS: Final = 76
AIOSMTPD_MB_S: Final = 50.0
MB: Final = 1_000_000

SMALL_BODY: Final = b"Subject: bench\r\n\r\nhello\r\n"


_clock: Callable[[], float] = time.process_time


def chunks_of(data: bytes, size: int) -> list[bytes]:
    view = memoryview(data)
    return [bytes(view[i : i + size]) for i in range(0, len(data), size)]


def drive(engine: Engine, chunks: list[bytes]) -> tuple[int, int]:
    """Feed every chunk, answering defaults; return (events answered, content octets)."""
    answered = 0
    content = 0
    for chunk in chunks:
        engine.receive_data(chunk)
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event), event
            if isinstance(event, MessageData):
                content += len(event.data)
            elif event.needs_reply:
                engine.respond()
                answered += 1
        engine.data_to_send()
    return answered, content


def config() -> EngineConfig:
    return EngineConfig(max_message_size=None)


def pipelined_session(messages: int) -> bytes:
    one = (
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" + SMALL_BODY + b".\r\n"
    )
    return b"EHLO bench.example\r\n" + one * messages


def run_commands(messages: int) -> float:
    """Commands per second (EHLO, MAIL, RCPT, DATA) for the pipelined session."""
    chunks = chunks_of(pipelined_session(messages), CHUNK_64K)
    engine = Engine(config())
    engine.greet()
    engine.data_to_send()
    start = _clock()
    answered, content = drive(engine, chunks)
    elapsed = _clock() - start
    # Answered events: EHLO + per message MAIL, RCPT, DATA and the end of message.
    assert answered == 1 + 4 * messages, answered
    assert content == len(SMALL_BODY) * messages, content
    return (1 + 3 * messages) / elapsed


def big_body(mib: int) -> bytes:
    text = b"x" * (LINE_OCTETS - 2)
    stuffed = b"." + b"x" * (LINE_OCTETS - 3)
    block = (text + b"\r\n") * 49 + stuffed + b"\r\n"
    count = mib * 1024 * 1024 // len(block)
    return block * count


def attachment_body(mib: int) -> bytes:
    """A base64 attachment in 76-octet lines: what most large messages are made of."""
    import base64
    import random

    raw = random.Random(1).randbytes(mib * 1024 * 1024 * 3 // 4)
    return base64.encodebytes(raw).replace(b"\n", b"\r\n")


def opened(prefix: bytes) -> Engine:
    engine = Engine(config())
    engine.greet()
    engine.receive_data(prefix)
    while (event := engine.next_event()) is not NEED_DATA:
        if isinstance(event, Event) and event.needs_reply:
            engine.respond()
    engine.data_to_send()
    return engine


def run_data(body: bytes, chunk_size: int, stuffed: int | None = None) -> float:
    """MB/s of wire octets for one DATA body (``stuffed``: dot-stuffed lines in it)."""
    chunks = chunks_of(body + b".\r\n", chunk_size)
    engine = opened(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    start = _clock()
    _, content = drive(engine, chunks)
    elapsed = _clock() - start
    if stuffed is None:
        stuffed = len(body) // (50 * LINE_OCTETS)
    assert content == len(body) - stuffed, content
    return (len(body) + 3) / elapsed / MB


def run_bdat(body: bytes, chunk_size: int) -> float:
    """MB/s of wire octets for the body sent as 1 MiB BDAT chunks."""
    step = 1024 * 1024
    parts = []
    for i in range(0, len(body), step):
        piece = body[i : i + step]
        parts.append(b"BDAT %d\r\n" % len(piece) + piece)
    parts.append(b"BDAT 0 LAST\r\n")
    wire = b"".join(parts)
    engine = opened(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    start = _clock()
    _, content = drive(engine, chunks_of(wire, chunk_size))
    elapsed = _clock() - start
    assert content == len(body), content
    return len(wire) / elapsed / MB


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--body-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="time runs by this process's CPU time (default) or by the wall clock",
    )
    args = parser.parse_args(argv)
    global _clock
    _clock = time.process_time if args.clock == "cpu" else time.perf_counter
    compiled = Path(_engine_module.__file__ or "").suffix in (".so", ".pyd")

    print(
        f"Python {sys.version.split()[0]}, median of {args.runs} runs, {args.clock} time, "
        f"engine {'compiled (mypyc)' if compiled else 'pure Python'} from "
        f"{Path(_engine_module.__file__ or '').parents[2]}"
    )

    med, values = median_of(args.runs, lambda: run_commands(args.messages))
    print(
        f"pipelined session, {args.messages} small messages, 64 KiB chunks: "
        f"{med:,.0f} commands/s ({med / 3:,.0f} messages/s)  "
        f"[runs: {', '.join(f'{v:,.0f}' for v in values)}]"
    )

    body = big_body(args.body_mib)
    data_64k = 0.0
    for size, label in ((CHUNK_64K, "64 KiB"), (CHUNK_256K, "256 KiB")):
        med, values = median_of(args.runs, functools.partial(run_data, body, size))
        if size == CHUNK_64K:
            data_64k = med
        print(
            f"DATA body of {args.body_mib} MiB, 76-octet lines, {label} chunks: {med:,.0f} MB/s  "
            f"[runs: {', '.join(f'{v:,.0f}' for v in values)}]"
        )

    attachment = attachment_body(args.body_mib)
    med, values = median_of(args.runs, functools.partial(run_data, attachment, CHUNK_64K, 0))
    print(
        f"DATA body of {args.body_mib} MiB, a base64 attachment, 64 KiB chunks: "
        f"{med:,.0f} MB/s  [runs: {', '.join(f'{v:,.0f}' for v in values)}]"
    )

    med, values = median_of(args.runs, lambda: run_bdat(body, CHUNK_64K))
    print(
        f"BDAT body of {args.body_mib} MiB in 1 MiB chunks, 64 KiB reads: {med:,.0f} MB/s  "
        f"[runs: {', '.join(f'{v:,.0f}' for v in values)}]"
    )

    print(
        f"engine DATA at 64 KiB: {data_64k:,.0f} MB/s = {data_64k / AIOSMTPD_MB_S:.1f}x "
        f"aiosmtpd's ~{AIOSMTPD_MB_S:.0f} MB/s whole-server figure "
        "(engine alone vs a whole server: an upper bound, not a like-for-like comparison)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

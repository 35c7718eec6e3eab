"""Where the trio_smtp server's time goes, by area, from a py-spy profile.

Usage::

    py-spy record -p PID -r 997 --native --format raw -o profile.txt -d 30
    python bench/profile_areas.py profile.txt

(``PID`` is a ``bench/trio_server.py`` under load, e.g. ``smtp-source -d -s 20``.) Each
sample goes to the innermost trio_smtp frame's area (the engine's command parsing, the
DATA reader, the hook runner ...); a sample inside ``wait_readable`` or Trio's epoll
calls goes to Trio's I/O manager, one without a trio_smtp frame to Trio's run loop.
Samples in a ``send``/``recv``/``epoll_wait`` system call are counted apart: py-spy
samples the wall clock, and on a shared machine such a sample is often the process
waiting for a core after the syscall woke the client, not CPU; the areas' shares are
of the other ("user-space") samples.
"""

from __future__ import annotations

import collections
import re
import sys
from typing import Final

#: (area, pattern of a frame's "function (file:line)"); the first rule that matches the
#: innermost trio_smtp frame wins.
RULES: Final = (
    ("logging (message and connection log lines)", r"_message_log\.py|_logger\.py"),
    ("metrics", r"_metrics\.py"),
    ("spool and memory budget", r"_budget\.py|_spool\.py|_body_reader\.py"),
    ("hook runner (its cancel scope, the call, the 250 reply)", r"trio_smtp/_hooks\.py"),
    ("Mail, Transaction, Recipient construction", r"_transaction\.py|_mail\.py|_session\.py"),
    ("delivery (start, answered, finish)", r"_delivery\.py|_names\.py"),
    ("engine: DATA reader", r"engine/_data\.py|engine/_body\.py"),
    (
        "engine: command parsing, events, sequencing",
        r"engine/_commands\.py|engine/_grammar\.py|engine/_params\.py|engine/_state\.py"
        r"|engine/_events\.py",
    ),
    ("engine: replies", r"engine/_replies\.py|engine/_greeting\.py"),
    ("engine: next_event, buffer, respond", r"trio_smtp/engine/"),
    ("transport (recv/send calls, user side)", r"_transport\.py"),
    ("link (deadlines, flush, receive)", r"_link\.py"),
    ("connection task loop", r"_connection_task\.py"),
)
_IO: Final = re.compile(r"_io_epoll|wait_readable|wait_writable")
_SYSCALL: Final = re.compile(r"\b(send|recv|__libc_recv|__libc_send|epoll_wait|sendto|recvfrom)\b")
_KERNEL: Final = "send/recv/epoll_wait system calls (wall clock)"


def area(stack: str) -> str:
    """The area of one collapsed stack (root first, frames separated by ``;``)."""
    frames = stack.split(";")
    last_python = max((i for i, f in enumerate(frames) if ".py:" in f), default=-1)
    if _SYSCALL.search(" ".join(frames[last_python + 1 :])):
        return _KERNEL
    python = [f for f in frames if ".py:" in f]
    for frame in reversed(python):
        if _IO.search(frame):
            return "Trio: I/O manager (wait_readable, epoll)"
        if "trio_smtp/" in frame:
            for name, pattern in RULES:
                if re.search(pattern, frame):
                    return name
    return "Trio: run loop, scheduling (no trio_smtp frame)"


def main(argv: list[str]) -> int:
    counts: collections.Counter[str] = collections.Counter()
    for line in open(argv[1]):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if stack:
            counts[area(stack)] += int(n)
    total = sum(counts.values())
    user = total - counts[_KERNEL]
    print(f"{total} samples; {100 * counts[_KERNEL] / total:.1f}% in {_KERNEL}")
    for name, n in counts.most_common():
        if name != _KERNEL:
            print(f"{100 * n / user:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

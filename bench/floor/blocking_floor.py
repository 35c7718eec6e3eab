"""``blocking-floor``: the floor with no event loop at all, a blocking socket per thread.

Run as ``python bench/floor/blocking_floor.py --port 0``; prints ``READY <port>`` once
bound, serves until killed.

Only for ``floor_bench.py --callgrind`` with one session: the same answers
(:class:`_answers.Answers`) and the same ``recv()``/``send()`` per command as
``trio_floor.py``, with the kernel doing the waiting, so that the difference in
instructions per message between the two is what Trio's run loop and I/O manager cost
(epoll registration and waits, task switches, the scheduler). With many sessions the
threads would measure the GIL instead.
"""

from __future__ import annotations

import argparse
import socket
import threading
from typing import Final

from _answers import GREETING, Answers

READ_SIZE: Final = 65536


def handle(sock: socket.socket) -> None:
    """Answer one client until it says QUIT or goes away."""
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = Answers()
        try:
            sock.sendall(GREETING)
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    return
                replies, done = answers.feed(data)
                if replies:
                    sock.sendall(replies)
                if done:
                    return
        except ConnectionError:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    listener = socket.create_server((args.host, args.port), backlog=1024)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()

"""An SMTP server as one part of a larger Trio application.

The application runs three things side by side in one nursery:

* the mail server, started with ``await nursery.start(server.serve)`` so that the rest of
  the app knows the bound port before it goes on;
* a worker that takes accepted messages from a memory channel and "processes" them (here:
  prints one line per message on stdout);
* a signal watcher: SIGINT or SIGTERM shuts the server down gracefully.

The ``done`` hook hands each message to the worker through the channel; because it awaits
``send``, the client gets its ``250`` only once the worker has taken the message, and a
slow worker slows the senders down instead of piling messages up in memory.

Run it::

    python examples/embedded_in_app.py --port 2525
    swaks --server 127.0.0.1:2525 --to anyone@example.org

``--count N`` makes the app stop by itself after N messages (the tests use it).
"""

from __future__ import annotations

import argparse
import signal

import trio

from trio_smtp import Mail, Server


async def process_messages(
    receive: trio.MemoryReceiveChannel[Mail], server: Server, count: int | None
) -> None:
    """The application's own work: one line per message, then stop after ``count``."""
    handled = 0
    async with receive:
        async for mail in receive:
            subject = mail.message["Subject"] or "(no subject)"
            print(f"processed {mail.id}: {subject!r} for {', '.join(mail.rcpt_tos)}", flush=True)
            handled += 1
            if count is not None and handled >= count:
                server.shutdown()  # graceful: lets other transactions finish
                return


async def watch_signals(
    server: Server, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            server.logger.log(f"Received {signal.Signals(signum).name}")
            server.shutdown()
            return


async def serve_then_stop(
    server: Server,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server; once it has shut down, stop the rest of the application too."""
    await server.serve(task_status=task_status)
    nursery.cancel_scope.cancel()


async def main(host: str, port: int, count: int | None) -> None:
    send, receive = trio.open_memory_channel[Mail](0)

    async def done(mail: Mail) -> None:
        await send.send(mail)  # the 250 waits until the worker has the message

    server = Server(
        {"events": {"done": done}, "config": {"host": host, "port": port, "hostname": "app.test"}}
    )
    async with trio.open_nursery() as nursery:
        # Signals are caught before the server says it is up.
        await nursery.start(watch_signals, server)
        # start() returns once the server listens: the app knows the real port.
        addresses = await nursery.start(serve_then_stop, server, nursery)
        print(f"app: mail server ready on {addresses}", flush=True)
        nursery.start_soon(process_messages, receive, server, count)
    print("app: stopped", flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.count)


if __name__ == "__main__":
    cli()

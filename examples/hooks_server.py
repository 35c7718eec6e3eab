"""A mail server built from hooks: the smtpjs seed example, done with trio_smtp.

What it does:

* logs every command it receives, with the session id;
* greets with a deliberately slow HELO/EHLO hook (an awaited one-second ``trio.sleep``, as
  in the seed's example: a hook may take its time without blocking other connections);
* accepts mail only for the users it knows and refuses the rest with ``550 5.1.1``;
* stores each accepted message in a Maildir (a temporary one unless ``--maildir`` is given)
  before the client gets its ``250``;
* counts commands per connection in ``ctx.data`` and logs the count at QUIT.

Run it and send it a message::

    python examples/hooks_server.py --port 2525
    swaks --server 127.0.0.1:2525 --to alice@example.com

Stop it with Ctrl-C (SIGINT) or SIGTERM: it finishes the messages in flight first.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import attrs
import trio

from trio_smtp import Mail, Reply, Server
from trio_smtp.sinks import MaildirSink

KNOWN_USERS = frozenset({"alice@example.com", "bob@example.com", "postmaster@example.com"})
COMMANDS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "HELP")


@attrs.define
class ConnectionState:
    """What this example remembers per connection (``ctx.data``)."""

    commands: int = 0


def log_command(ctx: Any) -> None:
    """Log every command (the AUTH arguments would be secret; this server has no AUTH)."""
    ctx.data.commands += 1
    ctx.logger.info(f"{ctx.session.id} {ctx.command} {ctx.argument}".rstrip())


async def slow_hello(ctx: Any) -> None:
    """HELO and EHLO: log, then make the client wait one second (other clients do not)."""
    log_command(ctx)
    await trio.sleep(1)


def quit_(ctx: Any) -> None:
    """QUIT: log it, and how many commands this connection sent."""
    log_command(ctx)
    ctx.logger.info(f"{ctx.session.id} sent {ctx.data.commands} commands")


def rcpt(ctx: Any) -> None:
    """Refuse recipients this server does not know."""
    log_command(ctx)
    if ctx.address.lower() not in KNOWN_USERS:
        raise Reply(550, f"5.1.1 <{ctx.address}>: no such user here")


def make_server(*, host: str, port: int, maildir: str) -> Server:
    """The example server: every command logged, HELO slowed down, mail to ``maildir``."""
    store = MaildirSink(maildir)

    async def done(mail: Mail) -> None:
        # The client hears 250 only once this returns: the message is on disk by then.
        await store.deliver(mail)

    events: dict[str, Any] = {name: log_command for name in COMMANDS}
    events.update(
        {"HELO": slow_hello, "EHLO": slow_hello, "RCPT": rcpt, "QUIT": quit_, "done": done}
    )
    return Server(
        {
            "events": events,
            "config": {"host": host, "port": port, "hostname": "mx.example.com"},
            "data": ConnectionState,
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=2525, help="port (0 picks a free one)")
    parser.add_argument("--maildir", help="where to store mail (default: a temporary dir)")
    args = parser.parse_args(argv)
    maildir = args.maildir or tempfile.mkdtemp(prefix="trio-smtp-example-")
    server = make_server(host=args.host, port=args.port, maildir=maildir)
    server.logger.log(f"Storing accepted mail in the Maildir {maildir}")
    server.run()  # until SIGINT or SIGTERM, then a graceful shutdown


if __name__ == "__main__":
    main()

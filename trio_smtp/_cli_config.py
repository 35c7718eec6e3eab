"""From parsed flags to a running setup: the config, the sink, and the checks at start.

What can never work is refused here, before anything listens (exit 2, one line naming
the flag): flags that need each other, a Maildir or mbox that cannot be written, a port
that another ``--workers`` instance holds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ._cli_flags import RELAY_AUTH_ENV
from ._config import DEFAULT_HOST
from ._metrics import MISSING as METRICS_MISSING
from ._metrics import available as metrics_available
from ._names import hostport
from ._systemd import LISTEN_ENV


def _relay_auth(args: argparse.Namespace) -> tuple[str, str] | None:
    """The upstream credentials, from --relay-auth-file or the environment."""
    if args.relay_auth_file is not None:
        try:
            with open(args.relay_auth_file, encoding="utf-8") as f:
                text = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(
                f"--relay-auth-file {args.relay_auth_file!r}: {exc.strerror}"
            ) from None
        where = f"--relay-auth-file {args.relay_auth_file!r}"
    elif os.environ.get(RELAY_AUTH_ENV):
        text = os.environ[RELAY_AUTH_ENV]
        where = f"${RELAY_AUTH_ENV}"
    else:
        return None
    login, sep, password = text.partition(":")
    if not sep or not login or not password:
        # Never echo the line: it holds a password.
        raise ValueError(f"{where}: expected one line login:password")
    return login, password


def _refuse_impossible(args: argparse.Namespace) -> None:
    """Refuse flags that need another flag, or exclude one, or name a useless directory."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_port is not None and args.tls_cert is None:
        raise ValueError("--tls-port needs --tls-cert and --tls-key")
    if args.require_tls and args.tls_cert is None:
        raise ValueError("--require-tls needs --tls-cert and --tls-key")
    if args.unix_mode is not None and not args.unix:
        raise ValueError("--unix-mode needs --unix")
    if args.metrics is not None and not metrics_available():
        raise ValueError(METRICS_MISSING)
    if args.proxy_from and not args.proxy_protocol:
        raise ValueError("--proxy-from needs --proxy-protocol")
    if args.auth_required and args.auth_file is None:
        raise ValueError("--auth-required needs --auth-file: no client could authenticate")
    if (args.relay_auth_file or args.relay_no_verify) and not args.relay:
        flag = "--relay-auth-file" if args.relay_auth_file else "--relay-no-verify"
        raise ValueError(f"{flag} needs --relay")
    if args.print_body and (args.maildir or args.mbox or args.relay):
        other = "--maildir" if args.maildir else "--mbox" if args.mbox else "--relay"
        raise ValueError(f"--print-body works with the default print sink only, not with {other}")
    if args.relay and not (args.relay_from or args.relay_domain or args.auth_file):
        raise ValueError(
            "--relay needs --relay-from, --relay-domain or --auth-file: "
            "without one of them it would be an open relay"
        )
    if args.spool_dir is not None and not (
        os.path.isdir(args.spool_dir) and os.access(args.spool_dir, os.W_OK | os.X_OK)
    ):
        raise ValueError(f"--spool-dir {args.spool_dir!r}: not a writable directory")


def _sockets_config(args: argparse.Namespace) -> dict[str, Any]:
    """Where to listen besides the ports: Unix sockets, inherited sockets, a worker's."""
    config: dict[str, Any] = {}
    if args.worker_id is not None and os.environ.get(LISTEN_ENV):
        # A worker: its supervisor made the --unix sockets (and took systemd's).
        config["systemd_sockets"] = True
    elif args.unix:
        config["unix"] = args.unix
        config["unix_mode"] = args.unix_mode
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and args.worker_id is None:
        # Started by systemd socket activation: serve on its sockets, bind nothing.
        config["systemd_sockets"] = True
    if args.worker_id is not None:
        config["reuse_port"] = True
        config["worker"] = args.worker_id
    return config


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``config`` mapping that the parsed flags describe.

    Raises:
        ValueError: for flags that can never work (together), naming the flag.
    """
    _refuse_impossible(args)
    config: dict[str, Any] = {
        "host": args.host or [DEFAULT_HOST],
        "port": args.port,
        "hostname": args.hostname,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_port": args.tls_port,
        "require_tls": args.require_tls,
        "auth_file": args.auth_file,
        "auth_insecure": args.auth_insecure,
        "auth_required": args.auth_required,
        "max_message_size": args.max_message_size,
        "max_recipients": args.max_recipients,
        "max_connections": args.max_connections,
        "max_connections_per_ip": args.max_connections_per_ip,
        "spool_dir": args.spool_dir,
        "max_buffered_bytes": args.max_buffered_bytes,
        "command_timeout": args.command_timeout,
        "data_timeout": args.data_timeout,
        "hook_timeout": args.hook_timeout,
        "shutdown_grace": args.shutdown_grace,
        "bare_lf": args.bare_lf,
        "lenient_addresses": args.lenient_addresses,
        "lmtp": args.lmtp,
        "proxy_protocol": args.proxy_protocol,
        "log_level": args.log_level,
    }
    if args.xclient_from:
        config["xclient_from"] = args.xclient_from
    config.update(_sockets_config(args))
    if args.proxy_from:
        config["proxy_from"] = args.proxy_from
    if (args.dns_server or args.dmarc_enforce) and not args.verify:
        raise ValueError("--dns-server and --dmarc-enforce need --verify")
    if args.verify:
        config["verify"] = args.verify
        config["dns_servers"] = args.dns_server or []
        config["dmarc_enforce"] = args.dmarc_enforce
    if args.relay_from:
        config["relay_from"] = args.relay_from
    if args.relay_domain:
        config["relay_domains"] = args.relay_domain
    config["max_auth_failures_per_ip"] = args.max_auth_failures_per_ip
    config["greet_delay"] = args.greet_delay
    return config


def _check_maildir(path: str) -> None:
    """Refuse a Maildir that can never be written: now (exit 2), not a 451 per message."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--maildir {path!r}: not a directory")
    try:
        # The sink makes these as it delivers too (a Maildir removed while serving comes
        # back); making them now proves the directory is writable.
        os.makedirs(path, mode=0o700, exist_ok=True)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
        # A real write, as delivery does: os.access() says yes to root on a read-only mount.
        probe = os.path.join(path, "tmp", f".trio-smtp-probe.{os.getpid()}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
        for sub in ("new", "cur"):
            if not os.access(os.path.join(path, sub), os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", os.path.join(path, sub))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and exc.filename != path else ""
        raise ValueError(f"--maildir {path!r}: {exc.strerror or exc}{where}") from None


def _check_mbox(path: str) -> None:
    """Refuse an mbox that can never be written (opened for append, created if missing)."""
    if os.path.isdir(path):
        raise ValueError(f"--mbox {path!r}: is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"--mbox {path!r}: directory {parent!r} does not exist")
    try:
        # The sink creates the file (0600) on the first delivery anyway; an empty mbox
        # is a valid one.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise ValueError(f"--mbox {path!r}: {exc.strerror or exc}") from None


def make_sink(args: argparse.Namespace, logger: Any) -> Any:
    """The sink the flags ask for, wrapped so that each delivery is logged with its path."""
    from ._message_log import LoggedSink
    from .sinks import MaildirSink, MboxSink, PrintSink, RelaySink

    if args.maildir:
        _check_maildir(args.maildir)
        return LoggedSink(MaildirSink(args.maildir), logger, where=("path", args.maildir))
    if args.mbox:
        _check_mbox(args.mbox)
        return LoggedSink(MboxSink(args.mbox), logger, where=("path", args.mbox))
    if args.relay:
        scheme, host, port = args.relay
        sink = RelaySink(
            host,
            port,
            lmtp=scheme == "lmtp",
            implicit_tls=scheme == "smtps",
            auth=_relay_auth(args),
            verify=not args.relay_no_verify,
        )
        where = host if host.startswith("/") else hostport((host, port))
        return LoggedSink(sink, logger, where=("upstream", f"{scheme}://{where}"))
    return PrintSink(logger, print_body=args.print_body)


def check_port_free(hosts: Sequence[str], ports: Sequence[int | None]) -> None:
    """Refuse ``--workers`` on a port another instance holds.

    The workers share their port through SO_REUSEPORT, which the kernel also grants to any
    other process of the same user that asks for it: a second ``--workers`` instance would
    quietly share the port with the first. A bind without SO_REUSEPORT fails on a port
    anyone listens on, so trying one first tells the two cases apart.
    """
    import socket

    for port in ports:
        if not port:
            continue
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    shown = f"[{host}]" if ":" in host else host
                    raise OSError(
                        exc.errno, f"cannot listen on {shown}:{port}: {exc.strerror}"
                    ) from None


def raise_open_files_limit(max_connections: int, logger: Any) -> None:
    """Make room for ``max_connections`` sockets: raise the soft RLIMIT_NOFILE if needed.

    The default soft limit (often 1024) is barely above the default ``--max-connections``
    (1000); the hard limit is usually much higher. Past the soft limit, accept() fails
    with EMFILE and the server pauses accepting.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 128  # listeners, log files, worker pipes, TLS, sinks
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logger.warn(
            f"open files limit is {target}: fewer than --max-connections {max_connections} "
            "can be served at once"
        )

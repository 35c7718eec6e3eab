"""``python -m trio_smtp`` / ``trio-smtp``: a thin layer over :class:`Server`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from ._auth_guard import DEFAULT_MAX_AUTH_FAILURES_PER_IP
from ._config import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_GRACE,
)
from ._logger import FORMATS, LEVELS, announce
from ._metrics import MISSING as METRICS_MISSING
from ._metrics import Metrics, MetricsServer
from ._metrics import available as metrics_available
from ._names import hostport
from ._relay_policy import parse_networks, parse_relay_domains
from ._spool import MAX_BUFFERED_BYTES
from ._systemd import LISTEN_ENV
from .engine._config import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RECIPIENTS

PROG = "trio-smtp"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or "(default:" in text:
            return text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line, not the usage block.
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, not {text!r}")
    return value


def _seconds(text: str, *, positive: bool = False) -> float:
    # One message for every bad value of a flag, whether it is not a number, negative or
    # (for the timeouts) zero: "expected a number of seconds > 0, not '0'".
    bound = "> 0" if positive else ">= 0"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 if positive else value >= 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds {bound}, not {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    return _seconds(text, positive=True)


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"expected an octal mode such as 660, not {text!r}")
    return value


#: The environment variable that may hold ``login:password`` for the relay upstream.
RELAY_AUTH_ENV = "TRIO_SMTP_RELAY_AUTH"
_RELAY_SCHEMES = {"smtp": 25, "smtps": 465, "lmtp": 24}


def _relay_target(text: str) -> tuple[str, str, int]:
    """``(scheme, host or socket path, port)`` from what ``--relay`` was given."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.startswith(("lmtp:/", "lmtp:unix:")):
            path = text.removeprefix("lmtp:").removeprefix("unix:")
            return ("lmtp", path, 0)
        scheme, rest = "smtp", text
        if ":" not in rest.strip("[]") or rest.endswith("]"):
            raise argparse.ArgumentTypeError(f"expected HOST:PORT or a URL, not {text!r}")
    if scheme not in _RELAY_SCHEMES:
        raise argparse.ArgumentTypeError(f"expected smtp://, smtps:// or lmtp://, not {text!r}")
    host, colon, port = rest.rpartition(":")
    if not colon or port.startswith("[") or "]" in port:
        host, port = rest, str(_RELAY_SCHEMES[scheme])
    host = host.strip("[]")
    if not host:
        raise argparse.ArgumentTypeError(f"expected a host in {text!r}")
    return (scheme, host, _port(port))


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


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    host = host.strip("[]")
    return host, _port(port)


def _relay_network(text: str) -> str:
    try:
        parse_networks(text, key="--relay-from")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or CIDR network: {text!r}") from None
    return text


def _relay_domain(text: str) -> str:
    try:
        parse_relay_domains(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a domain: {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    p = _Parser(
        prog=PROG,
        description="Receive mail over SMTP or LMTP. Serves on 127.0.0.1:1337 by default and "
        "logs a line for each message; give a sink flag to store or forward messages.",
        formatter_class=_Formatter,
    )
    net = p.add_argument_group("listening")
    net.add_argument(
        "--host",
        action="append",
        metavar="HOST",
        help=f"address to listen on, repeatable; :: and 0.0.0.0 work (default: {DEFAULT_HOST})",
    )
    net.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="N",
        help="plain SMTP port (STARTTLS when TLS is configured); 0 picks a free port",
    )
    net.add_argument(
        "--hostname",
        metavar="NAME",
        help="name in the greeting, EHLO and Received headers (default: the FQDN)",
    )
    net.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033) instead of SMTP")
    net.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a HAProxy PROXY v1 or v2 header before the greeting",
    )
    net.add_argument(
        "--proxy-from",
        action="append",
        metavar="CIDR",
        help="addresses allowed to send a PROXY header, repeatable (default: loopback)",
    )
    net.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="N processes sharing the port (SO_REUSEPORT)",
    )
    net.add_argument("--worker-id", type=_positive_int, help=argparse.SUPPRESS)

    sinks = p.add_argument_group("delivery (one of; default: log a line per message)")
    ex = sinks.add_mutually_exclusive_group()
    ex.add_argument(
        "--maildir", metavar="DIR", help="deliver into Maildir DIR (created if missing)"
    )
    ex.add_argument("--mbox", metavar="FILE", help="deliver into mbox FILE")
    ex.add_argument(
        "--relay",
        type=_relay_target,
        metavar="URL",
        help="forward each message before replying 250: HOST:PORT or smtp://HOST:PORT, "
        "smtps://HOST:PORT (implicit TLS), lmtp://HOST:PORT or lmtp:/PATH (Unix socket, "
        "e.g. Dovecot's)",
    )
    sinks.add_argument(
        "--relay-auth-file",
        metavar="FILE",
        help=f"login:password for AUTH to the --relay upstream (or ${RELAY_AUTH_ENV}); "
        "only sent over verified TLS",
    )
    sinks.add_argument(
        "--relay-no-verify",
        action="store_true",
        help="do not verify the --relay upstream's certificate (self-signed upstreams; "
        "verified by default for STARTTLS and smtps://), and let STARTTLS that fails "
        "fall back to plaintext",
    )
    sinks.add_argument(
        "--relay-from",
        action="append",
        type=_relay_network,
        metavar="CIDR",
        help="with --relay: clients allowed to relay anywhere, repeatable",
    )
    sinks.add_argument(
        "--relay-domain",
        action="append",
        type=_relay_domain,
        metavar="DOMAIN",
        help="with --relay: recipient domain anyone may send to, repeatable "
        "(.example.com = its subdomains)",
    )
    sinks.add_argument(
        "--print-body",
        action="store_true",
        help="with the default print sink, print each whole message",
    )

    tls = p.add_argument_group("TLS and authentication")
    tls.add_argument("--tls-cert", metavar="PEM", help="certificate chain (enables STARTTLS)")
    tls.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    tls.add_argument(
        "--tls-port",
        type=_port,
        metavar="N",
        help="also listen with implicit TLS (SMTPS, RFC 8314) on port N",
    )
    tls.add_argument(
        "--require-tls", action="store_true", help="refuse MAIL/RCPT/DATA/AUTH until STARTTLS (530)"
    )
    tls.add_argument(
        "--auth-file",
        metavar="FILE",
        help="user:password lines (or user:{scheme}hash); enables AUTH PLAIN LOGIN",
    )
    tls.add_argument(
        "--auth-insecure", action="store_true", help="allow AUTH without TLS (otherwise 538 5.7.11)"
    )
    tls.add_argument(
        "--auth-required", action="store_true", help="refuse MAIL until authenticated (530 5.7.0)"
    )

    lim = p.add_argument_group("limits and timeouts")
    lim.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="advertised as SIZE; bigger messages get 552 5.3.4",
    )
    lim.add_argument(
        "--max-recipients",
        type=_positive_int,
        default=DEFAULT_MAX_RECIPIENTS,
        metavar="N",
        help="more recipients get 452 4.5.3",
    )
    lim.add_argument(
        "--max-connections",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="more connections get 421 4.7.0",
    )
    lim.add_argument(
        "--max-connections-per-ip",
        type=_positive_int,
        default=DEFAULT_MAX_CONNECTIONS_PER_IP,
        metavar="N",
        help="likewise, per client address",
    )
    lim.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="where message bodies past 1 MiB are spooled (default: the system temp directory)",
    )
    lim.add_argument(
        "--max-buffered-bytes",
        type=_positive_int,
        default=MAX_BUFFERED_BYTES,
        metavar="BYTES",
        help="message body bytes held in memory across all connections; past it bodies "
        "spill to the spool",
    )
    lim.add_argument(
        "--command-timeout",
        type=_positive_seconds,
        default=DEFAULT_COMMAND_TIMEOUT,
        metavar="SECONDS",
        help="time allowed to send a whole command line",
    )
    lim.add_argument(
        "--data-timeout",
        type=_positive_seconds,
        default=DEFAULT_DATA_TIMEOUT,
        metavar="SECONDS",
        help="time allowed for a whole DATA or BDAT transfer",
    )
    lim.add_argument(
        "--hook-timeout",
        type=_positive_seconds,
        default=DEFAULT_HOOK_TIMEOUT,
        metavar="SECONDS",
        help="time a hook or sink may take (then 451 4.3.0)",
    )
    lim.add_argument(
        "--shutdown-grace",
        type=_seconds,
        default=DEFAULT_SHUTDOWN_GRACE,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time transactions get to finish before 421",
    )
    lim.add_argument(
        "--bare-lf",
        choices=("normalize", "reject"),
        default="normalize",
        help="what a bare LF or CR in DATA gets: rewritten to CRLF, or 550 5.6.0",
    )
    lim.add_argument(
        "--max-auth-failures-per-ip",
        type=_positive_int,
        default=DEFAULT_MAX_AUTH_FAILURES_PER_IP,
        metavar="N",
        help="failed AUTHs per client address per minute, then 454 4.7.0 unchecked",
    )
    lim.add_argument(
        "--greet-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait before the 220; a client that talks first gets 554 and is closed",
    )
    lim.add_argument(
        "--lenient-addresses",
        action="store_true",
        help="accept MAIL FROM/RCPT TO without <> and local parts ending in a dot "
        "(old devices such as HP iLO; otherwise 501)",
    )
    ver = p.add_argument_group("verification (needs the 'verify' extra)")
    ver.add_argument(
        "--verify",
        type=_verify_methods,
        metavar="spf,dkim,dmarc,arc",
        help="check these and prepend an Authentication-Results header",
    )
    ver.add_argument(
        "--dns-server",
        action="append",
        type=_dns_server,
        metavar="HOST[:PORT]",
        help="resolver for --verify (repeatable; default: the system's)",
    )
    ver.add_argument(
        "--dmarc-enforce",
        action="store_true",
        help="refuse DMARC p=reject failures with 550 5.7.1; flag p=quarantine ones",
    )
    net.add_argument(
        "--xclient-from",
        action="append",
        metavar="CIDR",
        help="clients allowed to send XCLIENT (Postfix's smtpd_authorized_xclient_hosts), "
        "repeatable (default: nobody)",
    )
    net.add_argument(
        "--unix",
        action="append",
        metavar="PATH",
        help="also listen on Unix socket PATH, repeatable (Postfix's lmtp:unix:PATH)",
    )
    net.add_argument(
        "--unix-mode",
        type=_mode,
        metavar="MODE",
        help="permissions of the --unix sockets, in octal, e.g. 660 (default: the umask's)",
    )
    ops = p.add_argument_group("logging and operations")
    ops.add_argument(
        "--metrics",
        type=_hostport,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs prometheus-client)",
    )
    ops.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        type=str.lower,
        help="least severe level logged (the start lines are always written)",
    )
    ops.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text: [time] [LEVEL] - message lines; json: one JSON object per line",
    )
    ops.add_argument(
        "--version",
        "-V",
        action="version",
        version=f"trio_smtp {__version__}",
        help="print trio_smtp and its version, then exit",
    )
    return p


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``config`` mapping that the parsed flags describe."""
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


def _verify_methods(value: str) -> frozenset[str]:
    from .verify._verifier import parse_methods

    try:
        return parse_methods(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dns_server(value: str) -> str:
    from .verify._dns import parse_server

    try:
        parse_server(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


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


def _check_port_free(hosts: Sequence[str], ports: Sequence[int | None]) -> None:
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


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _raise_open_files_limit(max_connections: int, logger: Any) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from ._logger import Logger
    from ._server import Server

    try:
        config = config_from_args(args)
        logger = Logger(level=args.log_level, format=args.log_format)
        if args.workers > 1 and args.worker_id is None and not config.get("systemd_sockets"):
            _check_port_free(config["host"], [args.port, args.tls_port])
        _raise_open_files_limit(args.max_connections, logger)
        sink = make_sink(args, logger)
        # Built before --workers forks too: a bad certificate or auth file must exit 2
        # here, not make every worker die at start and be restarted forever.
        deps: dict[str, Any] = {"logger": logger, "sink": sink}
        if args.metrics is not None:
            deps["metrics"] = Metrics()
        server = Server({"config": config}, deps)
    except (ValueError, TypeError, OSError) as exc:
        return _fail(str(exc))
    if args.workers > 1:
        from ._supervisor import run_workers

        return run_workers(args, config, argv)
    metrics_server = None
    if args.metrics is not None and args.worker_id is None:
        # (A worker's numbers go to its supervisor, which serves the sum.)
        try:
            metrics_server = MetricsServer(server.metrics.registry, *args.metrics)
        except OSError as exc:
            return _fail(str(exc.strerror or exc))
        where = hostport((metrics_server.host, metrics_server.port))
        announce(logger, f"Metrics on http://{where}/metrics")
    try:
        if args.worker_id is not None:
            from ._workers import run_worker

            return run_worker(server, args.worker_id)
        server.run()
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, OSError):
            return _fail(str(leaf.strerror or leaf))
        if isinstance(leaf, KeyboardInterrupt):
            return 0
        raise
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return 0

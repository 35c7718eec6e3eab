"""The command line's flags: the parser, its groups, and the types that check each value.

Every bad value is refused by argparse with one line naming the flag and the value
(exit 2); which flags may not go together is :mod:`._cli_config`'s job.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

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
from ._logger import FORMATS, LEVELS
from ._relay_policy import parse_networks, parse_relay_domains
from ._spool import MAX_BUFFERED_BYTES
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    p = _Parser(
        prog=PROG,
        description="Receive mail over SMTP or LMTP. Serves on 127.0.0.1:1337 by default and "
        "logs a line for each message; give a sink flag to store or forward messages.",
        formatter_class=_Formatter,
    )
    # The order of the calls is the order of --help (and of the usage line).
    net = p.add_argument_group("listening")
    _add_listening(net)
    _add_delivery(p.add_argument_group("delivery (one of; default: log a line per message)"))
    _add_tls(p.add_argument_group("TLS and authentication"))
    lim = p.add_argument_group("limits and timeouts")
    _add_limits(lim)
    _add_timeouts(lim)
    _add_verification(p.add_argument_group("verification (needs the 'verify' extra)"))
    _add_sockets(net)
    _add_operations(p.add_argument_group("logging and operations"))
    return p


def _add_listening(net: argparse._ArgumentGroup) -> None:
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


def _add_delivery(sinks: argparse._ArgumentGroup) -> None:
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


def _add_tls(tls: argparse._ArgumentGroup) -> None:
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


def _add_limits(lim: argparse._ArgumentGroup) -> None:
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


def _add_timeouts(lim: argparse._ArgumentGroup) -> None:
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


def _add_verification(ver: argparse._ArgumentGroup) -> None:
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


def _add_sockets(net: argparse._ArgumentGroup) -> None:
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


def _add_operations(ops: argparse._ArgumentGroup) -> None:
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

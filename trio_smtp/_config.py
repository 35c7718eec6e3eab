"""The server's settings: what ``schema["config"]`` and the command line set."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._auth_guard import DEFAULT_AUTH_FAILURE_DELAY, DEFAULT_MAX_AUTH_FAILURES_PER_IP
from ._relay_policy import Network, parse_networks, parse_relay_domains
from ._spool import MAX_BUFFERED_BYTES, SPOOL_MEMORY
from .engine import BareLineEndings, EngineConfig
from .engine._auth import MECHANISMS
from .engine._config import (
    DEFAULT_MAX_AUTH_FAILURES,
    DEFAULT_MAX_BAD_COMMANDS,
    DEFAULT_MAX_DATA_LINE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS,
)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 1337
DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_MAX_CONNECTIONS_PER_IP: Final = 50
#: RFC 5321 §4.5.3.2.7: the server should wait at least 5 minutes for a command.
DEFAULT_COMMAND_TIMEOUT: Final = 300.0
DEFAULT_DATA_TIMEOUT: Final = 600.0
DEFAULT_HOOK_TIMEOUT: Final = 60.0
DEFAULT_SHUTDOWN_GRACE: Final = 30.0
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 30.0
DEFAULT_PROXY_TIMEOUT: Final = 10.0
DEFAULT_PROXY_FROM: Final = ("127.0.0.0/8", "::1/128")
#: RFC 7208 §4.6.4: an SPF check should be given at least 20 seconds.
DEFAULT_DNS_BUDGET: Final = 20.0


def _hosts(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _mechanisms(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    out = []
    for name in names:
        upper = str(name).upper()
        if upper not in MECHANISMS:
            raise ValueError(
                f"auth_mechanisms: unsupported mechanism {name!r}; choose from "
                f"{', '.join(MECHANISMS)}"
            )
        out.append(upper)
    return tuple(out)


def _port(_inst: object, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{attr.name} must be a port number from 0 to 65535, not {value!r}")


def _positive_number(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{attr.name} must be a positive number, not {value!r}")


def _non_negative_number(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{attr.name} must be a number of seconds >= 0, not {value!r}")


def _byte_count(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attr.name} must be a number of bytes >= 0, not {value!r}")


def _bare_lf(value: Any) -> BareLineEndings:
    try:
        return BareLineEndings(value)
    except ValueError:
        raise ValueError(f"bare_lf must be 'normalize' or 'reject', not {value!r}") from None


def _verify(value: Any) -> frozenset[str]:
    from .verify._verifier import parse_methods

    try:
        return parse_methods(value)
    except ValueError as exc:
        raise ValueError(f"verify: {exc}") from None


def _dns_servers(value: Any) -> tuple[str, ...]:
    from .verify._verifier import dns_server_list

    try:
        return dns_server_list(value)
    except ValueError as exc:
        raise ValueError(f"dns_servers: {exc}") from None


def _networks(
    value: Any, key: str = "proxy_from"
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{key}: {item!r} is not an address or CIDR network") from None
    return tuple(nets)


def _relay_from(value: Any) -> tuple[Network, ...]:
    return parse_networks(value, key="relay_from")


def _xclient_networks(value: Any) -> tuple[Network, ...]:
    return parse_networks(value, key="xclient_from")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything a :class:`~trio_smtp.Server` is set up with.

    Each attribute matches a command-line flag (``max_message_size`` is
    ``--max-message-size``); see the README for their meaning. Timeouts are in seconds.
    """

    host: tuple[str, ...] = attrs.field(default=(DEFAULT_HOST,), converter=_hosts)
    port: int | None = attrs.field(default=DEFAULT_PORT, validator=_port)
    hostname: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_sni: Mapping[str, tuple[str, str]] | None = None
    tls_port: int | None = attrs.field(default=None, validator=_port)
    #: CA file (or hashed directory) for optional client certificates; when set,
    #: clients may present one and hooks see it as ``session.tls.peer_certificate``.
    tls_client_ca: str | None = None
    require_tls: bool = False
    auth_file: str | None = None
    auth_insecure: bool = False
    auth_required: bool = False
    auth_mechanisms: tuple[str, ...] = attrs.field(
        default=("PLAIN", "LOGIN"), converter=_mechanisms
    )
    max_message_size: int | None = attrs.field(
        default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive_number
    )
    max_recipients: int = attrs.field(default=DEFAULT_MAX_RECIPIENTS, validator=_positive_number)
    max_line_length: int | None = attrs.field(
        default=DEFAULT_MAX_DATA_LINE, validator=_positive_number
    )
    max_bad_commands: int = attrs.field(
        default=DEFAULT_MAX_BAD_COMMANDS, validator=_positive_number
    )
    max_auth_failures: int = attrs.field(
        default=DEFAULT_MAX_AUTH_FAILURES, validator=_positive_number
    )
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=_positive_number)
    max_connections_per_ip: int = attrs.field(
        default=DEFAULT_MAX_CONNECTIONS_PER_IP, validator=_positive_number
    )
    command_timeout: float = attrs.field(
        default=DEFAULT_COMMAND_TIMEOUT, validator=_positive_number
    )
    data_timeout: float = attrs.field(default=DEFAULT_DATA_TIMEOUT, validator=_positive_number)
    hook_timeout: float = attrs.field(default=DEFAULT_HOOK_TIMEOUT, validator=_positive_number)
    tls_handshake_timeout: float = attrs.field(
        default=DEFAULT_TLS_HANDSHAKE_TIMEOUT, validator=_positive_number
    )
    shutdown_grace: float = attrs.field(
        default=DEFAULT_SHUTDOWN_GRACE, validator=_non_negative_number
    )
    bare_lf: BareLineEndings = attrs.field(default=BareLineEndings.NORMALIZE, converter=_bare_lf)
    lenient_addresses: bool = False
    lmtp: bool = False
    proxy_protocol: bool = False
    proxy_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=DEFAULT_PROXY_FROM, converter=_networks
    )
    proxy_timeout: float = attrs.field(default=DEFAULT_PROXY_TIMEOUT, validator=_positive_number)
    #: Where message bodies past ``spool_memory`` go (the system temporary directory if
    #: ``None``); see the README's "Large messages" section.
    spool_dir: str | None = None
    #: Bytes of one body kept in memory before it moves to a spool file.
    spool_memory: int = attrs.field(default=SPOOL_MEMORY, validator=_byte_count)
    #: Body bytes held in memory across all connections; past it bodies spill to the spool.
    max_buffered_bytes: int = attrs.field(default=MAX_BUFFERED_BYTES, validator=_byte_count)
    log_level: str = "info"
    #: Clients allowed to send XCLIENT (``--xclient-from``); nobody by default.
    xclient_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=(), converter=_xclient_networks
    )
    #: Also listen on these Unix socket paths (``--unix``; a stale socket file is replaced).
    unix: tuple[str, ...] = attrs.field(default=(), converter=_hosts)
    #: The permission bits of the Unix sockets (``--unix-mode``), e.g. ``0o660``.
    unix_mode: int | None = None
    #: Serve on the sockets systemd passed (``LISTEN_FDS``) instead of binding host/port.
    systemd_sockets: bool = False
    #: Share the port with other processes (SO_REUSEPORT); set by ``--workers``.
    reuse_port: bool = False
    #: The worker number under ``--workers``, shown in the start line with the pid.
    worker: int | None = None
    #: SPF, DKIM, DMARC, ARC verification (``--verify``); see trio_smtp.verify.
    verify: frozenset[str] = attrs.field(factory=frozenset, converter=_verify)
    dns_servers: tuple[str, ...] = attrs.field(default=(), converter=_dns_servers)
    dmarc_enforce: bool = False
    #: Seconds of DNS each phase of a message's verification may use.
    dns_budget: float = attrs.field(default=DEFAULT_DNS_BUDGET, validator=_positive_number)
    #: Relaying (``--relay-from``, ``--relay-domain``): see :mod:`trio_smtp._relay_policy`.
    relay_from: tuple[Network, ...] = attrs.field(default=(), converter=_relay_from)
    relay_domains: tuple[str, ...] = attrs.field(default=(), converter=parse_relay_domains)
    #: Failed AUTHs per client address per minute, then 454 4.7.0 unchecked.
    max_auth_failures_per_ip: int = attrs.field(
        default=DEFAULT_MAX_AUTH_FAILURES_PER_IP, validator=_positive_number
    )
    #: Seconds of delay before a 535, times the address's recent failures (0: none).
    auth_failure_delay: float = attrs.field(
        default=DEFAULT_AUTH_FAILURE_DELAY, validator=_non_negative_number
    )
    #: Seconds to wait before the 220; a client that talks first gets 554 (0: no wait).
    greet_delay: float = attrs.field(default=0.0, validator=_non_negative_number)

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_port is not None and self.tls_cert is None:
            raise ValueError(f"tls_port {self.tls_port!r} needs tls_cert and tls_key")
        if self.require_tls and self.tls_cert is None:
            raise ValueError("require_tls needs tls_cert and tls_key")
        if not self.host:
            raise ValueError("host must name at least one address")

    @property
    def tls_enabled(self) -> bool:
        """Whether a certificate is configured."""
        return self.tls_cert is not None

    def engine_config(self, hostname: str, *, auth: bool) -> EngineConfig:
        """The engine settings these server settings imply."""
        return EngineConfig(
            hostname=hostname,
            lmtp=self.lmtp,
            proxy_protocol=self.proxy_protocol,
            max_data_line=self.max_line_length,
            max_message_size=self.max_message_size,
            max_recipients=self.max_recipients,
            max_bad_commands=self.max_bad_commands,
            max_auth_failures=self.max_auth_failures,
            bare_line_endings=self.bare_lf,
            lenient_addresses=self.lenient_addresses,
            starttls=self.tls_enabled,
            require_tls=self.require_tls,
            auth_mechanisms=self.auth_mechanisms if auth else (),
            auth_insecure=self.auth_insecure,
            auth_required=self.auth_required,
        )


CONFIG_KEYS: Final = frozenset(a.name for a in attrs.fields(ServerConfig))


def make_config(value: ServerConfig | Mapping[str, Any] | None) -> ServerConfig:
    """Build a :class:`ServerConfig` from a mapping, naming unknown keys.

    Raises:
        ValueError: for unknown keys or bad values.
    """
    if value is None:
        return ServerConfig()
    if isinstance(value, ServerConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"config must be a mapping or a ServerConfig, not {value!r}")
    unknown = sorted(str(k) for k in value if k not in CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"unknown config key {unknown[0]!r}"
            + (f" (and {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else "")
            + f"; known keys: {', '.join(sorted(CONFIG_KEYS))}"
        )
    return ServerConfig(**value)

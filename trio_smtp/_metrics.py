"""Prometheus metrics: what the server counts, and ``--metrics HOST:PORT``.

Theory of operation: the counters are ``prometheus_client`` objects (the optional dependency
``trio_smtp[metrics]``) in a registry of their own, so an embedding application can serve
them with the rest of its metrics (``server.metrics.registry``) and two servers in one
process never mix their numbers. Without ``prometheus_client`` every method is a no-op
(:attr:`Metrics.enabled` is false) and counting costs one attribute test.

``--metrics`` serves the registry with ``prometheus_client``'s own threaded HTTP server, so
a scrape never runs on (or blocks) the Trio event loop.

With ``--workers N`` the numbers must be the whole server's: the supervisor points every
worker at one directory (``PROMETHEUS_MULTIPROC_DIR``, prometheus-client's multiprocess
mode: each process writes its values to memory-mapped files there) and serves the sum
through a ``MultiProcessCollector``; a worker that exits is marked dead so that the
``connections_open`` gauge counts live processes only. The variable must be set before
``prometheus_client`` is imported, which is why a worker learns it from its environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Final

#: Where prometheus-client's multiprocess mode keeps its files.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Buckets of the hook duration histogram, in seconds: hooks are expected to be fast, and
#: the default hook timeout is 60 s.
HOOK_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)

#: The ``reason`` labels of ``connections_refused_total``: the limit reached.
REFUSAL_REASONS: Final = ("max_connections", "max_connections_per_ip")

MISSING: Final = "--metrics needs prometheus-client: python -m pip install 'trio_smtp[metrics]'"


def available() -> bool:
    """Whether ``prometheus_client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class Metrics:
    """The server's counters, for Prometheus.

    Attributes:
        registry: The ``prometheus_client.CollectorRegistry`` holding them, or ``None``
            without ``prometheus_client``.
        enabled: Whether anything is counted.

    The metrics (all prefixed ``trio_smtp_``): ``connections_total``, ``connections_open``,
    ``messages_total{outcome="accepted|refused|failed"}``, ``message_bytes_total``,
    ``replies_total{code}``, ``auth_failures_total``, ``hook_duration_seconds{hook}``
    (histogram), ``tls_handshakes_total{result="ok|failed"}`` and
    ``connections_refused_total{reason="max_connections|max_connections_per_ip"}``
    (also counted in ``connections_total``).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.registry: Any = None
        self.enabled = enabled and available()
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._connections = Counter(
            "trio_smtp_connections",
            "Connections accepted (refused ones included).",
            registry=registry,
        )
        self._open = Gauge(
            "trio_smtp_connections_open",
            "Connections open now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._messages = Counter(
            "trio_smtp_messages",
            "Messages at the end of DATA/BDAT, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._bytes = Counter(
            "trio_smtp_message_bytes", "Bytes of accepted messages.", registry=registry
        )
        self._replies = Counter(
            "trio_smtp_replies", "Replies sent, by code.", ["code"], registry=registry
        )
        self._auth_failures = Counter(
            "trio_smtp_auth_failures", "Failed AUTH attempts.", registry=registry
        )
        self._hooks = Histogram(
            "trio_smtp_hook_duration_seconds",
            "Time hooks (and sinks) took, by hook.",
            ["hook"],
            buckets=HOOK_BUCKETS,
            registry=registry,
        )
        self._refused = Counter(
            "trio_smtp_connections_refused",
            "Connections closed at once (421) because a limit was reached, by limit.",
            ["reason"],
            registry=registry,
        )
        self._tls = Counter(
            "trio_smtp_tls_handshakes",
            "TLS handshakes (STARTTLS and implicit), by result.",
            ["result"],
            registry=registry,
        )
        for outcome in ("accepted", "refused", "failed"):
            self._messages.labels(outcome)  # shown as 0 before the first message
        for result in ("ok", "failed"):
            self._tls.labels(result)
        for reason in REFUSAL_REASONS:
            self._refused.labels(reason)

    def __repr__(self) -> str:
        return f"<Metrics enabled={self.enabled}>"

    def connection_opened(self) -> None:
        """A connection was accepted."""
        if self.enabled:
            self._connections.inc()
            self._open.inc()

    def connection_closed(self) -> None:
        """A connection counted by :meth:`connection_opened` ended."""
        if self.enabled:
            self._open.dec()

    def connection_refused(self, reason: str, *, uncounted: bool = False) -> None:
        """A connection was refused (421, closed) because the limit ``reason`` was reached.

        Args:
            reason: ``"max_connections"`` or ``"max_connections_per_ip"``.
            uncounted: It was refused at accept, before :meth:`connection_opened`:
                count it in ``connections_total`` too (which counts every connection).
        """
        if self.enabled:
            self._refused.labels(reason).inc()
            if uncounted:
                self._connections.inc()

    def message(self, outcome: str, size: int = 0) -> None:
        """A message was ``accepted`` (``size`` bytes), ``refused`` or ``failed``."""
        if self.enabled:
            self._messages.labels(outcome).inc()
            if outcome == "accepted":
                self._bytes.inc(size)

    def reply(self, code: int) -> None:
        """A reply with ``code`` was sent."""
        if self.enabled:
            self._replies.labels(str(code)).inc()

    def auth_failure(self) -> None:
        """An AUTH attempt failed."""
        if self.enabled:
            self._auth_failures.inc()

    def hook_duration(self, hook: str, seconds: float) -> None:
        """A hook (or the sink, as ``done``) ran for ``seconds``."""
        if self.enabled:
            self._hooks.labels(hook).observe(seconds)

    def tls_handshake(self, ok: bool) -> None:
        """A TLS handshake succeeded or failed."""
        if self.enabled:
            self._tls.labels("ok" if ok else "failed").inc()

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample, for tests and embedding apps.

        Args:
            name: The sample name, e.g. ``"trio_smtp_messages_total"``.
            **labels: Its labels, e.g. ``outcome="accepted"``.

        Returns:
            The value, or 0 if there is no such sample (or metrics are disabled).
        """
        if self.registry is None:
            return 0.0
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else float(found)


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:9100`` for IPv6) for ``--metrics``.

    Raises:
        ValueError: naming the bad value.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


class MetricsServer:
    """``/metrics`` over HTTP from prometheus-client's own thread (never the event loop).

    Args:
        registry: What to serve (a server's registry, or the multiprocess collector's).
        host, port: Where to listen; port 0 picks a free one (see :attr:`port`).

    Raises:
        OSError: when the address cannot be bound, naming it.
    """

    def __init__(self, registry: Any, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            raise OSError(
                exc.errno, f"--metrics cannot listen on {shown}:{port}: {exc.strerror}"
            ) from None
        self.host = host
        self.port: int = self._httpd.server_address[1]

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------- --workers


class WorkerMetrics:
    """The supervisor's side of multiprocess mode: one directory, summed on each scrape.

    Use as a context manager around the workers' lifetime; :meth:`env` is what each
    worker's environment gains, :meth:`worker_exited` is called with a dead worker's pid.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="trio-smtp-metrics-")

    def env(self) -> dict[str, str]:
        """The environment variables that put a worker in multiprocess mode."""
        return {MULTIPROC_ENV: self.directory}

    def registry(self) -> Any:
        """A registry that sums every worker's files at each scrape."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        return registry

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters keep counting in the sum)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, path=self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Remove the directory."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> WorkerMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_worker() -> bool:
    """Whether this process writes its metrics for a supervisor (``--workers``)."""
    return bool(os.environ.get(MULTIPROC_ENV))

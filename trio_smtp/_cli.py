"""``python -m trio_smtp`` / ``trio-smtp``: a thin layer over :class:`Server`.

The flags are :mod:`._cli_flags`; turning them into a config and a sink is
:mod:`._cli_config`; this module runs the server (or the ``--workers`` supervisor).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ._cli_config import (
    check_port_free,
    config_from_args,
    make_sink,
    raise_open_files_limit,
)
from ._cli_flags import PROG, build_parser
from ._logger import announce
from ._metrics import Metrics, MetricsServer
from ._names import hostport

__all__ = ["build_parser", "config_from_args", "main", "make_sink"]


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


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
            check_port_free(config["host"], [args.port, args.tls_port])
        raise_open_files_limit(args.max_connections, logger)
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

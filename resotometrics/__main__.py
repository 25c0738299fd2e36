"""``resotometrics``: the Prometheus exporter of the resource inventory, updated by generate_metrics."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import Any

import click
import structlog

from resotolib.logs import setup_logging
from resotolib.settings import build, model_options
from resotometrics.config import MetricsConfig
from resotometrics.loader import DefinitionError
from resotometrics.server import serve


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@model_options(MetricsConfig, "RESOTOMETRICS_")
@click.version_option(version("resoto-workflows"), prog_name="resotometrics")
def main(**values: Any) -> None:
    """Serve Prometheus metrics of the resource graph on /metrics (and /health).

    Subscribes to generate_metrics: on each action every metric definition runs as an aggregate query
    against the core, and the complete result replaces the served snapshot; when a query fails, the
    action is answered with an error naming the metric and the previous snapshot stays. Scrapes are
    answered from that snapshot and never reach the core.

    The built-in definitions cover instances, cores, memory, volumes, snapshots, buckets, security
    groups, accounts, expired and cleaned resources. --metrics-file adds to them or replaces them;
    a file with a problem is refused at start-up with its line and the reason (exit code 2).

    Every option can also be set with the environment variable shown next to it.
    """
    config = build(MetricsConfig, values)
    setup_logging(config.log_format, config.log_level)
    log = structlog.get_logger("resotometrics")
    try:
        asyncio.run(serve(config))
    except DefinitionError as e:
        log.error("definitions_invalid", error=str(e), file=e.source, line=e.line)
        sys.exit(2)
    except OSError as e:
        log.error("startup_failed", error=str(e))
        sys.exit(1)


if __name__ == "__main__":
    main()

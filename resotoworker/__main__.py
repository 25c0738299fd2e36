"""``resotoworker``: collects cloud resources into the core, marks and deletes the ones that should go."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import Any

import click
import structlog

from resotolib.logs import setup_logging
from resotolib.settings import build, model_options
from resotoworker.config import WorkerConfig
from resotoworker.worker import serve


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@model_options(WorkerConfig, "RESOTOWORKER_")
@click.version_option(version("resoto-workflows"), prog_name="resotoworker")
def main(**values: Any) -> None:
    """Run a worker: subscribes to collect, to cleanup_plan with --cleanup-expired, to cleanup with --cleanup.

    Every option can also be set with the environment variable shown next to it; a repeatable option's
    variable takes several values separated by commas or spaces.
    """
    config = build(WorkerConfig, values)
    setup_logging(config.log_format, config.log_level)
    try:
        asyncio.run(serve(config))
    except (LookupError, TypeError, ImportError, OSError) as e:
        structlog.get_logger("resotoworker").error("startup_failed", error=str(e))
        sys.exit(1)


if __name__ == "__main__":
    main()

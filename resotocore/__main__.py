"""``resotocore``: the workflow engine daemon."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import Any

import click
import structlog

from resotocore.app import serve
from resotocore.config import CoreConfig
from resotocore.db.store import StoreError
from resotolib.logs import setup_logging
from resotolib.settings import build, model_options


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@model_options(CoreConfig, "RESOTOCORE_")
@click.version_option(version("resoto-workflows"), prog_name="resotocore")
def main(**values: Any) -> None:
    """Run the workflow engine: cron and event triggers, the action bus, durable runs.

    Every option can also be set with the environment variable shown next to it.
    """
    config = build(CoreConfig, values)
    setup_logging(config.log_format, config.log_level)
    try:
        asyncio.run(serve(config))
    except (StoreError, OSError) as e:
        structlog.get_logger("resotocore").error("startup_failed", error=str(e))
        sys.exit(1)


if __name__ == "__main__":
    main()

"""``resotocore``: the workflow engine daemon."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import structlog
from pydantic import create_model

from resotocore import migrate
from resotocore.app import serve
from resotocore.config import CoreConfig
from resotocore.db.store import StoreError
from resotolib.logs import setup_logging
from resotolib.settings import build, model_options


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@model_options(CoreConfig, "RESOTOCORE_")
@click.version_option(version("resoto-workflows"), prog_name="resotocore")
@click.pass_context
def main(ctx: click.Context, /, **values: Any) -> None:
    """Run the workflow engine: cron and event triggers, the action bus, durable runs.

    Every option can also be set with the environment variable shown next to it. Without a command
    the daemon starts; `export` and `import` move all stored state between backends (see the README).
    """
    config = build(CoreConfig, values)
    if ctx.invoked_subcommand is not None:
        ctx.obj = values
        return
    setup_logging(config.log_format, config.log_level)
    try:
        asyncio.run(serve(config))
    except (StoreError, OSError) as e:
        structlog.get_logger("resotocore").error("startup_failed", error=str(e))
        sys.exit(1)


STORAGE_FIELDS = ("data_dir", "durability", "db", "db_name", "db_user", "db_password", "log_format", "log_level")
_STORAGE: dict[str, Any] = {
    n: (CoreConfig.model_fields[n].annotation, CoreConfig.model_fields[n]) for n in STORAGE_FIELDS
}
StorageOptions = create_model("StorageOptions", **_STORAGE)
"""The storage flags again, so that they may also follow the command name."""


def _storage_config(group_values: dict[str, Any], values: dict[str, Any]) -> CoreConfig:
    config = build(CoreConfig, {**group_values, **{k: v for k, v in values.items() if v is not None}})
    setup_logging(config.log_format, config.log_level)
    return config


@main.command("export")
@model_options(StorageOptions, "RESOTOCORE_")
@click.option("--output", "-o", default="-", show_default=True, help="File to write the NDJSON to; - for stdout.")
@click.pass_obj
def export_command(group_values: dict[str, Any], /, output: str, **values: Any) -> None:
    """Write all stored state (subscribers, runs, wait queue, trigger times, graphs) as NDJSON."""
    config = _storage_config(group_values, values)
    try:
        if output == "-":
            asyncio.run(migrate.export(config, sys.stdout))
        else:
            with migrate.output_file(Path(output)) as out:
                asyncio.run(migrate.export(config, out))
    except (migrate.MigrationError, StoreError, OSError) as e:
        raise click.ClickException(str(e)) from None


@main.command("import")
@model_options(StorageOptions, "RESOTOCORE_")
@click.option("--input", "-i", "source", default="-", show_default=True, help="NDJSON file to read; - for stdin.")
@click.option("--force", is_flag=True, help="Import into a store that already holds state (same keys are replaced).")
@click.pass_obj
def import_command(group_values: dict[str, Any], /, source: str, force: bool, **values: Any) -> None:
    """Load an export into the selected backend; refuses a non-empty store unless --force."""
    config = _storage_config(group_values, values)
    path = migrate.spooled(source)
    try:
        asyncio.run(migrate.import_file(config, path, force))
    except (migrate.MigrationError, StoreError, OSError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if source == "-":
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

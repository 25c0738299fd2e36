"""The ``resotoctl`` command line: global options, logging set-up and the command groups.

Global options come before the command and have ``RESOTOCTL_*`` environment variables; connection
options are fields of ``resotoctl.config.Connection`` (add one there and it is a flag, an environment
variable and a client argument at once). Each command runs through ``resotoctl.errors.execute``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import click

from resotoctl.bus import events, subscribers
from resotoctl.config import ENV_PREFIX, Connection, Ctl
from resotoctl.graph import graph
from resotoctl.stack import stack
from resotoctl.subscribe import subscribe
from resotoctl.workflows import workflows
from resotolib.logs import setup_logging
from resotolib.settings import build, model_options

SERVICE_COMMANDS = frozenset({"subscribe"})
"""Long-running commands: they log at info by default, every other command at warning."""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@model_options(Connection, ENV_PREFIX)
@click.option(
    "--json", "as_json", is_flag=True, envvar=f"{ENV_PREFIX}JSON", show_envvar=True,
    help="Machine-readable output: JSON documents, or one JSON line per item for streams.",
)  # fmt: skip
@click.version_option(version("resoto-workflows"), prog_name="resotoctl")
@click.pass_context
def main(ctx: click.Context, /, as_json: bool, **values: Any) -> None:
    """Operate a resotocore: run and watch workflows, hook scripts onto actions, look at the inventory.

    Global options go before the command; each also reads the environment variable shown. Logs go to
    stderr, results to stdout. Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 core unreachable,
    4 access refused (401/403), 130/143 stopped by SIGINT/SIGTERM.

    \b
    Examples:
      resotoctl workflows list
      resotoctl --resotocore-uri http://core:8900 workflows run collect_and_cleanup --wait
      resotoctl subscribe post_collect --id my-report -- ./report.sh
      RESOTOCTL_JSON=1 resotoctl graph search --kind example_instance | jq .reported.name
    """
    connection = build(Connection, values)
    level = connection.log_level
    if level == "auto":
        level = "info" if ctx.invoked_subcommand in SERVICE_COMMANDS else "warning"
    setup_logging("auto", level)
    ctx.obj = Ctl(connection, as_json)


main.add_command(workflows)
main.add_command(subscribe)
main.add_command(subscribers)
main.add_command(events)
main.add_command(graph)
main.add_command(stack)

"""``resotoctl workflows``: list, run (and watch), running, history, cancel."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from resotoctl.config import Ctl
from resotoctl.errors import EXIT_FAILED, EXIT_OK, execute
from resotoctl.output import Output
from resotoctl.render import runs_table, steps_table, tasks_table, workflows_table
from resotoctl.watch import report_start, run_and_watch


@click.group()
def workflows() -> None:
    """List, run and watch workflows; show running tasks and the history; cancel a run.

    \b
    Examples:
      resotoctl workflows list
      resotoctl workflows run collect_and_cleanup --wait
      resotoctl workflows running
      resotoctl workflows history collect_and_cleanup --limit 5 --steps
      resotoctl workflows cancel 8f2c41d3-...
    """


@workflows.command("list")
@click.pass_obj
def list_workflows(ctl: Ctl) -> None:
    """Every workflow with its triggers, next fire time and running tasks.

    \b
    Examples:
      resotoctl workflows list
      resotoctl --json workflows list | jq -r '.[] | "\\(.id) \\(.next_run)"'
    """

    async def main() -> None:
        async with ctl.client() as client:
            found = await client.workflows()
        Output(ctl.as_json).listing(found, lambda: workflows_table(found, datetime.now(UTC)))

    execute(main())


@workflows.command("run")
@click.argument("workflow_id", metavar="ID")
@click.option("--wait", is_flag=True, help="Follow the run live until it ends; exit 1 unless it succeeded.")
@click.pass_obj
def run_workflow(ctl: Ctl, workflow_id: str, wait: bool) -> None:
    """Start a run of workflow ID now (queued if one is running and the workflow says so).

    Without --wait it prints the task id and returns. With --wait it shows the steps, whom each step
    waits for and the workers' progress until the run ends, then the per-step table; the exit code is
    0 when the run succeeded and 1 when it failed or was cancelled. With --json, --wait prints one JSON
    line per message about the run, then the run itself. Ctrl-C stops watching; the run goes on.

    \b
    Examples:
      resotoctl workflows run collect_and_cleanup
      resotoctl workflows run metrics --wait && echo "metrics are fresh"
      resotoctl --json workflows run collect --wait | jq -c 'select(.kind == "action_progress")'
    """

    async def main() -> int:
        out = Output(ctl.as_json)
        async with ctl.client() as client:
            if wait:
                return await run_and_watch(client, workflow_id, out)
            answer = await client.run_workflow(workflow_id)
        report_start(answer, out)
        return EXIT_FAILED if answer.get("status") == "skipped" else EXIT_OK

    execute(main())


@workflows.command("running")
@click.pass_obj
def running(ctl: Ctl) -> None:
    """The running tasks: current step, how long it runs, whom it waits for, the latest progress.

    \b
    Examples:
      resotoctl workflows running
      resotoctl --json workflows running | jq -r '.[].waiting_for[]'
    """

    async def main() -> None:
        async with ctl.client() as client:
            tasks = await client.tasks()
        Output(ctl.as_json).listing(tasks, lambda: tasks_table(tasks, datetime.now(UTC)), "no workflow is running")

    execute(main())


@workflows.command("history")
@click.argument("workflow_id", metavar="ID")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 500), help="Runs to show.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Newest runs to skip.")
@click.option("--steps", is_flag=True, help="Also show every step of each run with its duration and answers.")
@click.pass_obj
def history(ctl: Ctl, workflow_id: str, limit: int, offset: int, steps: bool) -> None:
    """The latest runs of workflow ID, newest first: status, duration, slowest step, error.

    \b
    Examples:
      resotoctl workflows history collect_and_cleanup
      resotoctl workflows history collect_and_cleanup --limit 1 --steps
      resotoctl --json workflows history metrics | jq '.runs[0].steps[] | {name, duration}'
    """

    async def main() -> None:
        async with ctl.client() as client:
            page = await client.runs(workflow_id, limit=limit, offset=offset)
        out = Output(ctl.as_json)
        if out.as_json:
            out.document(page)
            return
        now = datetime.now(UTC)
        runs = page.get("runs") or []
        out.show(runs_table(runs, now, f"{workflow_id}: {len(runs)} of {page.get('total', len(runs))} runs"))
        if steps:
            for run in runs:
                out.show(steps_table(run, now))

    execute(main())


@workflows.command("cancel")
@click.argument("task_id", metavar="TASK")
@click.pass_obj
def cancel(ctl: Ctl, task_id: str) -> None:
    """Cancel the running task TASK (exit 1 when it is unknown or has ended already).

    \b
    Examples:
      resotoctl workflows cancel 8f2c41d3-...
      resotoctl --json workflows running | jq -r '.[].id' | xargs -n1 resotoctl workflows cancel
    """

    async def main() -> None:
        async with ctl.client() as client:
            cancelled = await client.cancel_task(task_id)
        out = Output(ctl.as_json)
        if out.as_json:
            out.document(cancelled)
        else:
            step = next((s.get("name") for s in reversed(cancelled.get("steps") or [])), None)
            at = f" at step {step}" if step else ""
            out.show(f"cancelled task {cancelled.get('id')} of {cancelled.get('workflow')}{at}")

    execute(main())

"""What ``resotoctl stack`` prints: where to look once it runs, which process died and why, what stopped.

For people: rich panels and lines (the report of a process that died goes to stderr). With ``--json``:
one JSON line per happening on stdout, each with an ``event`` field (``process_started``, ``ready``,
``process_died``, ``stopping``, ``process_stopped``, ``stopped``), for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from resotoctl.output import Output
from resotoctl.stack_plan import WORKFLOW, StackConfig, ctl_hint, describe_exit, run_started
from resotoctl.stack_procs import Child


def ready_panel(config: StackConfig, children: Sequence[Child], answer: dict[str, Any]) -> RenderableType:
    """Where to look: the API, /metrics, the first run, the commands to watch it, the processes and logs."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("API", config.core_url)
    grid.add_row("metrics", config.metrics_url)
    grid.add_row("first run", run_started(answer))
    grid.add_row("watch", ctl_hint(config, "workflows running"))
    grid.add_row("", ctl_hint(config, f"workflows history {WORKFLOW}"))
    for child in children:
        grid.add_row(child.name, f"pid {child.pid}, log {child.spec.log_file}")
    footer = Text("Ctrl-C stops every process (a second Ctrl-C kills what is left).", style="dim")
    return Panel(Group(grid, Text(), footer), title="resoto stack is running", title_align="left", expand=False)


def died_report(child: Child, tail: Sequence[str]) -> RenderableType:
    """The report of a process that ended by itself: its name, how it ended, the end of its log (whole lines)."""
    how = describe_exit(child.returncode if child.returncode is not None else 0)
    head = Text(f"{child.name} (pid {child.pid}) died: {how}", style="bold red")
    where = Text(f"last {len(tail)} lines of {child.spec.log_file}:" if tail else f"{child.spec.log_file} is empty")
    return Group(head, where, *(Text("  " + line) for line in tail))


class StackView:
    """The output of one ``resotoctl stack``."""

    def __init__(self, out: Output, err: Console | None = None) -> None:
        self.out = out
        self.err = err or Console(stderr=True, soft_wrap=True)

    def started(self, child: Child) -> None:
        if self.out.as_json:
            self.out.line(_process("process_started", child, log=str(child.spec.log_file)))
        else:
            self.out.show(Text(f"started {child.name} (pid {child.pid}), log: {child.spec.log_file}", style="dim"))

    def ready(self, config: StackConfig, children: Sequence[Child], answer: dict[str, Any]) -> None:
        if self.out.as_json:
            processes = [_process("", c, log=str(c.spec.log_file)) for c in children]
            for process in processes:
                del process["event"]
            self.out.line(
                {"event": "ready", "api": config.core_url, "metrics": config.metrics_url, "run": answer,
                 "processes": processes}
            )  # fmt: skip
        else:
            self.out.show(ready_panel(config, children, answer))

    def died(self, child: Child, tail: Sequence[str]) -> None:
        if self.out.as_json:
            self.out.line(_process("process_died", child, returncode=child.returncode, log_tail=list(tail)))
        else:
            self.err.print(died_report(child, tail))

    def stopping(self, reason: str, names: Sequence[str]) -> None:
        if self.out.as_json:
            self.out.line({"event": "stopping", "reason": reason, "order": list(names)})
        elif names:
            self.out.show(Text(f"stopping ({reason}): {', '.join(names)}", style="yellow"))

    def stopped(self, child: Child, killed: bool) -> None:
        if self.out.as_json:
            self.out.line(_process("process_stopped", child, returncode=child.returncode, killed=killed))
        else:
            how = "killed after the stop timeout" if killed else describe_exit(child.returncode or 0)
            self.out.show(Text(f"{child.name} stopped ({how})", style="dim"))

    def done(self, code: int) -> None:
        if self.out.as_json:
            self.out.line({"event": "stopped", "exit_code": code})


def _process(event: str, child: Child, **more: Any) -> dict[str, Any]:
    return {"event": event, "name": child.name, "pid": child.pid, **more}

"""``resotoctl stack``: the whole system on this machine, without Docker, until Ctrl-C.

It starts ``resotocore`` (embedded SQLite under DATA_DIR/core), waits until it is ready, starts
``resotoworker`` (the ``example`` collector, ``--cleanup --cleanup-expired``, state under DATA_DIR/worker)
and ``resotometrics``, waits until both are subscribed, starts ``collect_and_cleanup`` once, and prints
where to look. From then on the core's hourly schedule runs the workflow. Every process logs to
DATA_DIR/logs/NAME.log. What runs is decided in ``stack_plan``; ``stack_procs`` starts and stops the
processes, ``stack_probe`` asks the core, ``stack_view`` prints.

Ctrl-C (SIGINT) or SIGTERM stops the processes in reverse order (exporter, worker, core): SIGTERM, a wait
of ``--stop-timeout`` seconds, SIGKILL; the exit code is then 0. SIGHUP (the terminal went away) stops them
the same way and exits 129, so they never outlive the stack. A process that ends by itself is never
restarted: it is reported (name, exit code, the last lines of its log), the others are stopped the same
way, and the exit code is 1. The same holds while starting up, and for a core that is not ready or
processes that do not subscribe within ``--ready-timeout`` seconds; a port of the stack that is taken
stops it before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import click
import structlog

from resotoctl.config import Ctl
from resotoctl.errors import EXIT_FAILED, EXIT_OK, CtlError, describe, execute
from resotoctl.output import Output
from resotoctl.signals import exit_code, stop_signals
from resotoctl.stack_plan import ENV_PREFIX, ProcessSpec, StackConfig, describe_exit, plan, stop_order
from resotoctl.stack_probe import Probe, check_ports
from resotoctl.stack_procs import Child, spawn, stop
from resotoctl.stack_view import StackView
from resotolib.client import CoreError
from resotolib.settings import build, model_options

log = structlog.get_logger(__name__)
T = TypeVar("T")
TAIL_LINES = 20
DEATH_NOTICE_SECONDS = 0.5
"""When a request fails, how long to wait for the news that a process died (the likely cause)."""


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: stop everything."""


class ChildDied(Exception):
    """A process of the stack ended by itself."""

    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


class Supervisor:
    """The processes of the stack, watched from their start to their stop."""

    def __init__(self, config: StackConfig, view: StackView) -> None:
        self.config = config
        self.view = view
        self.children: list[Child] = []
        self.stop_signal: signal.Signals | None = None
        self.died: Child | None = None
        self.hurry = asyncio.Event()
        self._changed = asyncio.Event()
        """Set when a stop is requested or a process died: whatever the stack waits for is abandoned."""
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    def request_stop(self, sig: signal.Signals) -> None:
        """The first signal stops the stack; a signal while it stops cuts the stop timeouts short."""
        if self.stop_signal or self._stopping:
            self.hurry.set()
            return
        log.info("stop_requested", reason=sig.name)
        self.stop_signal = sig
        self._changed.set()

    @property
    def stop_exit_code(self) -> int:
        """0 after Ctrl-C or SIGTERM, the asked-for ways to end the stack; 129 after SIGHUP."""
        return exit_code(signal.SIGHUP) if self.stop_signal is signal.SIGHUP else EXIT_OK

    async def start(self, spec: ProcessSpec) -> Child:
        self._raise_if_changed()
        try:
            child = await spawn(spec, os.environ)
        except OSError as e:
            raise CtlError(f"could not start {spec.name}: {e}") from e
        self.children.append(child)
        self._watchers.append(asyncio.get_running_loop().create_task(self._watch(child)))
        self.view.started(child)
        return child

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless a stop is requested or a process dies first (then raise that)."""
        self._raise_if_changed()
        loop = asyncio.get_running_loop()
        work = asyncio.ensure_future(awaitable)
        changed = loop.create_task(self._changed.wait())
        try:
            await asyncio.wait({work, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if not work.cancelled() and work.exception() is None:
            return work.result()
        if not work.cancelled():  # it failed: perhaps because a process died, which then is the news
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), DEATH_NOTICE_SECONDS)
        self._raise_if_changed()
        return work.result()  # its own failure

    async def stop_all(self, reason: str) -> None:
        """Stop every process still running, in the reverse order of their start; one that ended by itself
        meanwhile (besides the one already reported) is reported too."""
        self._stopping = True
        running = [c for c in self.children if c.returncode is None]
        self.view.stopping(reason, stop_order(c.name for c in running))
        for child in reversed(self.children):
            if child.returncode is None:
                killed = await stop(child, self.config.stop_timeout, self.hurry)
                self.view.stopped(child, killed)
            elif not child.stopping and child is not self.died:
                self.view.died(child, child.log_tail(TAIL_LINES))
            child.stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def _raise_if_changed(self) -> None:
        if self.died is not None:
            raise ChildDied(self.died)
        if self.stop_signal:
            raise StopRequested(self.stop_signal.name)

    async def _watch(self, child: Child) -> None:
        code = await child.proc.wait()
        if child.stopping or self._stopping or self.died is not None:
            return  # expected, or reported by stop_all
        log.info("process_died", process=child.name, pid=child.pid, returncode=code)
        self.died = child
        self._changed.set()


async def bring_up(config: StackConfig, supervisor: Supervisor, probe: Probe) -> None:
    """Start the processes, the first run, and print where to look; then wait for a stop or a death."""
    core, *clients = plan(config, sys.executable)
    check_ports(config)
    started = await supervisor.start(core)
    await supervisor.guard(probe.wait_ready(lambda: started.returncode is None))
    for spec in clients:
        await supervisor.start(spec)
    await supervisor.guard(probe.wait_subscribed())
    answer = await supervisor.guard(probe.run_workflow())
    supervisor.view.ready(config, supervisor.children, answer)
    await supervisor.guard(asyncio.Event().wait())  # until Ctrl-C, SIGTERM or a process dies


async def run_stack(config: StackConfig, view: StackView) -> int:
    """The stack from start to stop; exit code 0 after Ctrl-C or SIGTERM (129 after SIGHUP), CtlError (exit 1)
    otherwise."""
    supervisor = Supervisor(config, view)
    failure: CtlError | None = None
    with stop_signals(supervisor.request_stop):
        try:
            async with aiohttp.ClientSession() as session:
                await bring_up(config, supervisor, Probe(session, config))
        except StopRequested:
            pass
        except ChildDied as e:
            view.died(e.child, e.child.log_tail(TAIL_LINES))
            how = describe_exit(e.child.returncode or 0)
            failure = CtlError(f"{e.child.name} died ({how}); the stack stopped. Its log: {e.child.spec.log_file}")
        except CtlError as e:
            failure = e
        except CoreError as e:
            failure = describe(e)
        finally:
            died = supervisor.died
            stopped = supervisor.stop_signal.name if supervisor.stop_signal else ""
            reason = stopped or (f"{died.name} died" if died else "the stack failed")
            await supervisor.stop_all(reason)
    code = EXIT_FAILED if failure else supervisor.stop_exit_code
    view.done(code)
    if failure:
        raise failure
    return code


@click.command("stack")
@model_options(StackConfig, ENV_PREFIX)
@click.pass_obj
def stack(ctl: Ctl, /, **values: Any) -> None:
    """Run the whole system on this machine: core (SQLite), worker (example cloud, cleanup), metrics exporter.

    Starts the three processes, runs collect_and_cleanup once as soon as the worker and the exporter
    have subscribed (then hourly, on the core's schedule), and prints where to look. Logs go to
    DATA_DIR/logs. Ctrl-C or SIGTERM stops every process (exporter, worker, core) and exits 0; SIGHUP (the
    terminal closed) stops them too and exits 129. A process that dies is reported with the end of its
    log, the others are stopped, and the exit code is 1; so is a port that is taken, before anything starts.
    The processes also read their own variables (RESOTOCORE_SCHEDULE, RESOTOWORKER_EXAMPLE_SEED, ...);
    --psk (or the global --psk) is given to all three through their environment.

    \b
    Examples:
      resotoctl stack
      resotoctl stack --data-dir /tmp/resoto --core-port 8901 --metrics-port 9956
      resotoctl stack --example-accounts 3 --example-resources 200 --psk "$(openssl rand -hex 16)"
      resotoctl --json stack | jq -c 'select(.event == "process_died")'
    """
    config = build(StackConfig, values)
    if config.psk is None and ctl.connection.psk:
        config = config.model_copy(update={"psk": ctl.connection.psk})
    execute(run_stack(config, StackView(Output(ctl.as_json))))

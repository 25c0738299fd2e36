"""``resotoctl subscribe`` as a real process against a real core: every way a hooked script can end
shows in the run history, and stopping it leaves no subscription and no process behind."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from resotoctl import subscribe as subscribe_command
from resotoctl.config import Connection, Ctl
from resotoctl.errors import CtlError
from resotoctl.runner import SubscribeOptions, max_timeout, subscription_timeout
from resotolib.client import CoreClient
from resotolib.protocol import MAX_TIMEOUT_SECONDS, Subscription
from resotolib.subscriber import ActionSubscriber
from tests.resotoctl.support import CtlProcess, ctl, eventually, group_alive, read_int, script, until_async
from tests.support import CoreProcess

StartCtl = Callable[..., Awaitable[CtlProcess]]
STEP = "generate_metrics"
"""The hooked action: the middle step of the three-step ``metrics`` workflow."""


async def hook(start: StartCtl, core: CoreProcess, client: CoreClient, command: Path, *options: str) -> CtlProcess:
    """``resotoctl subscribe generate_metrics --id hook OPTIONS -- COMMAND``, registered with the core."""
    process = await start(core.url, "subscribe", STEP, "--id", "hook", *options, "--", str(command))

    async def registered() -> bool:
        assert process.proc is not None and process.proc.returncode is None, f"resotoctl ended: {process.stderr}"
        subscriber = await client.subscriber("hook")
        return subscriber is not None and STEP in subscriber.subscriptions

    await until_async(registered)
    return process


async def run_metrics(client: CoreClient, within: float = 15) -> dict[str, Any]:
    """Run the metrics workflow to its end; its entry in the run history."""
    started = await client.run_workflow("metrics")
    assert started["status"] == "started", started
    task_id = started["task_id"]

    async def ended() -> bool:
        return bool((await client.task(task_id))["status"] != "running")

    await until_async(ended, within)
    runs = (await client.runs("metrics", limit=1))["runs"]
    assert runs[0]["id"] == task_id and runs[0]["status"] != "running", runs[0]
    return dict(runs[0])


def step(run: dict[str, Any], name: str = STEP) -> dict[str, Any]:
    return dict(next(s for s in run["steps"] if s["name"] == name))


async def stop(process: CtlProcess, client: CoreClient, sig: int = signal.SIGINT) -> int:
    """Stop resotoctl with a signal; it must end and leave no subscription behind."""
    process.signal(sig)
    code = await process.wait()
    subscriber = await client.subscriber("hook")
    assert subscriber is None or not subscriber.subscriptions, subscriber
    return code


async def test_a_script_that_succeeds(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path
) -> None:
    command = script(
        tmp_path, "report.sh",
        f'echo "task=$RESOTO_TASK_ID step=$RESOTO_STEP action=$RESOTO_ACTION"\ncat > {tmp_path}/action.json\n'
        'echo "report sent" >&2\n',
    )  # fmt: skip
    process = await hook(ctl_process, core, client, command, "--timeout", "5")
    run = await run_metrics(client)
    assert run["status"] == "succeeded"
    hooked = step(run)
    assert hooked["subscribers"]["hook"]["outcome"] == "done"
    messages = [(i["level"], i["message"]) for i in hooked["info"]]
    assert messages == [("info", f"task={run['id']} step={STEP} action={STEP}"), ("warning", "report sent")]
    action = json.loads((tmp_path / "action.json").read_text())
    assert action == {"kind": "action", "message_type": STEP, "data": {"task": run["id"], "step": STEP}}
    assert await stop(process, client, signal.SIGTERM) == 143


async def test_a_script_that_fails(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path
) -> None:
    command = script(tmp_path, "fail.sh", 'for i in $(seq 1 25); do echo "trace line $i" >&2; done\nexit 3\n')
    process = await hook(ctl_process, core, client, command, "--timeout", "5")
    run = await run_metrics(client)
    assert run["status"] == "failed" and run["error"] == f"steps failed: {STEP}"
    outcome = step(run)["subscribers"]["hook"]
    assert outcome["outcome"] == "error"
    assert outcome["error"].startswith("exit code 3: trace line 6\n")  # the last 20 lines of stderr
    assert outcome["error"].endswith("trace line 25") and "trace line 5\n" not in outcome["error"]
    assert await stop(process, client) == 130


async def test_a_script_that_hangs(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path
) -> None:
    command = script(tmp_path, "hang.sh", f"echo $$ > {tmp_path}/pid\ntrap '' TERM\nsleep 60 &\nwait\n")
    process = await hook(ctl_process, core, client, command, "--timeout", "1", "--kill-grace", "0.5")
    run = await run_metrics(client)
    assert run["status"] == "failed"
    outcome = step(run)["subscribers"]["hook"]
    assert (outcome["outcome"], outcome["error"]) == ("error", "timed out after 1 s")
    pgid = read_int(tmp_path / "pid")
    assert pgid is not None
    await eventually(lambda: not group_alive(pgid), within=2)
    assert await stop(process, client) == 130


async def test_a_script_that_prints_a_lot(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path
) -> None:
    command = script(tmp_path, "chatty.sh", 'for i in $(seq 1 5000); do echo "line $i"; done\n')
    process = await hook(ctl_process, core, client, command, "--timeout", "5")
    run = await run_metrics(client)
    assert run["status"] == "succeeded"
    info = [i["message"] for i in step(run)["info"]]
    assert len(info) <= 51
    assert info[0] == "line 1" and info[-1] == "line 5000"
    notes = [m for m in info if "output lines left out" in m]
    assert len(notes) == 1 and notes[0].startswith(f"{5000 - len(info) + 1} of 5000 output lines left out")
    assert await stop(process, client) == 130


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
async def test_a_stop_signal_ends_the_running_script_unsubscribes_and_exits_at_once(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    command = script(tmp_path, "slow.sh", f"echo $$ > {tmp_path}/pid\nsleep 60\n")
    process = await hook(ctl_process, core, client, command, "--timeout", "30", "--kill-grace", "1")
    started = await client.run_workflow("metrics")
    pgid = await eventually(lambda: read_int(tmp_path / "pid"))
    assert group_alive(pgid)
    signalled = time.monotonic()
    assert await stop(process, client, sig) == code
    assert time.monotonic() - signalled < 1 + 1.5  # the kill grace, a second of output drain, a little more
    assert not group_alive(pgid)
    task = await client.task(started["task_id"])
    outcome = step(task)["subscribers"]["hook"]
    assert outcome["outcome"] in ("error", "gone"), outcome  # the answer and the unsubscribe race in the core
    if outcome["outcome"] == "error":
        assert outcome["error"] == f"interrupted (resotoctl got {sig.name})"
    assert task["status"] == "failed"
    log = process.log()
    assert any(entry.get("event") == "action_failed" for entry in log), log  # answered before unsubscribing
    assert any(entry.get("event") == "unsubscribed" for entry in log)


async def test_a_second_hook_with_the_same_id_fails_and_leaves_the_running_one_alone(
    core: CoreProcess, client: CoreClient, ctl_process: StartCtl, tmp_path: Path
) -> None:
    first = await hook(ctl_process, core, client, script(tmp_path, "ok.sh", "exit 0\n"), "--timeout", "5")
    await eventually(lambda: any(e["event"] == "subscriber_connected" for e in first.log()))
    other = script(tmp_path, "other.sh", "exit 0\n")
    second = await ctl(core.url, "subscribe", "post_generate_metrics", "--id", "hook", "--", str(other), within=10)
    assert second.code == 1, second
    assert second.stderr.strip().splitlines() == [
        "Error: subscriber id 'hook' is already connected (another hook running?)"
    ]
    registered = await client.subscriber("hook")
    assert registered is not None and set(registered.subscriptions) == {STEP}
    run = await run_metrics(client)
    assert run["status"] == "succeeded" and step(run)["subscribers"]["hook"]["outcome"] == "done"
    assert await stop(first, client) == 130


async def test_a_hook_that_loses_its_id_before_connecting_fails_and_leaves_the_winner_alone(
    core: CoreProcess, client: CoreClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two hooks started at once with one id: both register, then the other one connects first.
    winner = ActionSubscriber(core.url, "hook", [Subscription(message_type=STEP)])
    register = subscribe_command.register

    async def register_then_lose_the_race(c: CoreClient, sid: str, subscriptions: Sequence[Subscription]) -> None:
        await register(c, sid, subscriptions)
        winner.start()
        await asyncio.wait_for(winner.wait_connected(), 10)

    monkeypatch.setattr(subscribe_command, "register", register_then_lose_the_race)
    options = SubscribeOptions((STEP,), "hook", ("true",), timeout=5)
    try:
        with pytest.raises(CtlError, match=r"'hook' is already connected: .*\(another hook running\?\)"):
            await asyncio.wait_for(subscribe_command.serve(Ctl(Connection(resotocore_uri=core.url)), options), 10)
        registered = await client.subscriber("hook")
        assert registered is not None and set(registered.subscriptions) == {STEP}  # the winner's, untouched
        assert winner.connected
    finally:
        await winner.close()


@pytest.mark.parametrize("kill_grace", [0, 0.5, 1, 5, 299.5, 300])
def test_the_largest_timeout_makes_the_cores_largest_subscription_timeout(kill_grace: float) -> None:
    largest = max_timeout(kill_grace)
    assert subscription_timeout(largest, kill_grace) == MAX_TIMEOUT_SECONDS
    assert subscription_timeout(largest + 1, kill_grace) > MAX_TIMEOUT_SECONDS


async def test_a_timeout_the_core_would_refuse_is_a_usage_error(core: CoreProcess, client: CoreClient) -> None:
    """--timeout plus --kill-grace plus the margin must stay within the core's limit: checked before registering,
    naming the flags and the largest --timeout, instead of the core's 400 about a number never typed."""
    command = ("--", "true")
    default_grace, no_grace = await asyncio.gather(
        ctl(core.url, "subscribe", STEP, "--id", "hook", "--timeout", str(MAX_TIMEOUT_SECONDS), *command),
        ctl(core.url, "subscribe", STEP, "--id", "hook", "--timeout", "604795", "--kill-grace", "0", *command),
    )
    assert default_grace.code == 2, default_grace
    assert "--timeout 604800 with --kill-grace 5 is too long" in default_grace.stderr
    assert "with --kill-grace 5, --timeout is at most 604789" in default_grace.stderr
    assert no_grace.code == 2, no_grace
    assert "with --kill-grace 0, --timeout is at most 604794" in no_grace.stderr
    assert await client.subscriber("hook") is None
    help_text = " ".join((await ctl(core.url, "subscribe", "--help")).stdout.split())
    assert "at most 604800 s: --timeout is at most 604789 with the default --kill-grace" in help_text


async def test_the_largest_timeout_is_registered(core: CoreProcess, client: CoreClient, ctl_process: StartCtl) -> None:
    process = await hook(ctl_process, core, client, Path("true"), "--timeout", "604794", "--kill-grace", "0")
    registered = await client.subscriber("hook")
    assert registered is not None and registered.subscriptions[STEP].timeout == MAX_TIMEOUT_SECONDS
    assert await stop(process, client) == 130

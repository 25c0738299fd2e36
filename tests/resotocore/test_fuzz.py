"""Random and mutated frames against a live core: it never crashes, never changes a run on invalid
input, closes the offending socket with a reason, and keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resotocore.app import create_app
from resotocore.config import CoreConfig
from resotocore.core import CORE, Core
from resotolib.protocol import Action, ProtocolError, parse_message
from tests.support import FakeClock

T = TypeVar("T")

TASK = "00000000-0000-0000-0000-000000000000"
VALID = [
    {"kind": "action_done", "message_type": "collect", "data": {"task": TASK, "step": "collect"}},
    {"kind": "action_error", "message_type": "collect", "data": {"task": TASK, "step": "collect", "error": "x"}},
    {"kind": "action_info", "message_type": "collect",
     "data": {"task": TASK, "step": "collect", "level": "info", "message": "m"}},
    {"kind": "action_progress", "message_type": "collect", "data": {"task": TASK, "step": "collect", "context": [],
     "progress": {"kind": "progress", "name": "n", "current": 1, "total": 2}, "at": "2024-01-01T00:00:00Z"}},
    {"kind": "event", "message_type": "something_happened", "data": {"a": 1}},
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    frame: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    target = frame if draw(st.booleans()) else frame.get("data", frame)
    keys = sorted(target)
    match draw(st.integers(0, 3)):
        case 0 if keys:
            del target[draw(st.sampled_from(keys))]
        case 1 if keys:
            target[draw(st.sampled_from(keys))] = draw(json_values)
        case 2:
            target[draw(st.text(max_size=8))] = draw(json_values)
        case _:
            frame["kind"] = draw(st.sampled_from(["action", "authorization", "", "ACTION_DONE", "event", "x"]))
    text = json.dumps(frame)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=3)) + text[cut:]
    return text


frames = st.one_of(
    mutated(),
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.sampled_from(VALID).map(json.dumps),
)


def invalid(frame: str) -> bool:
    if not frame.strip():
        return False  # a blank frame is skipped
    try:
        return isinstance(parse_message(frame), Action)
    except ProtocolError:
        return True


async def expect_close(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is WSMsgType.CLOSE, msg
    assert ws.close_code == WSCloseCode.POLICY_VIOLATION
    reason = str(msg.extra or "")
    assert reason
    return reason


async def send_and_check(session: aiohttp.ClientSession, url: str, frame: str) -> None:
    async with session.ws_connect(url) as ws:
        await ws.send_str(frame)
        if invalid(frame):
            await expect_close(ws)
        else:  # still open and still reading: a following broken frame is what closes it
            await ws.send_str("{")
            assert "malformed JSON" in await expect_close(ws)


class LiveCore:
    """A core on loopback, served by an event loop in a thread of its own, so that a synchronous
    property-based test can talk to it example after example."""

    def __init__(self, config: CoreConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = create_app(config, FakeClock())
        self.runner = web.AppRunner(self.app, access_log=None)
        self.url = self.run(self._start())
        self.session = self.run(self._session())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    @property
    def core(self) -> Core:
        return self.app[CORE]

    async def _stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCore]:
    live = LiveCore(CoreConfig(data_dir=tmp_path_factory.mktemp("fuzz"), port=0))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def waiting_run(live: LiveCore) -> Iterator[tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], str]]:
    """A run waiting for the subscriber 'worker', which is connected and not answering yet."""

    async def setup() -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any], str]:
        for sid, wait in (("worker", "true"), ("fuzzer", "false")):
            params = {"wait_for_completion": wait}
            async with live.session.post(f"{live.url}/subscriber/{sid}/collect", params=params) as r:
                assert r.status == 200
        worker = await live.session.ws_connect(f"{live.url}/subscriber/worker/handle")
        async with live.session.post(f"{live.url}/workflows/collect/run") as r:
            task_id = (await r.json())["task_id"]
        action = await asyncio.wait_for(worker.receive_json(), 5)
        return worker, action, task_id

    yield live.run(setup())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames, channel=st.sampled_from(["/subscriber/fuzzer/handle", "/events"]))
def test_random_and_mutated_frames(live: LiveCore, waiting_run: Any, frame: str, channel: str) -> None:
    _, _, task_id = waiting_run
    before = live.run(live.core.store.run(task_id))
    live.run(send_and_check(live.session, live.url + channel, frame))
    assert live.run(live.core.store.run(task_id)) == before


def test_after_the_fuzzing_the_core_still_serves_the_worker(live: LiveCore, waiting_run: Any) -> None:
    worker, action, task_id = waiting_run

    async def finish() -> dict[str, Any]:
        async with live.session.get(f"{live.url}/system/ping") as r:
            assert r.status == 200
        data = {"task": action["data"]["task"], "step": action["data"]["step"]}
        await worker.send_json({"kind": "action_done", "message_type": "collect", "data": data})
        for _ in range(100):
            async with live.session.get(f"{live.url}/tasks/{task_id}") as r:
                run: dict[str, Any] = await r.json()
            if run["status"] != "running":
                return run
            await asyncio.sleep(0.02)
        return run

    assert live.run(finish())["status"] == "succeeded"
    live.run(worker.close())

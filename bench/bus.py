"""Action bus benchmark: the core's action round trip against a bare aiohttp websocket echo.

Run it with ``python bench/bus.py``. Everything is measured in one run, one process and one event
loop, over real loopback TCP, so the ratios compare like with like on the same machine.

How it is measured
------------------
The servers and clients of every kind being compared are up at the same time, and the measurement
goes in turns: in each turn one short block of each kind, in an order that rotates from turn to
turn. Blocks of one turn take about as long as each other (15-40 ms with 1 and 10 clients, 200-300
ms with 100). A ratio is the median over the turns of (core block / bare block of the same turn):
blocks of one turn run on a machine in the same state. On a shared virtual machine the same bare
round took 122 µs in some seconds and 200-250 µs in others, and one long measurement of each side
after the other gave ratios that differed by 2x between two runs of the script.

What is measured
----------------
* **bare echo** -- an aiohttp server whose websocket handler echoes every text frame. One round:
  each of N clients sends one JSON frame shaped like an action and reads its echo. That is one frame
  each way per client and nothing else: the floor of any websocket bus built on aiohttp.
* **core, one action round trip** -- the real core app (``create_app``, SQLite in a temporary
  directory) served by ``AppRunner``/``TCPSite``. A workflow of STEPS steps sends the action
  ``bench`` to N subscribers, registered over HTTP like Resoto's client does and connected on
  ``/subscriber/{id}/handle``. One round trip: the core emits the action of step k, each subscriber
  answers ``action_done``, the step completes (its state is committed) and the core emits the action
  of step k+1. The subscribers note when each action arrives; the round trip is the time from the
  last arrival of step 2 to the last arrival of step STEPS, divided by STEPS - 2 (a block: the median
  over one or two runs). That is a mean over the steps of a run where a bare block is a median of
  rounds, so a pause (a garbage collection, a checkpoint) counts against the core only.
  Again one frame each way per subscriber, so core/bare is the price of the core itself: state
  machine, persisting every change, parsing and validating frames, the event bus.
* **core, whole run** -- the default 12-step ``collect_and_cleanup`` workflow with 10 no-op
  subscribers subscribed to all 12 message types, against 13 bare 10-client rounds.
* **push echo** -- the bare aiohttp server the other way round: it sends one action-shaped frame to
  each of N clients, each client answers from its own task with the no-op subscriber code of the core
  rounds, and a round ends when every answer is in. That is the direction and the client code of the
  core's round trip; the echo's clients send and read in one coroutine, without a task wake-up per
  client, which makes the echo 14-34% faster here (more with more clients). The targets are judged
  against the echo, as the issue names it; the push rows are shown beside it.
* **durable push** -- the push echo with the least a durable core does per step: before each round
  the server commits one row, the frame it is about to send, to a SQLite file in the core's store's
  mode (WAL, ``synchronous=NORMAL``, ``BEGIN IMMEDIATE`` ... ``COMMIT``), and it parses every answer
  (``json.loads``). No state machine, no routing, no events, and no checkpoints at all (the core
  copies its log in a thread every 500 commits): a floor for any core that stores every change
  before it sends, not a target. Its table shows how much of the 1.5 the targets allow that floor
  takes already; a third table compares the core with it (the core's cost beyond that floor).
* **the same round trips across processes** -- the echo server and the core each run in a process of
  their own (``--serve echo|core``, both up during the whole measurement, the one not measured idle),
  the clients in this one, as in a deployment where the worker is not the core. The clients measure
  both sides the same way as above; runs are started with ``POST /workflows/bench/run`` outside the
  measured window. These rows are shown next to the in-process ones, which stay the figures the
  targets are judged by.

Why the comparison is fair
--------------------------
* A run starts with an in-process call of ``Engine.trigger`` and ends when an in-process bus
  listener sees ``task_end``. Starting with ``POST /workflows/{id}/run`` or watching ``/events`` would
  add an HTTP request or an extra websocket hop that the bare round does not have. For the whole-run
  figure the trigger itself (the start transition and its commit) is core work, so it is counted.
* Clients do the same work on both sides: ``json.loads`` the frame they get, ``json.dumps`` the one
  they send. Both servers use the same websocket settings (heartbeat, largest frame), both client
  sides one ``aiohttp.ClientSession`` without a connection limit.
* The bench workflow uses ``on_surpass=parallel`` so a trigger always starts a run (it never waits
  or is skipped); rounds are sequential anyway, so runs never overlap. The 12-step workflow is the
  default one without its triggers, so no cron or event starts an extra run during the measurement.
* A warm-up turn is not counted. Every round has a timeout, and the whole script takes under a minute.

Targets (from the issue): one action round trip adds no more than 50% to the bare round trip
(core/bare <= 1.5), and a 12-step run takes no longer than 1.5 times 13 bare 10-client rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web

from resotocore.app import create_app
from resotocore.bus.message_bus import Listener
from resotocore.config import CoreConfig
from resotocore.core import CORE, Core
from resotocore.workflow.model import OnSurpass, Step, Workflow, default_workflows
from resotolib.logs import setup_logging

BENCH = "bench"
STEPS = 22
CLIENT_COUNTS = (1, 10, 100)
TURNS = {1: 40, 10: 30, 100: 15}
BLOCK_ROUNDS = {1: 100, 10: 20, 100: 30}
BLOCK_STEP_RUNS = {1: 2, 10: 1, 100: 1}
REMOTE_TURNS = {1: 20, 10: 15, 100: 10}
RUN_SUBSCRIBERS = 10
RUN_TURNS = 30
BLOCK_RUNS = 2
RUN_BARE_ROUNDS = 13
TARGET_ACTION = 1.5
TARGET_RUN = 1.5
ROUND_TIMEOUT = 10.0
HEARTBEAT = 30.0
MAX_FRAME = 4 * 1024 * 1024

Round = Callable[[], Awaitable[None]]
Block = Callable[[], Awaitable[float]]
"""Measures one block of rounds: seconds per round, the block's median."""
Ws = aiohttp.ClientWebSocketResponse


class BenchError(RuntimeError):
    """A round did not go as a round should (not started, wrong task, failed run)."""


# ---- measuring -------------------------------------------------------------------------------------


async def measure(one_round: Round, rounds: int) -> float:
    """Median seconds per round."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with asyncio.timeout(ROUND_TIMEOUT):
            await one_round()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def block_of(one_round: Round, rounds: int) -> Block:
    return lambda: measure(one_round, rounds)


async def interleaved(blocks: dict[str, Block], turns: int) -> dict[str, list[float]]:
    """Measure one block of each kind per turn, `turns` times, after one warm-up turn that is not counted.
    The order rotates from turn to turn, so no kind always goes first. Index i of every list is turn i."""
    names = list(blocks)
    for name in names:
        await blocks[name]()
    figures: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(turns):
        first = turn % len(names)
        for name in names[first:] + names[:first]:
            figures[name].append(await blocks[name]())
    return figures


# ---- servers and clients ---------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1, any free port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=1.0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@asynccontextmanager
async def websockets(session: aiohttp.ClientSession, urls: Sequence[str]) -> AsyncIterator[list[Ws]]:
    """Open one websocket per URL; close them all on exit."""
    sockets: list[Ws] = []
    try:
        for url in urls:
            sockets.append(await session.ws_connect(url))
        yield sockets
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# ---- the bare baseline -----------------------------------------------------------------------------


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


def echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/echo", echo)
    return app


async def bare_round(sockets: Sequence[Ws]) -> None:
    """Every client sends one action-sized JSON frame, then every client reads its echo."""
    task = str(uuid.uuid4())
    for ws in sockets:
        await ws.send_str(json.dumps({"kind": "action", "message_type": BENCH, "data": {"task": task, "step": BENCH}}))
    for ws in sockets:
        json.loads(await ws.receive_str())


@asynccontextmanager
async def echo_rounds(url: str, clients: int, rounds: int) -> AsyncIterator[Block]:
    """`clients` clients of the echo at `url`; yields a block of `rounds` bare rounds."""
    async with client_session() as session, websockets(session, [f"{url}/echo"] * clients) as sockets:
        yield block_of(lambda: bare_round(sockets), rounds)


@asynccontextmanager
async def bare_echo(clients: int, rounds: int) -> AsyncIterator[Block]:
    async with serving(echo_app()) as url, echo_rounds(url, clients, rounds) as block:
        yield block


# ---- the bare baseline the other way round: the server sends, every client answers -----------------


@dataclass
class Pushes:
    """The server side of the push echo: its sockets, and the answers the current round still awaits."""

    clients: int
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    awaited: int = 0
    done: asyncio.Future[None] | None = None
    db: sqlite3.Connection | None = None
    """With a database: the durable push (each round committed before it is sent, each answer parsed)."""


PUSHES = web.AppKey("pushes", Pushes)


async def push_socket(request: web.Request) -> web.WebSocketResponse:
    pushes = request.app[PUSHES]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    pushes.sockets.append(ws)
    if len(pushes.sockets) == pushes.clients:
        pushes.connected.set()
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if pushes.db is not None:
                json.loads(msg.data)
            pushes.awaited -= 1
            if pushes.awaited == 0 and pushes.done is not None:
                pushes.done.set_result(None)
    return ws


async def push_round(pushes: Pushes) -> None:
    """The server sends one action-sized frame to every client and waits until every client answered."""
    pushes.awaited, pushes.done = len(pushes.sockets), asyncio.get_running_loop().create_future()
    frame = json.dumps({"kind": "action", "message_type": BENCH, "data": {"task": str(uuid.uuid4()), "step": BENCH}})
    if pushes.db is not None:
        pushes.db.execute("BEGIN IMMEDIATE")
        pushes.db.execute("INSERT OR REPLACE INTO steps (step, doc) VALUES (?, ?)", (BENCH, frame))
        pushes.db.execute("COMMIT")
    for ws in pushes.sockets:
        await ws.send_str(frame)
    await pushes.done


@contextmanager
def durable_file() -> Iterator[sqlite3.Connection]:
    """A SQLite file in a temporary directory in the core's store's mode, never checkpointed (see the docstring)."""
    with tempfile.TemporaryDirectory(prefix="resotocore-bench-") as directory:
        db = sqlite3.connect(Path(directory) / "push.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("CREATE TABLE steps (step TEXT PRIMARY KEY, doc TEXT NOT NULL)")
            yield db
        finally:
            db.close()


@asynccontextmanager
async def bare_push(clients: int, rounds: int, durable: bool = False) -> AsyncIterator[Block]:
    """`clients` clients answering like the core's no-op subscribers; yields a block of `rounds` push rounds
    (`durable`: of the durable push)."""
    with durable_file() if durable else nullcontext() as db:
        async with push_rounds(Pushes(clients, db=db), rounds) as block:
            yield block


@asynccontextmanager
async def push_rounds(pushes: Pushes, rounds: int) -> AsyncIterator[Block]:
    app = web.Application()
    app[PUSHES] = pushes
    app.router.add_get("/push", push_socket)
    clients = pushes.clients
    async with serving(app) as url, client_session() as session:
        async with websockets(session, [f"{url}/push"] * clients) as sockets:
            answering = [asyncio.create_task(answer_actions(ws, {})) for ws in sockets]
            try:
                async with asyncio.timeout(ROUND_TIMEOUT):
                    await pushes.connected.wait()  # the server side registers a socket after its handshake
                yield block_of(lambda: push_round(pushes), rounds)
            finally:
                for task in answering:
                    task.cancel()
                await asyncio.gather(*answering, return_exceptions=True)


# ---- the core --------------------------------------------------------------------------------------


def bench_workflow() -> Workflow:
    steps = tuple(Step(name=f"{BENCH}-{i:02d}", message_type=BENCH) for i in range(STEPS))
    return Workflow(id=BENCH, name="Bench", steps=steps, on_surpass=OnSurpass.parallel)


def collect_and_cleanup() -> Workflow:
    """The default 12-step workflow, without triggers so nothing but the benchmark starts it."""
    workflow = next(w for w in default_workflows() if w.id == "collect_and_cleanup")
    return workflow.model_copy(update={"triggers": ()})


@asynccontextmanager
async def running_core(workflows: Sequence[Workflow]) -> AsyncIterator[tuple[Core, str]]:
    """A real core on loopback with its database in a temporary directory; yield it and its URL."""
    with tempfile.TemporaryDirectory(prefix="resotocore-bench-") as data_dir:
        config = CoreConfig(data_dir=Path(data_dir), port=0, heartbeat=HEARTBEAT, max_frame_size=MAX_FRAME)
        app = create_app(config, workflows=workflows)
        async with serving(app) as url:
            yield app[CORE], url


async def register(session: aiohttp.ClientSession, url: str, sid: str, message_types: Sequence[str]) -> str:
    """Subscribe `sid` to every message type like Resoto's client does; return its action channel URL."""
    params = {"timeout": "60", "wait_for_completion": "true"}
    for message_type in message_types:
        async with session.post(f"{url}/subscriber/{sid}/{message_type}", params=params) as response:
            response.raise_for_status()
    return f"{url}/subscriber/{sid}/handle"


async def answer_actions(ws: Ws, arrivals: dict[str, float]) -> None:
    """A no-op subscriber: note when each step's action arrives, answer it with action_done."""
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            return
        arrived = time.perf_counter()
        action = json.loads(msg.data)
        arrivals[action["data"]["step"]] = max(arrivals.get(action["data"]["step"], 0.0), arrived)
        data = {"task": action["data"]["task"], "step": action["data"]["step"]}
        await ws.send_str(json.dumps({"kind": "action_done", "message_type": action["message_type"], "data": data}))


@asynccontextmanager
async def subscribers(
    session: aiohttp.ClientSession, url: str, count: int, message_types: Sequence[str]
) -> AsyncIterator[dict[str, float]]:
    """`count` connected no-op subscribers, each subscribed to every message type; yields arrival times."""
    channels = [await register(session, url, f"bench-{i:03d}", message_types) for i in range(count)]
    arrivals: dict[str, float] = {}
    async with websockets(session, channels) as sockets:
        tasks = [asyncio.create_task(answer_actions(ws, arrivals)) for ws in sockets]
        try:
            yield arrivals
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def core_round(core: Core, workflow_id: str, ends: Listener) -> None:
    """Trigger one run and wait for its task_end on the bus."""
    result = await core.engine.trigger(workflow_id, BENCH)
    frame = await ends.next()
    if result.status != "started" or frame is None:
        raise BenchError(f"run not started or bus closed: {result}")
    end = json.loads(frame)["data"]
    if end["task"] != result.task_id or not end["success"]:
        raise BenchError(f"unexpected end of run: {end}")


def step_block(arrivals: dict[str, float], runs: int, one_run: Round) -> Block:
    """A block of `runs` runs of the bench workflow: the median over runs of the seconds per step from the
    action of its second step to that of its last (`arrivals`: when each step's action arrived)."""
    steps = bench_workflow().steps
    second, last = steps[1].name, steps[-1].name

    async def block() -> float:
        per_step = []
        for _ in range(runs):
            arrivals.clear()
            async with asyncio.timeout(ROUND_TIMEOUT):
                await one_run()
            per_step.append((arrivals[last] - arrivals[second]) / (STEPS - 2))
        return statistics.median(per_step)

    return block


@asynccontextmanager
async def core_round_trips(clients: int, runs: int) -> AsyncIterator[Block]:
    """A core with `clients` subscribers; yields a block of `runs` runs of STEPS steps, measuring the median
    time from one step's action to the next step's action."""
    workflow = bench_workflow()
    async with AsyncExitStack() as stack:
        core, url = await stack.enter_async_context(running_core([workflow]))
        session = await stack.enter_async_context(client_session())
        arrivals = await stack.enter_async_context(subscribers(session, url, clients, [BENCH]))
        ends = await stack.enter_async_context(core.bus.subscribe(BENCH, ["task_end"]))
        yield step_block(arrivals, runs, lambda: core_round(core, workflow.id, ends))


@asynccontextmanager
async def core_round_trips_remote(url: str, clients: int, runs: int) -> AsyncIterator[Block]:
    """As ``core_round_trips``, against a core in another process; each run is started over HTTP."""
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(client_session())
        arrivals = await stack.enter_async_context(subscribers(session, url, clients, [BENCH]))
        ends = await stack.enter_async_context(session.ws_connect(f"{url}/events?show=task_end"))

        async def one_run() -> None:
            async with session.post(f"{url}/workflows/{BENCH}/run") as response:
                task_id = (await response.json())["task_id"]
            end = json.loads(await ends.receive_str())["data"]
            if end["task"] != task_id or not end["success"] or len(arrivals) != STEPS:
                raise BenchError(f"unexpected end of run {task_id}: {end}")

        yield step_block(arrivals, runs, one_run)


@asynccontextmanager
async def server_process(kind: str) -> AsyncIterator[str]:
    """Run ``--serve kind`` in a child process; yield its URL; stop it by closing its stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", kind, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        if not url:
            raise BenchError(f"the {kind} server process did not start")
        yield url
    finally:
        proc.stdin.close()
        await proc.wait()


async def serve(kind: str) -> None:
    """Child process: serve the echo app or a core with the bench workflow until stdin closes."""
    async with AsyncExitStack() as stack:
        if kind == "echo":
            url = await stack.enter_async_context(serving(echo_app()))
        else:
            _, url = await stack.enter_async_context(running_core([bench_workflow()]))
        print(url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@asynccontextmanager
async def core_runs(workflow: Workflow, clients: int, runs: int) -> AsyncIterator[Block]:
    """A core with `clients` subscribers to every message type of `workflow`; yields a block of `runs` runs."""
    message_types = sorted({step.message_type for step in workflow.steps})
    async with AsyncExitStack() as stack:
        core, url = await stack.enter_async_context(running_core([workflow]))
        session = await stack.enter_async_context(client_session())
        await stack.enter_async_context(subscribers(session, url, clients, message_types))
        ends = await stack.enter_async_context(core.bus.subscribe(BENCH, ["task_end"]))
        yield block_of(lambda: core_round(core, workflow.id, ends), runs)


# ---- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One comparison: the medians of both sides' blocks, and the median ratio of blocks of the same turn."""

    name: str
    bare: float
    core: float
    ratio: float
    target: float

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def compare(name: str, bare: Sequence[float], core: Sequence[float], target: float) -> Row:
    ratios = [c / b for b, c in zip(bare, core, strict=True)]
    return Row(name, statistics.median(bare), statistics.median(core), statistics.median(ratios), target)


def duration(seconds: float) -> str:
    return f"{seconds * 1e6:8.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:8.2f} ms"


def print_table(rows: Sequence[Row], baseline: str = "bare", measured: str = "core", targets: bool = True) -> None:
    header = f"{'measurement':<40} {baseline:>11} {measured:>11} {f'{measured}/{baseline}':>12}"
    print(header + (f" {'target':>8}  met" if targets else ""))
    print("-" * (len(header) + (14 if targets else 0)))
    for row in rows:
        line = f"{row.name:<40} {duration(row.bare)} {duration(row.core)} {row.ratio:12.2f}"
        print(line + (f" {row.target:>8.2f}  {'yes' if row.met else 'NO'}" if targets else ""))


def times(figures: Sequence[float], factor: int) -> list[float]:
    return [f * factor for f in figures]


async def main() -> None:
    started = time.perf_counter()
    actions: list[Row] = []
    pushes: list[Row] = []
    floors: list[Row] = []
    beyond: list[Row] = []
    for n in CLIENT_COUNTS:
        async with AsyncExitStack() as stack:
            blocks = {
                "echo": await stack.enter_async_context(bare_echo(n, BLOCK_ROUNDS[n])),
                "push": await stack.enter_async_context(bare_push(n, BLOCK_ROUNDS[n])),
                "durable": await stack.enter_async_context(bare_push(n, BLOCK_ROUNDS[n], durable=True)),
                "core": await stack.enter_async_context(core_round_trips(n, BLOCK_STEP_RUNS[n])),
            }
            f = await interleaved(blocks, TURNS[n])
        actions.append(compare(f"action round trip, {n} subscriber(s)", f["echo"], f["core"], TARGET_ACTION))
        pushes.append(compare(f"vs push echo, {n} subscriber(s)", f["push"], f["core"], TARGET_ACTION))
        floors.append(compare(f"durable push, {n} client(s)", f["echo"], f["durable"], TARGET_ACTION))
        beyond.append(compare(f"core vs durable push, {n} subscriber(s)", f["durable"], f["core"], TARGET_ACTION))
    async with AsyncExitStack() as stack:
        blocks = {
            "echo": await stack.enter_async_context(bare_echo(RUN_SUBSCRIBERS, BLOCK_ROUNDS[RUN_SUBSCRIBERS])),
            "push": await stack.enter_async_context(bare_push(RUN_SUBSCRIBERS, BLOCK_ROUNDS[RUN_SUBSCRIBERS])),
            "run": await stack.enter_async_context(core_runs(collect_and_cleanup(), RUN_SUBSCRIBERS, BLOCK_RUNS)),
        }
        f = await interleaved(blocks, RUN_TURNS)
    whole = f"12-step run, {RUN_SUBSCRIBERS} subscribers"
    actions.append(compare(whole, times(f["echo"], RUN_BARE_ROUNDS), f["run"], TARGET_RUN))
    pushes.append(compare(f"vs push echo, {whole}", times(f["push"], RUN_BARE_ROUNDS), f["run"], TARGET_RUN))
    remote: list[Row] = []
    for n in CLIENT_COUNTS:
        async with AsyncExitStack() as stack:
            echo_url = await stack.enter_async_context(server_process("echo"))
            core_url = await stack.enter_async_context(server_process("core"))
            blocks = {
                "echo": await stack.enter_async_context(echo_rounds(echo_url, n, BLOCK_ROUNDS[n])),
                "core": await stack.enter_async_context(core_round_trips_remote(core_url, n, BLOCK_STEP_RUNS[n])),
            }
            f = await interleaved(blocks, REMOTE_TURNS[n])
        remote.append(compare(f"across processes, {n} subscriber(s)", f["echo"], f["core"], TARGET_ACTION))
    print_table(actions + pushes + remote)
    print("\nthe floor: the push echo committing each round to SQLite before sending it (see the docstring)")
    print_table(floors, measured="floor", targets=False)
    print("\nthe core against that floor: what the core costs beyond storing each step and parsing each answer")
    print_table(beyond, baseline="floor", targets=False)
    turns = ", ".join(f"{n}: {TURNS[n]}" for n in CLIENT_COUNTS)
    rounds = ", ".join(f"{n}: {BLOCK_ROUNDS[n]}" for n in CLIENT_COUNTS)
    runs = ", ".join(f"{n}: {BLOCK_STEP_RUNS[n]}" for n in CLIENT_COUNTS)
    print(f"\nturns per client count ({turns}), each one block of every kind, in rotating order; a block is")
    print(f"the median of bare rounds ({rounds}) or of per-step round trips over runs of {STEPS} steps ({runs});")
    print(f"12-step runs: {RUN_TURNS} turns of {BLOCK_RUNS} runs; bare, core: medians of all blocks;")
    print("core/bare: median of the ratios of the blocks of one turn (the machine's speed changes between turns)")
    print(f"bare = aiohttp websocket echo, same process and loop; 12-step bare = {RUN_BARE_ROUNDS} x 10-client round")
    print("push echo: the server sends, each client answers from its own task, as the core's subscribers do")
    print("durable push: the push echo, each round committed to SQLite before it is sent, each answer parsed")
    print("across processes: the echo server and the core each in a child process, the clients in this one")
    print(f"targets: core/bare <= {TARGET_ACTION} per action, <= {TARGET_RUN} per 12-step run")
    print(f"took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=["echo", "core"], help="internal: serve one side in this process")
    args = parser.parse_args()
    setup_logging("console", "warning")
    asyncio.run(serve(args.serve) if args.serve else main())

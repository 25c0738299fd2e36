"""The storage contract: every backend must pass these (SQLite always; more backends join the fixture)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web

from resotocore.db import sqlite as sqlite_store
from resotocore.db.arango_conn import http_url
from resotocore.db.arango_store import ArangoStore, micros
from resotocore.db.sqlite import SqliteStore
from resotocore.db.store import Changes, QueuedRun, Store, StoreError
from resotocore.workflow.codec import run_json, step_json
from resotocore.workflow.machine import Run, RunStatus, StepRun
from resotolib.protocol import Subscriber, SubscriberId, Subscription, TaskId
from tests.support import arango_test_database, needs_arango

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("arangodb", marks=needs_arango)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        backend = SqliteStore(tmp_path / "store.db")
        yield backend
        await backend.close()
        return
    with arango_test_database() as conn:
        arango = await ArangoStore.open(conn)
        yield arango
        await arango.close()


def run(task_id: str, workflow: str = "wf", minutes: int = 0, status: RunStatus = RunStatus.running) -> Run:
    return Run(
        id=TaskId(task_id), workflow_id=workflow, trigger="manual", status=status,
        created_at=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


async def test_runs_are_upserted_and_listed(store: Store) -> None:
    await store.commit(Changes(runs=[run("a", minutes=0), run("b", minutes=1), run("c", "other", minutes=2)]))
    await store.commit(Changes(runs=[run("a", minutes=0, status=RunStatus.succeeded)]))
    assert [r.id for r in await store.running()] == ["b", "c"]
    a = await store.run(TaskId("a"))
    assert a is not None and a.status is RunStatus.succeeded
    assert await store.run(TaskId("zzz")) is None
    page = await store.history("wf", limit=10, offset=0)
    assert [r.id for r in page.runs] == ["b", "a"] and page.total == 2
    page = await store.history("wf", limit=1, offset=1)
    assert [r.id for r in page.runs] == ["a"] and page.total == 2


async def test_history_keeps_insertion_order_for_equal_times(store: Store) -> None:
    for name in ("z", "a", "m"):
        await store.commit(Changes(runs=[run(name)]))
    await store.commit(Changes(runs=[run("z", status=RunStatus.failed)]))  # an update keeps the place
    assert [r.id for r in (await store.history("wf", 10, 0)).runs] == ["m", "a", "z"]


async def test_subscribers_queue_and_trigger_times(store: Store) -> None:
    sub = Subscriber(id=SubscriberId("w"), subscriptions={"collect": Subscription(message_type="collect", timeout=5)})
    queued = QueuedRun("wf", "schedule", T0)
    await store.commit(Changes(subscribers=[sub], queued=[queued], trigger_times={"wf/0": T0}))
    assert await store.subscribers() == [sub]
    assert await store.queue() == [queued]
    assert await store.trigger_times() == {"wf/0": T0}
    later = T0 + timedelta(hours=1)
    await store.commit(Changes(deleted_subscribers=[SubscriberId("w")], dequeued=["wf"], trigger_times={"wf/0": later}))
    assert await store.subscribers() == []
    assert await store.queue() == []
    assert await store.trigger_times() == {"wf/0": later}


async def test_a_failing_commit_writes_nothing(store: Store) -> None:
    broken = Changes(runs=[run("a")], trigger_times={"wf/0": "not a time"})  # type: ignore[dict-item]
    with pytest.raises(AttributeError):
        await store.commit(broken)
    assert await store.running() == []
    assert await store.trigger_times() == {}
    await store.commit(Changes(runs=[run("b")]))  # the store is still usable
    assert [r.id for r in await store.running()] == ["b"]


async def test_sqlite_write_errors_become_store_errors(tmp_path: Path) -> None:
    backend = SqliteStore(tmp_path / "ro.db")
    await backend.commit(Changes(runs=[run("a")]))
    backend._db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="cannot write"):
        await backend.commit(Changes(runs=[run("b")]))
    assert [r.id for r in await backend.running()] == ["a"]
    await backend.close()


def _step(name: str) -> StepRun:
    return StepRun(name=name, message_type=name, started_at=T0, deadline=T0)


async def test_a_run_resumed_after_a_restart_keeps_its_steps(tmp_path: Path) -> None:
    # after a restart the store knows a running run only from its file: its next commit must find
    # where the run's steps are, and not take another run's
    first = replace(run("a"), steps=(_step("s0"),))
    backend = SqliteStore(tmp_path / "store.db")
    await backend.commit(Changes(runs=[run("older")]))
    await backend.commit(Changes(runs=[first]))
    await backend.close()
    backend = SqliteStore(tmp_path / "store.db")
    (resumed,) = [r for r in await backend.running() if r.id == "a"]
    changes = Changes()
    changes.add_run(replace(resumed, steps=(*resumed.steps, _step("s1"))), 1)
    await backend.commit(changes)
    stored = await backend.run(TaskId("a"))
    assert stored is not None and [s.name for s in stored.steps] == ["s0", "s1"]
    older = await backend.run(TaskId("older"))
    assert older is not None and older.steps == ()
    await backend.close()


LAYOUT_1 = """
CREATE TABLE subscribers (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE runs (
    id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX runs_by_workflow ON runs (workflow_id, created_at DESC);
CREATE INDEX runs_by_status ON runs (status);
CREATE TABLE wait_queue (workflow_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, queued_at TEXT NOT NULL);
CREATE TABLE trigger_times (key TEXT PRIMARY KEY, fired_at TEXT NOT NULL);
"""
"""The tables of the first layout: a run's row holds the run with its steps (no user_version)."""

LAYOUT_2_STEPS = """
CREATE TABLE run_steps (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
"""
"""What the second layout added: steps as rows keyed by the run's id; the run's row holds no steps."""


def _old_file(path: Path, runs: list[tuple[Run, bool]], step_rows: bool) -> None:
    """A file of an earlier layout holding `runs`, each (run, stored with its steps in its row)."""
    db = sqlite3.connect(path)
    db.executescript(LAYOUT_1 + (LAYOUT_2_STEPS if step_rows else ""))
    for r, embedded in runs:
        doc = run_json(r) if embedded else run_json(r, steps=False)
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (r.id, r.workflow_id, r.status.value, r.created_at.isoformat(), doc),
        )
        if not embedded:
            steps = [(r.id, i, step_json(s)) for i, s in enumerate(r.steps)]
            db.executemany("INSERT INTO run_steps VALUES (?, ?, ?)", steps)
    db.execute("INSERT INTO trigger_times VALUES ('wf/0', ?)", (T0.isoformat(),))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("embedded", "step_rows", "numbered"),
    [
        # the first layout rewrote a run's row on every change: its order is the runs' creation time
        pytest.param([True, True, True], False, ["m-third", "z-first", "a-second"], id="first layout"),
        pytest.param([False, False, False], True, ["z-first", "a-second", "m-third"], id="second layout"),
        pytest.param([True, False, True], True, ["z-first", "a-second", "m-third"], id="first used by the second"),
    ],
)
async def test_a_database_of_an_earlier_layout_is_upgraded_with_everything_in_it(
    tmp_path: Path, embedded: list[bool], step_rows: bool, numbered: list[str]
) -> None:
    path = tmp_path / "old.db"
    runs = [
        replace(run("z-first", minutes=1, status=RunStatus.succeeded), steps=(_step("s0"), _step("s1"))),
        replace(run("a-second", minutes=1), steps=(_step("t0"),)),  # same time: kept in the order stored
        run("m-third", minutes=0),
    ]
    _old_file(path, list(zip(runs, embedded, strict=True)), step_rows)

    backend = SqliteStore(path)
    assert [await backend.run(r.id) for r in runs] == runs
    assert [r.id async for batch in backend.every_run() for r in batch] == numbered
    assert [r.id for r in (await backend.history("wf", 10, 0)).runs] == ["a-second", "z-first", "m-third"]
    assert await backend.trigger_times() == {"wf/0": T0}
    changes = Changes()
    changes.add_run(replace(runs[1], steps=(*runs[1].steps, _step("t1"))), 1)
    await backend.commit(changes)
    assert [s.name for s in (await backend.running())[-1].steps] == ["t0", "t1"]
    await backend.close()
    check = sqlite3.connect(path)
    tables = {name for (name,) in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert check.execute("PRAGMA user_version").fetchone() == (sqlite_store.SCHEMA_VERSION,)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    assert tables == {"subscribers", "runs", "run_steps", "wait_queue", "trigger_times"}


async def test_a_run_with_steps_in_its_row_and_as_rows_keeps_the_rows(tmp_path: Path) -> None:
    # the second layout read a run's step rows and ignored what its row held: that is what it went on with
    path = tmp_path / "old.db"
    shown = replace(run("a"), steps=(_step("t0"),))
    _old_file(path, [(replace(shown, steps=(_step("s0"), _step("s1"), _step("s2"))), True)], step_rows=True)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO run_steps VALUES (?, 0, ?)", (shown.id, step_json(shown.steps[0])))
    db.commit()
    db.close()
    backend = SqliteStore(path)
    assert await backend.run(shown.id) == shown
    await backend.close()


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("PRAGMA user_version = 99", "it was written by a newer version (layout 99, this one knows 3)"),
        ("CREATE TABLE runs (id TEXT PRIMARY KEY, doc TEXT)", "its tables are of no layout this version knows"),
        (
            "CREATE TABLE run_steps (run_id TEXT, idx INTEGER, doc TEXT)",
            "its tables are of no layout this version knows",
        ),
    ],
)
async def test_a_database_of_an_unknown_layout_is_refused_and_left_as_it_is(
    tmp_path: Path, script: str, reason: str
) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=re.escape(f"cannot open the database {path}: {reason}")):
        SqliteStore(path)
    assert path.read_bytes() == before


async def test_a_change_of_the_run_alone_is_stored(store: Store) -> None:
    # SQLite writes the run's header only when one of its fields changed; every field must count.
    a = run("a")
    await store.commit(Changes(runs=[a]))
    ended = replace(a, status=RunStatus.failed, ended_at=T0 + timedelta(minutes=1), error="step x failed")
    for changed in (replace(a, trigger="other"), replace(a, error="e"), ended):
        await store.commit(Changes(runs=[changed]))
        assert await store.run(TaskId("a")) == changed


async def test_a_checkpoint_lets_the_log_start_again_while_commits_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits go on while the log is copied; afterwards the log must start from its beginning again,
    or it grows with every commit for as long as the core runs."""
    copy = sqlite_store._checkpoint

    def slow_copy(path: Path, mode: Literal["PASSIVE", "TRUNCATE"]) -> None:
        time.sleep(0.05)  # commits happen meanwhile, for sure
        copy(path, mode)

    monkeypatch.setattr(sqlite_store, "_checkpoint", slow_copy)
    backend = SqliteStore(tmp_path / "s.db", checkpoint_every=10**9)

    async def commits_until(done: asyncio.Task[None]) -> int:
        count = 0
        while not done.done():
            await backend.commit(Changes(runs=[run(f"r{count}")]))
            count += 1
            await asyncio.sleep(0.001)
        return count

    checkpoint = asyncio.create_task(backend.checkpoint())
    count = await commits_until(checkpoint)
    await backend.commit(Changes(runs=[run("after")]))
    frames = _log_frames(tmp_path / "s.db")
    # one commit writes a few pages (each a frame); the log of the commits before would be far longer
    assert count >= 20 and 0 < frames < count, f"{frames} frames in the log after {count} commits and a checkpoint"
    assert len(await backend.running()) == count + 1
    await backend.close()


async def test_checkpoints_asked_for_at_once_are_one_and_commits_carry_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = sqlite_store._checkpoint
    passes: list[str] = []

    def slow_copy(path: Path, mode: Literal["PASSIVE", "TRUNCATE"]) -> None:
        passes.append(mode)
        time.sleep(0.02)
        copy(path, mode)

    monkeypatch.setattr(sqlite_store, "_checkpoint", slow_copy)
    backend = SqliteStore(tmp_path / "s.db", checkpoint_every=10**9)
    checkpoints = asyncio.gather(backend.checkpoint(), backend.checkpoint())
    for name in ("a", "b", "c"):
        await asyncio.wait_for(backend.commit(Changes(runs=[run(name)])), 5)
        await asyncio.sleep(0.02)
    await asyncio.wait_for(checkpoints, 5)
    await asyncio.wait_for(backend.commit(Changes(runs=[run("d")])), 5)
    assert passes == ["PASSIVE", "PASSIVE"]
    assert [r.id for r in await backend.running()] == ["a", "b", "c", "d"]
    await backend.close()


def _log_frames(path: Path) -> int:
    """Frames in the write-ahead log now (read from another connection, as a checkpoint reports them)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        frames: int = db.execute("PRAGMA wal_checkpoint(NOOP)").fetchone()[1]
        return frames
    finally:
        db.close()


async def test_only_changed_steps_are_written_and_all_are_read_back(store: Store) -> None:
    first = replace(run("a"), steps=(_step("s0"), _step("s1")))
    changes = Changes()
    changes.add_run(first)
    await store.commit(changes)
    # a later state whose step 0 is declared unchanged: what is stored for it stays
    later = replace(first, steps=(_step("ignored"), _step("s1b"), _step("s2")))
    changes = Changes()
    changes.add_run(later, 1)
    await store.commit(changes)
    loaded = await store.run(TaskId("a"))
    assert loaded is not None
    assert [s.name for s in loaded.steps] == ["s0", "s1b", "s2"]


async def test_every_run_lists_runs_in_the_order_first_stored(store: Store) -> None:
    for name, minutes in (("late", 5), ("early", 0), ("middle", 2)):
        await store.commit(Changes(runs=[run(name, minutes=minutes)]))
    await store.commit(Changes(runs=[run("late", minutes=5, status=RunStatus.succeeded)]))
    listed = [r async for batch in store.every_run() for r in batch]
    assert [(r.id, r.status) for r in listed] == [
        ("late", RunStatus.succeeded), ("early", RunStatus.running), ("middle", RunStatus.running)
    ]  # fmt: skip


async def test_one_commit_may_add_and_remove_the_same_keys(store: Store) -> None:
    sub = Subscriber(id=SubscriberId("w"), subscriptions={})
    await store.commit(Changes(subscribers=[sub], deleted_subscribers=[sub.id], queued=[QueuedRun("wf", "t", T0)],
                               dequeued=["wf"]))  # fmt: skip
    assert await store.subscribers() == [] and await store.queue() == []
    odd = Subscriber(id=SubscriberId("a/b c?ü"), subscriptions={})  # any text is a valid id
    await store.commit(Changes(subscribers=[odd], runs=[run("task/ü 1")]))
    assert await store.subscribers() == [odd]
    assert await store.run(TaskId("task/ü 1")) is not None


# ---- ArangoDB: what can be checked without a server ----------------------------------------------


def test_urls_and_sort_keys() -> None:
    assert http_url("arangodb://db:8529") == "http://db:8529"
    assert http_url("arangodbs://db:8529/") == "https://db:8529"
    assert http_url("https://a:1,https://b:2") == "https://a:1,https://b:2"
    assert micros(T0) < micros(T0 + timedelta(microseconds=1)) == micros((T0 + timedelta(microseconds=1)).replace(
        tzinfo=None))  # fmt: skip


async def refusal(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resotocore", "--port", "0", "--log-format", "json", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_an_unreachable_server_is_refused_in_one_line(tmp_path: Path, unused_tcp_port: int) -> None:
    code, stderr = await refusal("--data-dir", str(tmp_path), "--db", f"arangodb://127.0.0.1:{unused_tcp_port}")
    assert code == 1 and "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert "startup_failed" in line and f"cannot reach ArangoDB at http://127.0.0.1:{unused_tcp_port}" in line


async def test_wrong_credentials_are_refused_in_one_line(tmp_path: Path, aiohttp_server: Any) -> None:
    """A stand-in that answers like ArangoDB does to a wrong password (401 with an error body)."""
    seen: list[str] = []

    async def unauthorized(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = {"error": True, "errorNum": 11, "errorMessage": "not authorized to execute this request", "code": 401}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unauthorized)
    server = await aiohttp_server(app)
    url = f"arangodb://127.0.0.1:{server.port}"
    code, stderr = await refusal("--data-dir", str(tmp_path), "--db", url, "--db-user", "me", "--db-password", "bad")
    assert code == 1 and "Traceback" not in stderr and "bad" not in stderr
    (line,) = stderr.strip().splitlines()
    assert f"ArangoDB at http://127.0.0.1:{server.port} refused the credentials of user 'me'" in line
    assert seen and all(path.startswith("/_db/resoto/") for path in seen)

"""The embedded default backend: one SQLite file in WAL mode under the data directory.

Writes are small (one run state, one subscriber) and run on the event loop thread: with WAL and
``synchronous=NORMAL`` a commit does not wait for the disk and still survives a killed process.
Checkpoints (which do wait for the disk) run in a thread of their own, so the loop never waits for
an fsync. ``durability="full"`` syncs every commit so it also survives power loss.

A checkpoint must copy *every* frame of the write-ahead log, or the next commit cannot start the log
from its beginning and the log grows without end (and appending to a file is twice as slow as
rewriting it). Copying in a thread while commits go on always leaves the frames written meanwhile,
so a checkpoint has two passes: the bulk while commits go on, then the few frames written meanwhile
while commits wait (the loop does not: it serves everything else).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog

from resotocore.db.store import Changes, QueuedRun, RunPage, StoreError
from resotocore.workflow.codec import load_run_json, run_json, step_json
from resotocore.workflow.machine import Run, RunStatus
from resotolib.protocol import Subscriber, TaskId

SCHEMA_VERSION = 3
"""The layout below (the third), kept in the file's user_version. Files of earlier versions have 0 there:
each run's row held its steps (the first layout), or the steps were rows keyed by the run's id (the
second), or both (a file of the first layout that the second went on using)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_steps (
    run INTEGER NOT NULL, idx INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (run, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS wait_queue (workflow_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, queued_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trigger_times (key TEXT PRIMARY KEY, fired_at TEXT NOT NULL);
"""
"""Step rows are keyed by the run's number (``seq``, given in the order runs are first stored), not by
its random id: the rows a commit writes are then the last ones of the table, one page, instead of a
page anywhere in it (a commit took about twice as long with the id as the key)."""

FROM_EARLIER_LAYOUTS = (
    """
CREATE TABLE IF NOT EXISTS run_steps (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
DROP INDEX IF EXISTS runs_by_workflow;
DROP INDEX IF EXISTS runs_by_status;
ALTER TABLE runs RENAME TO runs_old;
ALTER TABLE run_steps RENAME TO run_steps_old;
"""
    + SCHEMA
    + """
INSERT INTO runs (id, workflow_id, status, created_at, doc)
    SELECT id, workflow_id, status, created_at, json_remove(doc, '$.steps') FROM runs_old ORDER BY {order};
INSERT INTO run_steps (run, idx, doc)
    SELECT runs.seq, step.key, step.value FROM runs_old JOIN runs ON runs.id = runs_old.id,
        json_each(runs_old.doc, '$.steps') AS step
    WHERE NOT EXISTS (SELECT 1 FROM run_steps_old WHERE run_steps_old.run_id = runs_old.id);
INSERT INTO run_steps (run, idx, doc)
    SELECT runs.seq, run_steps_old.idx, run_steps_old.doc FROM run_steps_old
        JOIN runs ON runs.id = run_steps_old.run_id;
DROP TABLE run_steps_old;
DROP TABLE runs_old;
"""
)
"""Brings a file of an earlier layout to this one. A run's steps are its step rows if it has any (what
the second layout read), else the steps its row held. Runs are numbered in the order of their rows
(`order`): the order they were first stored in the second layout; in the first, which rewrote a row on
every change, by creation time."""

EARLIER_RUNS = {"id", "workflow_id", "status", "created_at", "doc"}
EARLIER_STEPS = {"run_id", "idx", "doc"}
"""The columns of the runs and run_steps tables in the earlier layouts."""

log = structlog.get_logger(__name__)

Durability = Literal["normal", "full"]
EXPORT_CHUNK = 200
CHECKPOINT_EVERY = 500
"""Commits between two background checkpoints of the write-ahead log."""


def open_database(
    path: Path, pragmas: list[str], schema: str = "", prepare: Callable[[sqlite3.Connection], None] | None = None
) -> sqlite3.Connection:
    """A connection to `path`, made ready by `prepare` (first: a file it refuses stays as it is), with
    `pragmas` set and `schema` created.

    SQLite reports a database it cannot use (a directory in its place, a file that is no database, no
    permission) only when it is first read or written; that is a StoreError naming the file, so the core
    stops at start-up with one clear line instead of a traceback.
    """
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if prepare is not None:
            prepare(db)
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        if schema:
            db.executescript(schema)
        return db
    except (sqlite3.Error, StoreError) as e:
        if db is not None:
            db.close()
        raise StoreError(f"cannot open the database {path}: {e}") from None


class SqliteStore:
    def __init__(self, path: Path, durability: Durability = "normal", checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._background_checkpoints = durability == "normal"
        pragmas = [
            "journal_mode=WAL",
            f"synchronous={'FULL' if durability == 'full' else 'NORMAL'}",
            "busy_timeout=5000",
            *(["wal_autocheckpoint=0"] if self._background_checkpoints else []),
        ]
        self._db = open_database(path, pragmas, prepare=lambda db: _prepare(db, path))
        self._checkpoint_every = checkpoint_every
        self._commits = 0
        self._headers: dict[str, tuple[object, ...]] = {}  # fields of the last stored header of each running run
        self._seqs: dict[str, int] = {}  # the number of each running run (its steps' key)
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._checkpoint: asyncio.Task[None] | None = None
        self._commits_wait: asyncio.Future[None] | None = None  # set during a checkpoint's second pass

    async def commit(self, changes: Changes) -> None:
        while self._commits_wait is not None:
            await asyncio.shield(self._commits_wait)
        headers = {run.id: _header_fields(run) for run in changes.runs}
        changed: list[tuple[str, str, str, str, str]] = [
            (run.id, run.workflow_id, run.status.value, run.created_at.isoformat(), run_json(run, steps=False))
            for run in changes.runs
            if self._headers.get(run.id) != headers[run.id]  # most answers change only a step
        ]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = _write(self._db, changes, changed, self._seqs)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot write to {self.path}: {e}") from e
        for run in changes.runs:
            if run.status is RunStatus.running:
                self._headers[run.id], self._seqs[run.id] = headers[run.id], seqs[run.id]
            else:
                self._headers.pop(run.id, None)
                self._seqs.pop(run.id, None)
        self._commits += 1
        if self._background_checkpoints and self._commits % self._checkpoint_every == 0:
            self._start_checkpoint()

    async def checkpoint(self) -> None:
        """Copy the whole write-ahead log into the database file in the checkpoint thread, in two passes
        (see the module's docstring); the next commit then starts the log from its beginning. A call
        while a checkpoint runs waits for that one."""
        await asyncio.shield(self._start_checkpoint())

    def _start_checkpoint(self) -> asyncio.Task[None]:
        if self._checkpoint is None:
            self._checkpoint = asyncio.get_running_loop().create_task(self._copy_log())
        return self._checkpoint

    async def _copy_log(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._checkpointer, _checkpoint, self.path, "PASSIVE")
            self._commits_wait = loop.create_future()
            await loop.run_in_executor(self._checkpointer, _checkpoint, self.path, "PASSIVE")
        except sqlite3.Error as e:  # the next checkpoint tries again; commits are not affected
            log.warning("checkpoint_failed", path=str(self.path), error=str(e))
        finally:
            if self._commits_wait is not None:
                self._commits_wait.set_result(None)
                self._commits_wait = None
            self._checkpoint = None

    async def subscribers(self) -> list[Subscriber]:
        rows = self._db.execute("SELECT doc FROM subscribers ORDER BY id").fetchall()
        return [Subscriber.model_validate_json(doc) for (doc,) in rows]

    async def running(self) -> list[Run]:
        rows = self._db.execute(
            "SELECT seq, doc FROM runs WHERE status = ? ORDER BY created_at, seq", (RunStatus.running.value,)
        ).fetchall()
        return [self._load(seq, doc) for seq, doc in rows]

    async def run(self, task_id: TaskId) -> Run | None:
        row = self._db.execute("SELECT seq, doc FROM runs WHERE id = ?", (task_id,)).fetchone()
        return self._load(*row) if row else None

    def _load(self, seq: int, header: str) -> Run:
        steps = self._db.execute("SELECT doc FROM run_steps WHERE run = ? ORDER BY idx", (seq,)).fetchall()
        return load_run_json(header[:-1] + ',"steps":[' + ",".join(doc for (doc,) in steps) + "]}")

    async def history(self, workflow_id: str, limit: int, offset: int) -> RunPage:
        rows = self._db.execute(
            "SELECT seq, doc FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
            (workflow_id, limit, offset),
        ).fetchall()
        (total,) = self._db.execute("SELECT count(*) FROM runs WHERE workflow_id = ?", (workflow_id,)).fetchone()
        return RunPage([self._load(seq, doc) for seq, doc in rows], total)

    async def every_run(self) -> AsyncIterator[list[Run]]:
        cursor = self._db.execute("SELECT seq, doc FROM runs ORDER BY seq")
        while rows := cursor.fetchmany(EXPORT_CHUNK):
            yield [self._load(seq, doc) for seq, doc in rows]

    async def queue(self) -> list[QueuedRun]:
        rows = self._db.execute("SELECT workflow_id, trigger, queued_at FROM wait_queue ORDER BY queued_at").fetchall()
        return [QueuedRun(w, t, datetime.fromisoformat(q)) for w, t, q in rows]

    async def trigger_times(self) -> dict[str, datetime]:
        rows = self._db.execute("SELECT key, fired_at FROM trigger_times").fetchall()
        return {k: datetime.fromisoformat(v) for k, v in rows}

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        self._checkpointer.shutdown(wait=True)
        await asyncio.to_thread(_checkpoint, self.path, "TRUNCATE")
        self._db.close()


def _header_fields(run: Run) -> tuple[object, ...]:
    """What the stored header (the run without its steps, which are rows of their own) is made of."""
    return run.workflow_id, run.trigger, run.status, run.created_at, run.ended_at, run.error


def _checkpoint(path: Path, mode: Literal["PASSIVE", "TRUNCATE"]) -> None:
    """Copy the write-ahead log into the database file (with fsync), on a connection of its own."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(f"PRAGMA wal_checkpoint({mode})")
    finally:
        db.close()


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new database, or bring those of an earlier layout to this one, in one transaction."""
    if _layout(db) == SCHEMA_VERSION:
        return
    db.execute("PRAGMA busy_timeout=5000")  # another process may be preparing the file right now
    db.execute("BEGIN IMMEDIATE")
    upgraded = False
    try:
        layout = _layout(db)  # again: another process may have prepared the file meanwhile
        if layout > SCHEMA_VERSION:
            raise StoreError(f"it was written by a newer version (layout {layout}, this one knows {SCHEMA_VERSION})")
        if layout < SCHEMA_VERSION:
            runs = {column for (_, column, *_) in db.execute("PRAGMA table_info(runs)")}
            steps = {column for (_, column, *_) in db.execute("PRAGMA table_info(run_steps)")}
            upgraded = bool(runs)
            if (runs or steps) and (runs != EARLIER_RUNS or steps not in (EARLIER_STEPS, set())):
                raise StoreError("its tables are of no layout this version knows")
            order = "rowid" if steps else "created_at, rowid"
            for statement in (FROM_EARLIER_LAYOUTS.format(order=order) if upgraded else SCHEMA).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if upgraded:
        log.info("database_upgraded", path=str(path), layout=SCHEMA_VERSION)


def _layout(db: sqlite3.Connection) -> int:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version)


def _write(
    db: sqlite3.Connection, changes: Changes, headers: list[tuple[str, str, str, str, str]], known: dict[str, int]
) -> dict[str, int]:
    """Every statement of one commit; the caller holds the transaction. Returns the number of each run
    written (`known` holds those of the runs written before)."""
    if headers:
        db.executemany(
            "INSERT INTO runs (id, workflow_id, status, created_at, doc) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
            headers,
        )
    seqs: dict[str, int] = {}
    for run in changes.runs:
        seq = known.get(run.id)
        if seq is None:  # a new run, or one stored before a restart (no RETURNING: SQLite before 3.35)
            (seq,) = db.execute("SELECT seq FROM runs WHERE id = ?", (run.id,)).fetchone()
        seqs[run.id] = seq
    steps = [
        (seqs[r.id], idx, step_json(r.steps[idx]))
        for r in changes.runs
        for idx in range(changes.steps_from.get(r.id, 0), len(r.steps))
    ]
    if steps:
        db.executemany("INSERT OR REPLACE INTO run_steps (run, idx, doc) VALUES (?, ?, ?)", steps)
    if changes.subscribers:
        subscribers = [(s.id, s.model_dump_json()) for s in changes.subscribers]
        db.executemany("INSERT OR REPLACE INTO subscribers (id, doc) VALUES (?, ?)", subscribers)
    if changes.deleted_subscribers:
        db.executemany("DELETE FROM subscribers WHERE id = ?", [(i,) for i in changes.deleted_subscribers])
    if changes.queued:
        queued = [(q.workflow_id, q.trigger, q.queued_at.isoformat()) for q in changes.queued]
        db.executemany("INSERT OR REPLACE INTO wait_queue (workflow_id, trigger, queued_at) VALUES (?, ?, ?)", queued)
    if changes.dequeued:
        db.executemany("DELETE FROM wait_queue WHERE workflow_id = ?", [(w,) for w in changes.dequeued])
    if changes.trigger_times:
        fired = [(k, v.isoformat()) for k, v in changes.trigger_times.items()]
        db.executemany("INSERT OR REPLACE INTO trigger_times (key, fired_at) VALUES (?, ?)", fired)
    return seqs

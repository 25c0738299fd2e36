"""The embedded default backend: one SQLite file in WAL mode under the data directory.

Writes are small (one run state, one subscriber) and run on the event loop thread: with WAL and
``synchronous=NORMAL`` a commit does not wait for the disk and still survives a killed process.
``durability="full"`` syncs every commit so it also survives power loss.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Literal

from resotocore.db.store import Changes, QueuedRun, RunPage, StoreError
from resotocore.workflow.machine import Run, RunStatus
from resotolib.protocol import Subscriber, TaskId

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS wait_queue (workflow_id TEXT PRIMARY KEY, trigger TEXT NOT NULL, queued_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trigger_times (key TEXT PRIMARY KEY, fired_at TEXT NOT NULL);
"""

Durability = Literal["normal", "full"]


class SqliteStore:
    def __init__(self, path: Path, durability: Durability = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    async def commit(self, changes: Changes) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if changes.runs:
                    db.executemany(
                        "INSERT INTO runs (id, workflow_id, status, created_at, doc) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
                        [
                            (r.id, r.workflow_id, r.status, r.created_at.isoformat(), r.model_dump_json())
                            for r in changes.runs
                        ],
                    )
                if changes.subscribers:
                    db.executemany(
                        "INSERT OR REPLACE INTO subscribers (id, doc) VALUES (?, ?)",
                        [(s.id, s.model_dump_json()) for s in changes.subscribers],
                    )
                if changes.deleted_subscribers:
                    db.executemany("DELETE FROM subscribers WHERE id = ?", [(i,) for i in changes.deleted_subscribers])
                if changes.queued:
                    db.executemany(
                        "INSERT OR REPLACE INTO wait_queue (workflow_id, trigger, queued_at) VALUES (?, ?, ?)",
                        [(q.workflow_id, q.trigger, q.queued_at.isoformat()) for q in changes.queued],
                    )
                if changes.dequeued:
                    db.executemany("DELETE FROM wait_queue WHERE workflow_id = ?", [(w,) for w in changes.dequeued])
                if changes.trigger_times:
                    db.executemany(
                        "INSERT OR REPLACE INTO trigger_times (key, fired_at) VALUES (?, ?)",
                        [(k, v.isoformat()) for k, v in changes.trigger_times.items()],
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"cannot write to {self.path}: {e}") from e

    async def subscribers(self) -> list[Subscriber]:
        rows = self._db.execute("SELECT doc FROM subscribers ORDER BY id").fetchall()
        return [Subscriber.model_validate_json(doc) for (doc,) in rows]

    async def running(self) -> list[Run]:
        rows = self._db.execute(
            "SELECT doc FROM runs WHERE status = ? ORDER BY created_at, rowid", (RunStatus.running.value,)
        ).fetchall()
        return [Run.model_validate_json(doc) for (doc,) in rows]

    async def run(self, task_id: TaskId) -> Run | None:
        row = self._db.execute("SELECT doc FROM runs WHERE id = ?", (task_id,)).fetchone()
        return Run.model_validate_json(row[0]) if row else None

    async def history(self, workflow_id: str, limit: int, offset: int) -> RunPage:
        rows = self._db.execute(
            "SELECT doc FROM runs WHERE workflow_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (workflow_id, limit, offset),
        ).fetchall()
        (total,) = self._db.execute("SELECT count(*) FROM runs WHERE workflow_id = ?", (workflow_id,)).fetchone()
        return RunPage([Run.model_validate_json(doc) for (doc,) in rows], total)

    async def queue(self) -> list[QueuedRun]:
        rows = self._db.execute("SELECT workflow_id, trigger, queued_at FROM wait_queue ORDER BY queued_at").fetchall()
        return [QueuedRun(w, t, datetime.fromisoformat(q)) for w, t, q in rows]

    async def trigger_times(self) -> dict[str, datetime]:
        rows = self._db.execute("SELECT key, fired_at FROM trigger_times").fetchall()
        return {k: datetime.fromisoformat(v) for k, v in rows}

    async def close(self) -> None:
        self._db.close()

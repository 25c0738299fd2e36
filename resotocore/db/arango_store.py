"""The workflow state on ArangoDB: subscribers, runs and their steps, wait queue, trigger times.

One document per subscriber, run header, run step, queued run and trigger time; keys are hashes of
the ids (an id may hold characters a key may not). A commit is one stream transaction. Runs carry a
``seq`` number given when first stored, the counterpart of SQLite's rowid: it keeps the history in
insertion order for equal start times. One core writes to one database at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog

from resotocore.db.arango_conn import ArangoConnection, Collection, Index, Transaction
from resotocore.db.graph_docs import doc_key
from resotocore.db.store import Changes, QueuedRun, RunPage
from resotocore.graph import aql
from resotocore.workflow.codec import load_run, run_dict, step_dict
from resotocore.workflow.machine import Run, RunStatus
from resotolib.protocol import Subscriber, TaskId

log = structlog.get_logger(__name__)
T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLLECTIONS = [
    Collection(aql.SUBSCRIBERS),
    Collection(aql.RUNS, indexes=(Index(("status", "created_us", "seq")), Index(("workflow_id", "created_us", "seq")))),
    Collection(aql.STEPS, indexes=(Index(("run_id", "idx")),)),
    Collection(aql.QUEUE),
    Collection(aql.TRIGGERS),
]
EXPORT_BATCH = 200


def micros(at: datetime) -> int:
    """Microseconds since the epoch: a sort key that is exact (naive times count as UTC)."""
    return ((at if at.tzinfo else at.replace(tzinfo=UTC)) - EPOCH) // timedelta(microseconds=1)


class ArangoStore:
    def __init__(self, conn: ArangoConnection) -> None:
        self._conn = conn
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="arango-store")
        self._write_lock = asyncio.Lock()
        self._seq = 0

    @classmethod
    async def open(cls, conn: ArangoConnection) -> ArangoStore:
        store = cls(conn)
        await store._run(lambda: conn.ensure(COLLECTIONS))
        (last,) = await store._run(lambda: conn.query(aql.last_seq()))
        store._seq = int(last or 0)
        return store

    async def commit(self, changes: Changes) -> None:
        statements = self._statements(changes)  # everything that can fail does so before any I/O
        if not statements:
            return
        collections = sorted({collection for collection, _ in statements})

        def write(txn: Transaction) -> None:
            for _, statement in statements:
                txn.query(statement)

        async with self._write_lock:
            await self._run(lambda: self._in_transaction(collections, write))

    def _statements(self, changes: Changes) -> list[tuple[str, aql.Aql]]:
        """(collection, statement) of every write of one commit."""
        statements: list[tuple[str, aql.Aql]] = []
        if changes.runs:
            statements.append((aql.RUNS, aql.upsert_runs([self._run_doc(r) for r in changes.runs])))
            steps = [
                {"_key": f"{doc_key(r.id)}-{idx}", "run_id": r.id, "idx": idx,
                 "step": step_dict(r.steps[idx])}
                for r in changes.runs
                for idx in range(changes.steps_from.get(r.id, 0), len(r.steps))
            ]  # fmt: skip
            if steps:
                statements.append((aql.STEPS, aql.replace_docs(aql.STEPS, steps)))
        deleted = set(changes.deleted_subscribers)
        if upserted := [s for s in changes.subscribers if s.id not in deleted]:
            docs = [{"_key": doc_key(s.id), "id": s.id, "doc": s.model_dump(mode="json")} for s in upserted]
            statements.append((aql.SUBSCRIBERS, aql.replace_docs(aql.SUBSCRIBERS, docs)))
        if deleted:
            keys = [doc_key(i) for i in sorted(deleted)]
            statements.append((aql.SUBSCRIBERS, aql.remove_keys(aql.SUBSCRIBERS, keys)))
        dequeued = set(changes.dequeued)
        if queued := [q for q in changes.queued if q.workflow_id not in dequeued]:
            docs = [
                {"_key": doc_key(q.workflow_id), "workflow_id": q.workflow_id, "trigger": q.trigger,
                 "queued_at": q.queued_at.isoformat()}
                for q in queued
            ]  # fmt: skip
            statements.append((aql.QUEUE, aql.replace_docs(aql.QUEUE, docs)))
        if dequeued:
            keys = [doc_key(w) for w in sorted(dequeued)]
            statements.append((aql.QUEUE, aql.remove_keys(aql.QUEUE, keys)))
        if changes.trigger_times:
            docs = [{"_key": doc_key(k), "key": k, "fired_at": v.isoformat()} for k, v in changes.trigger_times.items()]
            statements.append((aql.TRIGGERS, aql.replace_docs(aql.TRIGGERS, docs)))
        return statements

    def _run_doc(self, run: Run) -> dict[str, Any]:
        self._seq += 1
        return {
            "_key": doc_key(run.id), "id": run.id, "workflow_id": run.workflow_id, "status": run.status.value,
            "created_us": micros(run.created_at), "seq": self._seq,
            "header": run_dict(run, steps=False),
        }  # fmt: skip

    def _in_transaction(self, collections: list[str], write: Callable[[Transaction], None]) -> None:
        with self._conn.transaction(collections) as txn:
            write(txn)

    async def subscribers(self) -> list[Subscriber]:
        docs = await self._run(lambda: self._conn.query(aql.all_docs(aql.SUBSCRIBERS)))
        return sorted((Subscriber.model_validate(d["doc"]) for d in docs), key=lambda s: s.id)

    async def running(self) -> list[Run]:
        return await self._run(lambda: self._load(self._conn.query(aql.running(RunStatus.running.value))))

    async def run(self, task_id: TaskId) -> Run | None:
        runs = await self._run(lambda: self._load(self._conn.query(aql.run_by_key(doc_key(task_id)))))
        return runs[0] if runs else None

    async def history(self, workflow_id: str, limit: int, offset: int) -> RunPage:
        def read() -> RunPage:
            runs = self._load(self._conn.query(aql.history(workflow_id, limit, offset)))
            (total,) = self._conn.query(aql.history_total(workflow_id))
            return RunPage(runs, int(total))

        return await self._run(read)

    async def every_run(self) -> AsyncIterator[list[Run]]:
        batches = self._conn.batches(aql.every_run(), EXPORT_BATCH)
        while batch := await self._run(lambda: self._load(next(batches, []))):
            yield batch

    def _load(self, headers: list[Any]) -> list[Run]:
        if not headers:
            return []
        steps: dict[str, list[Any]] = {}
        for run_id, step in self._conn.query(aql.steps_of([h["id"] for h in headers])):
            steps.setdefault(run_id, []).append(step)
        return [load_run({**h["header"], "steps": steps.get(h["id"], [])}) for h in headers]

    async def queue(self) -> list[QueuedRun]:
        docs = await self._run(lambda: self._conn.query(aql.all_docs(aql.QUEUE)))
        queued = [QueuedRun(d["workflow_id"], d["trigger"], datetime.fromisoformat(d["queued_at"])) for d in docs]
        return sorted(queued, key=lambda q: q.queued_at.isoformat())

    async def trigger_times(self) -> dict[str, datetime]:
        docs = await self._run(lambda: self._conn.query(aql.all_docs(aql.TRIGGERS)))
        return {d["key"]: datetime.fromisoformat(d["fired_at"]) for d in docs}

    async def close(self) -> None:
        async with self._write_lock:
            self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

"""Fires time triggers: one timer per next fire time, and catch-up for slots missed while down.

Slots missed while the core was down are counted at start-up and announced with the event
`workflow_runs_missed`; the bus retains it for STARTUP_GRACE, the time in which workers and observers
reconnect after a restart, so every observer connecting in that time receives it once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog

from resotocore.bus.subscribers import STARTUP_GRACE
from resotocore.clock import Clock, Timer
from resotocore.db.store import Changes, Store
from resotocore.scheduler.cron import Schedule, count_missed
from resotocore.workflow.engine import Engine

log = structlog.get_logger(__name__)

CatchUp = Literal["latest", "none"]


@dataclass(frozen=True)
class _Entry:
    workflow_id: str
    key: str
    schedule: Schedule


class Scheduler:
    def __init__(self, engine: Engine, store: Store, clock: Clock, catch_up: CatchUp = "latest") -> None:
        self._engine = engine
        self._store = store
        self._clock = clock
        self._catch_up = catch_up
        self._entries = [
            _Entry(w.id, f"{w.id}/{index}", Schedule(t.cron, t.timezone))
            for w in engine.workflows.values()
            for index, t in enumerate(w.time_triggers)
        ]
        self._next: dict[str, datetime] = {}
        self._timers: dict[str, Timer] = {}
        self.missed: dict[str, int] = {}

    def next_fire(self, workflow_id: str) -> datetime | None:
        times = [self._next[e.key] for e in self._entries if e.workflow_id == workflow_id and e.key in self._next]
        return min(times, default=None)

    async def start(self) -> None:
        now = self._clock.now()
        fired = await self._store.trigger_times()
        for entry in self._entries:
            last = fired.get(entry.key)
            if last is None:
                await self._store.commit(Changes(trigger_times={entry.key: now}))
            else:
                await self._catch_up_missed(entry, last, now)
            self._arm(entry, after=now)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def _catch_up_missed(self, entry: _Entry, last: datetime, now: datetime) -> None:
        # up to MAX_COUNTED_SLOTS take a second or two: count in a thread so the loop goes on serving
        missed, latest = await asyncio.to_thread(count_missed, entry.schedule, last, now)
        if not missed or latest is None:
            return
        self.missed[entry.workflow_id] = missed
        data = {
            "workflow": entry.workflow_id,
            "missed": missed,
            "since": last.isoformat(),
            "policy": self._catch_up,
        }
        log.warning("runs_missed", **data)
        self._engine.emit_event("workflow_runs_missed", data, retain_until=now + STARTUP_GRACE, key=entry.key)
        if self._catch_up == "latest":
            await self._engine.trigger(entry.workflow_id, f"catch-up:{missed} missed", fired={entry.key: latest})
        else:
            await self._store.commit(Changes(trigger_times={entry.key: latest}))

    def _arm(self, entry: _Entry, after: datetime) -> None:
        at = entry.schedule.next_fire(after)
        self._next[entry.key] = at
        self._timers[entry.key] = self._clock.call_at(at, lambda: self._engine.spawn(self._fire(entry, at)))

    async def _fire(self, entry: _Entry, slot: datetime) -> None:
        if self._clock.now() < slot:  # the timer ran early (clock adjusted): wait for the slot
            self._timers[entry.key] = self._clock.call_at(slot, lambda: self._engine.spawn(self._fire(entry, slot)))
            return
        try:
            await self._engine.trigger(entry.workflow_id, "schedule", fired={entry.key: slot})
        finally:
            self._arm(entry, after=max(slot, self._clock.now()))

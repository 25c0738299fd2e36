"""Workflow definitions: frozen data, no behaviour. The default workflows live here too."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class OnError(StrEnum):
    continue_ = "continue"
    stop = "stop"


class OnSurpass(StrEnum):
    skip = "skip"
    parallel = "parallel"
    replace_ = "replace"
    wait = "wait"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Step(_Frozen):
    """A perform-action step: send `message_type` to every subscriber and wait for their answers."""

    name: str
    message_type: str
    timeout: timedelta = timedelta(seconds=10)
    on_error: OnError = OnError.continue_


class TimeTrigger(_Frozen):
    kind: Literal["time"] = "time"
    cron: str
    timezone: str = "UTC"


class EventTrigger(_Frozen):
    kind: Literal["event"] = "event"
    message_type: str
    filter_data: dict[str, JsonValue] | None = None

    def matches(self, message_type: str, data: dict[str, JsonValue]) -> bool:
        if message_type != self.message_type:
            return False
        return all(data.get(key) == value for key, value in (self.filter_data or {}).items())


Trigger = Annotated[TimeTrigger | EventTrigger, Field(discriminator="kind")]


class Workflow(_Frozen):
    id: str
    name: str
    steps: tuple[Step, ...]
    triggers: tuple[Trigger, ...] = ()
    on_surpass: OnSurpass = OnSurpass.wait

    def step(self, index: int) -> Step:
        return self.steps[index]

    @property
    def time_triggers(self) -> tuple[TimeTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, TimeTrigger))

    @property
    def event_triggers(self) -> tuple[EventTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, EventTrigger))


PHASES = ("collect", "cleanup_plan", "cleanup", "generate_metrics")


def _steps(*phases: str) -> tuple[Step, ...]:
    return tuple(Step(name=n, message_type=n) for p in phases for n in (f"pre_{p}", p, f"post_{p}"))


def default_workflows(schedule: str = "0 * * * *", timezone: str = "UTC") -> tuple[Workflow, ...]:
    """The four workflows of Resoto: the hourly collect_and_cleanup and its three parts."""

    def workflow(wid: str, name: str, phases: tuple[str, ...], *extra: Trigger) -> Workflow:
        start = EventTrigger(message_type=f"start_{wid}_workflow")
        return Workflow(id=wid, name=name, steps=_steps(*phases), triggers=(*extra, start))

    return (
        workflow(
            "collect_and_cleanup",
            "Collect and cleanup",
            PHASES,
            TimeTrigger(cron=schedule, timezone=timezone),
        ),
        workflow("collect", "Collect", ("collect", "generate_metrics")),
        workflow("cleanup", "Cleanup", ("cleanup_plan", "cleanup", "generate_metrics")),
        workflow("metrics", "Metrics", ("generate_metrics",)),
    )

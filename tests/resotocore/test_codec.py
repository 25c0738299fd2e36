"""The hand-written step serialisation writes exactly what pydantic writes, for any step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from resotocore.workflow.codec import load_run_json, run_json, step_json
from resotocore.workflow.machine import InfoEntry, Outcome, Run, StepRun, SubscriberOutcome
from resotolib.protocol import SubscriberId, TaskId

zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones)
texts = st.text(max_size=20)  # any unicode: quotes, backslashes, control characters, surrogates excluded
ids = texts.map(SubscriberId)
outcomes = st.builds(SubscriberOutcome, outcome=st.sampled_from(Outcome), error=st.none() | texts, at=st.none() | times)
infos = st.builds(InfoEntry, subscriber_id=ids, level=texts, message=texts, at=times)
steps = st.builds(
    StepRun,
    name=texts,
    message_type=texts,
    started_at=times,
    deadline=times,
    ended_at=st.none() | times,
    success=st.none() | st.booleans(),
    subscribers=st.dictionaries(ids, outcomes, max_size=5),
    notified=st.lists(ids, max_size=5).map(tuple),
    info=st.lists(infos, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_step_json_is_what_pydantic_writes(step: StepRun) -> None:
    assert step_json(step) == TypeAdapter(StepRun).dump_json(step).decode()


@settings(max_examples=50, deadline=None)
@given(st.lists(steps, max_size=3))
def test_a_run_stored_as_header_and_step_rows_reads_back_whole(step_list: list[StepRun]) -> None:
    run = Run(id=TaskId("t"), workflow_id="wf", trigger="manual", created_at=datetime(2026, 1, 1, tzinfo=UTC),
              steps=tuple(step_list))  # fmt: skip
    header = run_json(run, steps=False)
    stored = header[:-1] + ',"steps":[' + ",".join(step_json(s) for s in step_list) + "]}"  # as SQLite reads it
    assert load_run_json(stored) == run

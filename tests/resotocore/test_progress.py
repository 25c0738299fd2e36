"""Merging the progress messages of one subscriber in one step (resotocore.workflow.progress)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from resotocore.workflow.progress import StepProgress
from resotolib.protocol import ActionProgressData, ProgressDone, ProgressTree, TaskId

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def part(
    name: str,
    current: int,
    *,
    step: str = "collect",
    context: list[str] | None = None,
    at: int = 0,
    path: list[str] | None = None,
) -> ActionProgressData:
    return ActionProgressData(
        task=TaskId("t"), step=step, context=context or [], at=AT + timedelta(seconds=at),
        progress=ProgressDone(name=name, current=current, total=10, path=path),
    )  # fmt: skip


def test_one_part_is_shown_as_it_came_and_the_latest_count_wins() -> None:
    progress = StepProgress()
    assert progress.merged() is None
    progress.add(part("acc1", 1, context=["aws"]))
    progress.add(latest := part("acc1", 4, context=["aws"], at=1))
    assert progress.merged() == latest and progress.parts == 1


def test_several_parts_become_one_tree_with_their_context_in_the_path() -> None:
    progress = StepProgress()
    progress.add(part("acc2", 10, context=["aws"]))
    progress.add(part("acc1", 3, context=["aws"], at=2))
    progress.add(part("eu-1", 7, context=["example"], at=1))
    merged = progress.merged()
    assert merged is not None and merged.at == AT + timedelta(seconds=1) and merged.context == []  # the last to arrive
    assert merged.progress == ProgressTree(
        name="collect",
        parts=[
            ProgressDone(name="acc1", current=3, total=10, path=["aws"]),
            ProgressDone(name="acc2", current=10, total=10, path=["aws"]),
            ProgressDone(name="eu-1", current=7, total=10, path=["example"]),
        ],
    )


def test_a_new_step_starts_afresh() -> None:
    progress = StepProgress()
    progress.add(part("acc1", 3))
    progress.add(part("acc2", 3))
    progress.add(latest := part("graph", 1, step="cleanup"))
    assert progress.merged() == latest and progress.parts == 1


def test_parts_are_bounded_and_the_stalest_goes_first() -> None:
    progress = StepProgress(max_parts=3)
    for name in ("a", "b", "c"):
        progress.add(part(name, 1))
    progress.add(part("a", 2))  # reported again: now the freshest
    progress.add(part("d", 1))
    merged = progress.merged()
    assert merged is not None and isinstance(merged.progress, ProgressTree)
    assert [(p.name, p.current) for p in merged.progress.parts if isinstance(p, ProgressDone)] == [
        ("a", 2), ("c", 1), ("d", 1)
    ]  # fmt: skip


def test_a_path_names_where_a_part_is_and_the_context_is_not_put_in_front_again() -> None:
    progress = StepProgress()  # Resoto's CoreFeedback sends its context as the path as well
    progress.add(part("acc1", 3, context=["aws"], path=["aws"]))
    progress.add(part("acc2", 4, context=["aws"], path=["aws"]))
    progress.add(part("acc1", 5, context=["aws"]))  # no path: the context says where; the same part
    merged = progress.merged()
    assert merged is not None and isinstance(merged.progress, ProgressTree)
    assert [(p.name, p.current, p.path) for p in merged.progress.parts if isinstance(p, ProgressDone)] == [
        ("acc1", 5, ["aws"]), ("acc2", 4, ["aws"])
    ]  # fmt: skip


def test_beyond_the_bound_a_finished_part_goes_before_the_stalest() -> None:
    progress = StepProgress(max_parts=3)
    progress.add(part("a", 1))
    progress.add(part("b", 10))  # finished
    progress.add(part("c", 1))
    progress.add(part("d", 1))
    merged = progress.merged()
    assert merged is not None and isinstance(merged.progress, ProgressTree)
    assert [p.name for p in merged.progress.parts] == ["a", "c", "d"]

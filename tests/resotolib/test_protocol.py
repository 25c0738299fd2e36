from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resotolib.protocol import (
    Action,
    ActionData,
    ActionDone,
    ActionError,
    ActionInfo,
    ActionProgress,
    Event,
    ProgressTree,
    ProtocolError,
    TaskId,
    action_frame,
    parse_message,
    serialize,
)

FRAMES = [
    '{"kind":"action","message_type":"collect","data":{"task":"8f2c","step":"collect"}}',
    '{"kind":"action_done","message_type":"collect","data":{"task":"8f2c","step":"collect"}}',
    '{"kind":"action_error","message_type":"cleanup","data":{"task":"8f2c","step":"cleanup","error":"AccessDenied"}}',
    '{"kind":"event","message_type":"start_collect_and_cleanup_workflow","data":{}}',
    '{"kind":"action_info","message_type":"collect","data":{"task":"t","step":"collect","level":"warning","message":"slow"}}',
    '{"kind":"action_progress","message_type":"collect","data":{"task":"t","step":"collect","context":["aws"],'
    '"progress":{"kind":"tree","name":"aws","parts":[{"kind":"progress","name":"eu-1","current":1,"total":2,'
    '"path":["aws"]}]},"at":"2024-01-01T00:00:00Z"}}',
]


@pytest.mark.parametrize("frame", FRAMES)
def test_frames_round_trip_byte_for_byte(frame: str) -> None:
    assert serialize(parse_message(frame)) == frame


def test_models_serialise_in_wire_shape() -> None:
    action = Action(message_type="collect", data=ActionData(task=TaskId("t1"), step="collect"))
    assert serialize(action) == '{"kind":"action","message_type":"collect","data":{"task":"t1","step":"collect"}}'
    event = Event(message_type="task_end", data={"task": "t1", "success": True})
    assert serialize(event) == '{"kind":"event","message_type":"task_end","data":{"task":"t1","success":true}}'


@settings(max_examples=500, deadline=None)
@given(st.text(), st.text(), st.text())
def test_action_frames_are_what_the_model_serialises(message_type: str, task: str, step: str) -> None:
    # any text: quotes, backslashes, control characters, characters outside the BMP, lone surrogates aside
    action = Action(message_type=message_type, data=ActionData(task=TaskId(task), step=step))
    assert action_frame(message_type, TaskId(task), step) == serialize(action)


def test_action_frames_are_what_the_model_serialises_for_every_character() -> None:
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)  # lone surrogates are no text
    action = Action(message_type="collect", data=ActionData(task=TaskId("t"), step=every))
    assert action_frame("collect", TaskId("t"), every) == serialize(action)


def test_parsing_is_lenient() -> None:
    frame = '{"kind":"action_done","message_type":"collect","extra":1,"data":{"task":"t","step":"s","foo":[1]}}'
    message = parse_message(frame)
    assert isinstance(message, ActionDone)
    assert message.data.task == "t"
    # an action_error without an error text gets "n/a"; an explicit null too
    for data in ('{"task":"t","step":"s"}', '{"task":"t","step":"s","error":null}'):
        error = parse_message(f'{{"kind":"action_error","message_type":"c","data":{data}}}')
        assert isinstance(error, ActionError) and error.data.error == "n/a"
    # info without level or message, progress without path or context
    info = parse_message('{"kind":"action_info","message_type":"c","data":{"task":"t","step":"s"}}')
    assert isinstance(info, ActionInfo) and info.data.level == "info"
    progress = parse_message(
        '{"kind":"action_progress","message_type":"c","data":{"task":"t","step":"s",'
        '"progress":{"kind":"tree","name":"n","parts":[]},"at":"2024-01-01T00:00:00Z"}}'
    )
    assert isinstance(progress, ActionProgress)
    assert isinstance(progress.data.progress, ProgressTree)
    assert progress.data.at == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "malformed JSON"),
        ("", "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ('{"message_type":"x","data":{}}', "no 'kind'"),
        ('{"kind":"shout","message_type":"x","data":{}}', "unknown message kind 'shout'"),
        ('{"kind":"action_done","message_type":"x","data":{"step":"s"}}', "action_done message: data.task"),
        ('{"kind":"action_done","data":{"task":"t","step":"s"}}', "action_done message: message_type"),
        ('{"kind":"event","message_type":"x","data":[1]}', "event message: data"),
        ('{"kind":"action_progress","message_type":"x","data":{"task":"t","step":"s"}}', "data.progress"),
    ],
)
def test_invalid_frames_raise_one_clear_error(frame: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_message(frame)

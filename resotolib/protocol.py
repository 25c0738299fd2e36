"""The wire protocol shared by the core and every client: one pydantic model per message kind.

Every frame is a JSON object ``{"kind": K, "message_type": T, "data": {...}}``. Parsing is lenient
(extra fields are ignored), serialising is compact and stable so frames match Resoto's byte for byte.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NewType

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
)

TaskId = NewType("TaskId", str)
SubscriberId = NewType("SubscriberId", str)

ANSWER_KINDS = frozenset({"action_done", "action_error"})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
"""What the core accepts as a subscriber id or a message type; anything else is answered 400."""


SHOWN_NAME = 140
"""Characters of a refused name an error repeats (a longer one is cut)."""


def check_name(kind: str, value: str) -> str:
    """``value`` when the core accepts it as a ``kind`` (subscriber id, message type), else ValueError."""
    if not NAME_PATTERN.fullmatch(value):
        shown = repr(value) if len(value) <= SHOWN_NAME else f"{value[:SHOWN_NAME]!r}... ({len(value)} characters)"
        raise ValueError(f"invalid {kind} {shown}: use 1-128 letters, digits and _.:@-")
    return value


def check_subscriber_id(value: str) -> str:
    return check_name("subscriber id", value)


SubscriberIdName = Annotated[str, AfterValidator(check_subscriber_id)]
"""A settings field holding a subscriber id: an id the core would refuse is refused when the settings are read."""

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
"""The longest the core waits for one subscriber's answer (a week); a longer subscription timeout is answered 400."""


def check_timeout(seconds: int) -> int:
    """``seconds`` when the core accepts it as a subscription timeout, else ValueError."""
    if not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"invalid timeout {seconds}: expected 1 to {MAX_TIMEOUT_SECONDS} seconds")
    return seconds


TimeoutSeconds = Annotated[int, AfterValidator(check_timeout)]
"""A settings field holding a subscription timeout: one the core would refuse is refused when the settings are read."""


class ProtocolError(ValueError):
    """A frame that is not valid JSON, not an object, of an unknown kind, or with invalid fields."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# ---- progress -------------------------------------------------------------------------------------


class ProgressDone(_Frozen):
    kind: Literal["progress"] = "progress"
    name: str
    current: int | float
    total: int | float
    path: list[str] | None = None


class ProgressTree(_Frozen):
    kind: Literal["tree"] = "tree"
    name: str
    path: list[str] | None = None
    parts: list[Progress] = Field(default_factory=list)


Progress = Annotated[ProgressDone | ProgressTree, Field(discriminator="kind")]


# ---- payloads -------------------------------------------------------------------------------------


class ActionData(_Frozen):
    task: TaskId
    step: str


class ActionDoneData(ActionData):
    subscriber_id: SubscriberId | None = None


class ActionErrorData(ActionData):
    error: str = "n/a"
    subscriber_id: SubscriberId | None = None

    @field_validator("error", mode="before")
    @classmethod
    def _error_text(cls, value: Any) -> str:
        return "n/a" if value is None else str(value)


class ActionInfoData(ActionData):
    level: str = "info"
    message: str = ""
    subscriber_id: SubscriberId | None = None


class ActionProgressData(ActionData):
    context: list[str] = Field(default_factory=list)
    progress: Progress
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subscriber_id: SubscriberId | None = None


# ---- messages -------------------------------------------------------------------------------------


class Event(_Frozen):
    kind: Literal["event"] = "event"
    message_type: str
    data: dict[str, JsonValue] = Field(default_factory=dict)


class Action(_Frozen):
    kind: Literal["action"] = "action"
    message_type: str
    data: ActionData


class ActionDone(_Frozen):
    kind: Literal["action_done"] = "action_done"
    message_type: str
    data: ActionDoneData


class ActionError(_Frozen):
    kind: Literal["action_error"] = "action_error"
    message_type: str
    data: ActionErrorData


class ActionInfo(_Frozen):
    kind: Literal["action_info"] = "action_info"
    message_type: str
    data: ActionInfoData


class ActionProgress(_Frozen):
    kind: Literal["action_progress"] = "action_progress"
    message_type: str
    data: ActionProgressData


class Authorization(_Frozen):
    """First websocket frame of a client that cannot send an Authorization header."""

    kind: Literal["authorization"] = "authorization"
    jwt: str


Message = Annotated[
    Event | Action | ActionDone | ActionError | ActionInfo | ActionProgress | Authorization,
    Field(discriminator="kind"),
]
Answer = ActionDone | ActionError
KNOWN_KINDS = ("event", "action", "action_done", "action_error", "action_info", "action_progress", "authorization")

_message_adapter: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(frame: str | bytes) -> Message:
    """Parse one frame. Raises ProtocolError with a one-line reason for anything that is not a message."""
    try:
        return _message_adapter.validate_json(frame)
    except ValidationError as e:
        raise ProtocolError(_describe(e)) from None


def serialize(message: Event | Action | ActionDone | ActionError | ActionInfo | ActionProgress | Authorization) -> str:
    """Compact JSON in the field order of the wire format; absent optional fields are left out."""
    return message.model_dump_json(exclude_none=True)


def action_frame(message_type: str, task: TaskId, step: str) -> str:
    """``serialize(Action(...))`` of this action, built without pydantic: the core sends one per step, and this
    takes a seventh of the time or less. test_protocol compares the two on every character and generated names."""
    data = {"kind": "action", "message_type": message_type, "data": {"task": task, "step": step}}
    return orjson.dumps(data).decode()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    match first["type"]:
        case "json_invalid":
            return f"malformed JSON: {first['msg']}"
        case "union_tag_invalid":
            kind = first.get("input", {}).get("kind") if isinstance(first.get("input"), dict) else None
            return f"unknown message kind {kind!r}; expected one of {', '.join(KNOWN_KINDS)}"
        case "union_tag_not_found":
            return "message has no 'kind'"
    if not first["loc"]:
        return "a message must be a JSON object"
    loc = ".".join(str(p) for p in first["loc"][1:]) or "message"
    kind = first["loc"][0]
    return f"invalid {kind} message: {loc}: {first['msg']}"


# ---- subscriptions ----------------------------------------------------------------------------------


class Subscription(_Frozen):
    """One message type a subscriber listens to; the core waits for its answer when wait_for_completion."""

    message_type: str
    wait_for_completion: bool = Field(default=True, strict=True)  # JSON true or false: not "yes", not 1
    timeout: int = Field(
        default=60,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        strict=True,  # a JSON integer: lax parsing would take true as 1 s, and "30" or 30.0 as 30
        description="whole seconds the core waits for this subscriber's answer",
    )


class Subscriber(_Frozen):
    id: SubscriberId
    subscriptions: dict[str, Subscription] = Field(default_factory=dict)

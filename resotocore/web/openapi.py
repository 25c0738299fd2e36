"""The OpenAPI 3.1 document of the core's HTTP API, served at ``GET /api-doc``.

Every route of the app is listed in ``OPERATIONS`` (a test fails when a route is missing). Request
and response bodies come from the pydantic models that produce or parse them; the few answers that
the routes assemble by hand are described by the view models below. NDJSON bodies
(``application/x-ndjson``: one JSON value per line) are documented as an array of the line's schema.
The bearer security scheme applies when the core runs with ``--psk``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from resotocore.web.api import MAX_PAGE
from resotocore.web.auth import OPEN_PATHS, VERIFIER
from resotocore.workflow.machine import Outcome, RunStatus
from resotocore.workflow.model import Workflow
from resotolib.graph import (
    GRAPH_NAME,
    AggregateRequest,
    AggregateRow,
    CleanRequest,
    Edge,
    MergeResult,
    Node,
    NodePatch,
    SearchRequest,
)
from resotolib.protocol import (
    MAX_TIMEOUT_SECONDS,
    NAME_PATTERN,
    ActionProgressData,
    Message,
    Subscriber,
    SubscriberId,
    Subscription,
    TaskId,
)

routes = web.RouteTableDef()

JSON = "application/json"
NDJSON = "application/x-ndjson"
SCHEMAS = "#/components/schemas/"
Json = dict[str, Any]


# ---- answers the routes assemble by hand -----------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_View):
    """Every error answer: 4xx and 5xx."""

    error: str


class WorkflowView(Workflow):
    model_config = ConfigDict(extra="forbid")

    next_run: datetime | None = Field(description="next time a cron trigger fires")
    running: list[TaskId] = Field(description="ids of the runs in progress")
    queued: bool = Field(description="a run waits for the current one to end")
    missed_at_startup: int = Field(description="cron slots missed while the core was down")


class OutcomeView(_View):
    outcome: Outcome
    error: str | None
    at: datetime | None


class InfoView(_View):
    subscriber_id: SubscriberId
    level: str
    message: str
    at: datetime


class StepView(_View):
    name: str
    message_type: str
    started_at: datetime
    deadline: datetime
    ended_at: datetime | None
    success: bool | None
    subscribers: dict[SubscriberId, OutcomeView] = Field(description="outcome per subscriber waited for")
    notified: list[SubscriberId] = Field(description="every subscriber the action was sent to")
    info: list[InfoView] = Field(description="action_info messages of the step (at most 100)")
    duration: float | None = Field(description="seconds, once the step has ended")


class RunView(_View):
    id: TaskId
    workflow: str
    trigger: str
    status: RunStatus
    success: bool
    created_at: datetime
    ended_at: datetime | None
    error: str | None
    step: str | None = Field(description="the current step of a running run")
    step_started_at: datetime | None
    step_deadline: datetime | None
    waiting_for: list[SubscriberId] = Field(description="subscribers the current step waits for")
    steps: list[StepView]
    progress: dict[SubscriberId, ActionProgressData] = Field(
        default_factory=dict, description="latest progress per subscriber (running runs only)"
    )


class FoundNode(BaseModel):
    """A node as search returns it: what the collector reported, plus the state the core keeps."""

    id: str
    reported: dict[str, JsonValue]
    metadata: dict[str, JsonValue] = Field(
        description="protected, cleaned, clean_reason, expires, event_log, ancestors (cloud, account, region), "
        "and what the collector sent"
    )
    desired: dict[str, JsonValue] = Field(description="clean: marked for cleanup")


class RunPage(_View):
    runs: list[RunView] = Field(description="newest first")
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class StartAnswer(_View):
    status: Literal["started", "queued", "skipped"]
    workflow: str
    reason: str
    task_id: TaskId | None = Field(None, description="the new run (status started)")


class StartRefused(StartAnswer):
    error: str = Field(description="why the run was not started (the workflow's on_surpass)")


class GraphDeleted(_View):
    graph: str
    deleted_nodes: int


class CleanAnswer(_View):
    marked: int = Field(description="nodes newly marked with desired.clean")


class PatchAnswer(_View):
    updated: int
    missing: list[str] = Field(description="ids of patched nodes that do not exist")


MODELS: tuple[tuple[str, JsonSchemaMode, Any], ...] = (
    ("ErrorBody", "serialization", ErrorBody),
    ("Subscription", "validation", Subscription),
    ("Subscriber", "serialization", Subscriber),
    ("WorkflowView", "serialization", WorkflowView),
    ("StartAnswer", "serialization", StartAnswer),
    ("StartRefused", "serialization", StartRefused),
    ("RunView", "serialization", RunView),
    ("RunPage", "serialization", RunPage),
    ("Node", "validation", Node),
    ("Edge", "validation", Edge),
    ("FoundNode", "serialization", FoundNode),
    ("MergeResult", "serialization", MergeResult),
    ("SearchRequest", "validation", SearchRequest),
    ("AggregateRequest", "validation", AggregateRequest),
    ("AggregateRow", "serialization", AggregateRow),
    ("CleanRequest", "validation", CleanRequest),
    ("CleanAnswer", "serialization", CleanAnswer),
    ("NodePatch", "validation", NodePatch),
    ("PatchAnswer", "serialization", PatchAnswer),
    ("GraphDeleted", "serialization", GraphDeleted),
    ("Message", "validation", Message),
)


# ---- operations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the route behind it answers."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    responses: dict[str, Json]
    description: str = ""
    parameters: tuple[Json, ...] = ()
    body: Json | None = None

    @property
    def open(self) -> bool:
        """Reachable without a token when the core runs with --psk."""
        return self.path.startswith(OPEN_PATHS)


def _ref(name: str) -> Json:
    return {"$ref": SCHEMAS + name}


def _array(items: Json) -> Json:
    return {"type": "array", "items": items}


def _content(media_type: str, schema: Json, description: str) -> Json:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _json(schema: Json, description: str) -> Json:
    return _content(JSON, schema, description)


def _text(description: str) -> Json:
    return _content("text/plain", {"type": "string"}, description)


def _error(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def _path(name: str, description: str, pattern: str | None = None, example: str | None = None) -> Json:
    schema: Json = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    if example:
        schema["examples"] = [example]
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _query(name: str, description: str, schema: Json) -> Json:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _body(media_type: str, schema: Json, description: str, required: bool = True) -> Json:
    return {"description": description, "required": required, "content": {media_type: {"schema": schema}}}


SUBSCRIBER_ID = _path("id", "subscriber id", NAME_PATTERN.pattern, "worker-1")
ANY_SUBSCRIBER_ID = _path("id", "subscriber id", example="worker-1")
MESSAGE_TYPE = _path("message_type", "message type (action name)", NAME_PATTERN.pattern, "collect")
WORKFLOW_ID = _path("id", "workflow id", example="collect_and_cleanup")
TASK_ID = _path("id", "task (run) id")
GRAPH = _path("graph", "graph name", GRAPH_NAME.pattern, "resoto")
SUBSCRIBER = _json(_ref("Subscriber"), "the subscriber as it is now")
SUBSCRIBERS = _json(_array(_ref("Subscriber")), "subscribers")
RUN = _json(_ref("RunView"), "the run")
DOCUMENT = _json({"type": "object"}, "the OpenAPI document")
BAD = _error("BadRequest")
MISSING = _error("NotFound")
TOO_LARGE = _error("TooLarge")
WEBSOCKET_FRAMES = (
    'Every frame is a JSON text frame `{"kind": K, "message_type": T, "data": {...}}` '
    "(schema `Message`). An invalid frame closes the socket with code 1008 and the reason, a binary "
    "frame with 1003; a socket that does not read fast enough is closed with 1013. When the core runs "
    "with --psk, a client that cannot send the Authorization header sends "
    '`{"kind": "authorization", "jwt": "Bearer <JWT>"}` as its first frame.'
)
UPGRADE = _json(_ref("ErrorBody"), "not a websocket upgrade request")


def _switching(frames: str) -> Json:
    return {"description": f"switching to the websocket protocol. {frames} {WEBSOCKET_FRAMES}"}


OPERATIONS: tuple[Operation, ...] = (
    # subscribers
    Operation("get", "/subscribers", "list_subscribers", "subscribers", "Every subscriber", {"200": SUBSCRIBERS}),
    Operation(
        "get", "/subscribers/for/{message_type}", "subscribers_for", "subscribers", "Subscribers of one message type",
        {"200": SUBSCRIBERS}, parameters=(_path("message_type", "message type", example="collect"),),
    ),
    Operation(
        "get", "/subscriber/{id}", "get_subscriber", "subscribers", "One subscriber",
        {"200": SUBSCRIBER, "404": MISSING}, parameters=(ANY_SUBSCRIBER_ID,),
    ),
    Operation(
        "put", "/subscriber/{id}", "put_subscriber", "subscribers", "Replace every subscription of a subscriber",
        {
            "200": SUBSCRIBER, "400": BAD, "413": TOO_LARGE,
            "429": _json(_ref("ErrorBody"), "with unless_connected: the subscriber is connected; nothing changed"),
        },
        parameters=(
            SUBSCRIBER_ID,
            _query("unless_connected", "`true`: refuse (429) while the subscriber's action channel is connected",
                   {"type": "string", "examples": ["true"]}),
        ),
        body=_body(JSON, _array(_ref("Subscription")), "the subscriptions; an empty list removes the subscriber"),
    ),
    Operation(
        "delete", "/subscriber/{id}", "delete_subscriber", "subscribers", "Remove a subscriber",
        {"204": {"description": "removed, or there was no such subscriber"}}, parameters=(ANY_SUBSCRIBER_ID,),
    ),
    Operation(
        "post", "/subscriber/{id}/{message_type}", "add_subscription", "subscribers", "Add or update a subscription",
        {"200": SUBSCRIBER, "400": BAD},
        description="Resoto's clients rely on exactly 200 with the subscriber as the answer.",
        parameters=(
            SUBSCRIBER_ID, MESSAGE_TYPE,
            _query("timeout", "seconds (digits 0-9 only) the core waits for this subscriber's answer (default 60)",
                   {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS}),
            _query("wait_for_completion", "true unless `false` (any case; default true)",
                   {"type": "string", "examples": ["true", "False"]}),
        ),
    ),
    Operation(
        "delete", "/subscriber/{id}/{message_type}", "remove_subscription", "subscribers", "Remove a subscription",
        {"200": SUBSCRIBER, "400": BAD}, parameters=(SUBSCRIBER_ID, _path("message_type", "message type")),
    ),
    Operation(
        "get", "/subscriber/{id}/handle", "action_channel", "websockets", "The action channel of a subscriber",
        {
            "101": _switching(
                "The core sends `action` frames, first every action still pending for this subscriber; the "
                "subscriber answers with `action_done` or `action_error` (and may send `action_info`, "
                "`action_progress` and `event` frames). Sending `action` is a protocol error."
            ),
            "400": UPGRADE,
            "404": _json(_ref("ErrorBody"), "the subscriber has no subscriptions"),
            "429": _json(_ref("ErrorBody"), "the subscriber is already connected"),
        },
        parameters=(ANY_SUBSCRIBER_ID,),
    ),
    Operation(
        "get", "/events", "events", "websockets", "The event stream",
        {
            "101": _switching(
                "The core sends every message on the bus (or those named in `show`), first the retained "
                "ones (`workflow_runs_missed`, for 5 minutes after start-up); `event` frames sent "
                "here are put on the bus and may start workflows, `action_done` and `action_error` frames "
                "naming `subscriber_id` in data are taken as that subscriber's answer."
            ),
            "400": UPGRADE,
        },
        parameters=(_query("show", "comma-separated message types to receive; default: all", {"type": "string"}),),
    ),
    # workflows and tasks
    Operation(
        "get", "/workflows", "list_workflows", "workflows", "Workflow definitions and their state",
        {"200": _json(_array(_ref("WorkflowView")), "every workflow")},
    ),
    Operation(
        "post", "/workflows/{id}/run", "run_workflow", "workflows", "Start a run as on_surpass allows",
        {
            "200": _json(_ref("StartAnswer"), "started (task_id names the run)"),
            "202": _json(_ref("StartAnswer"), "queued: it starts when the current run ends"),
            "404": MISSING,
            "409": _json(_ref("StartRefused"), "skipped: a run is in progress"),
        },
        parameters=(WORKFLOW_ID,),
    ),
    Operation(
        "get", "/workflows/{id}/runs", "workflow_runs", "workflows", "History of a workflow, newest first",
        {"200": _json(_ref("RunPage"), "one page of runs"), "400": BAD, "404": MISSING},
        parameters=(
            WORKFLOW_ID,
            _query("limit", "page size (default 20)", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            _query("offset", "runs to skip (default 0)", {"type": "integer", "minimum": 0, "maximum": 1 << 62}),
        ),
    ),
    Operation("get", "/tasks", "list_tasks", "tasks", "Running runs", {"200": _json(_array(_ref("RunView")), "runs")}),
    Operation(
        "get", "/tasks/{id}", "get_task", "tasks", "One run, running or ended",
        {"200": RUN, "404": MISSING}, parameters=(TASK_ID,),
    ),
    Operation(
        "delete", "/tasks/{id}", "cancel_task", "tasks", "Cancel a running run",
        {"200": RUN, "404": MISSING, "409": _json(_ref("ErrorBody"), "the run has already ended")},
        parameters=(TASK_ID,),
    ),
    # graph
    Operation("get", "/graph", "list_graphs", "graph", "Graph names", {"200": _json(_array({"type": "string"}), "")}),
    Operation(
        "delete", "/graph/{graph}", "delete_graph", "graph", "Delete a graph",
        {"200": _json(_ref("GraphDeleted"), "deleted"), "400": BAD, "404": MISSING}, parameters=(GRAPH,),
    ),
    Operation(
        "post", "/graph/{graph}/merge", "merge", "graph", "Merge a collect (NDJSON: nodes, then edges)",
        {"200": _json(_ref("MergeResult"), "merged"), "400": BAD, "413": TOO_LARGE},
        description="All or nothing: a bad line (its number is in the error) merges nothing. The node with "
        '`"metadata": {"replace": true}` marks the subtree the merge replaces.',
        parameters=(GRAPH,),
        body=_body(NDJSON, _array({"anyOf": [_ref("Node"), _ref("Edge")]}), "one node or edge per line"),
    ),
    Operation(
        "post", "/graph/{graph}/search", "search", "graph", "Matching nodes (then edges) as NDJSON",
        {
            "200": _content(
                NDJSON, _array({"anyOf": [_ref("FoundNode"), _ref("Edge"), _ref("ErrorBody")]}),
                "one node or edge per line, streamed; if the store fails mid-answer the last line is an error",
            ),
            "400": BAD, "404": MISSING, "413": TOO_LARGE,
        },
        parameters=(GRAPH,),
        body=_body(JSON, _ref("SearchRequest"), "what to find; no body: every node", required=False),
    ),
    Operation(
        "post", "/graph/{graph}/aggregate", "aggregate", "graph", "Grouped counts, sums, minima and maxima",
        {"200": _json(_array(_ref("AggregateRow")), "one row per group"), "400": BAD, "404": MISSING,
         "413": TOO_LARGE},
        parameters=(GRAPH,), body=_body(JSON, _ref("AggregateRequest"), "the aggregate"),
    ),
    Operation(
        "post", "/graph/{graph}/clean", "clean", "graph", "Mark matching nodes for cleanup",
        {"200": _json(_ref("CleanAnswer"), "marked"), "400": BAD, "404": MISSING, "413": TOO_LARGE},
        parameters=(GRAPH,), body=_body(JSON, _ref("CleanRequest"), "which nodes, and why"),
    ),
    Operation(
        "patch", "/graph/{graph}/nodes", "patch_nodes", "graph", "Change nodes (NDJSON: one patch per line)",
        {"200": _json(_ref("PatchAnswer"), "patched"), "400": BAD, "404": MISSING, "413": TOO_LARGE},
        parameters=(GRAPH,), body=_body(NDJSON, _array(_ref("NodePatch")), "one patch per line"),
    ),
    # system
    Operation("get", "/system/ping", "ping", "system", "Liveness", {"200": _text("alive: `pong`")}),
    Operation(
        "get", "/system/ready", "ready", "system", "Readiness",
        {"200": _text("ready: `ok`"), "503": _error("ServerError")},
    ),
    Operation("get", "/metrics", "metrics", "system", "Prometheus metrics", {"200": _text("Prometheus text format")}),
    Operation("get", "/api-doc", "api_doc", "system", "This document", {"200": DOCUMENT}),
    Operation("get", "/api-doc/openapi.json", "api_doc_json", "system", "This document, as a file", {"200": DOCUMENT}),
)  # fmt: skip


# ---- the document -------------------------------------------------------------------------------------


def _schemas() -> Json:
    """Component schemas of MODELS under their class names (a union under the name MODELS gives it)."""
    adapters = [(name, mode, TypeAdapter(tp)) for name, mode, tp in MODELS]
    refs, top = TypeAdapter.json_schemas(adapters, ref_template=SCHEMAS + "{model}")
    schemas: Json = dict(top.get("$defs", {}))
    for (name, _mode), schema in refs.items():
        if "$ref" not in schema:
            schemas[name] = schema
        elif schema != _ref(name):
            raise ValueError(f"{name} is documented as {schema['$ref']}: list it under that name")
    # Node's validator requires reported.kind; say so, so that generated nodes can be valid.
    reported = schemas["Node"]["properties"]["reported"]
    reported["required"] = ["kind"]
    reported["properties"] = {"kind": {"type": "string", "minLength": 1}}
    return schemas


def _components(secured: bool) -> Json:
    def error(description: str) -> Json:
        return _json(_ref("ErrorBody"), description)

    responses = {
        "BadRequest": error("the request is invalid; the error says why"),
        "NotFound": error("the named thing does not exist"),
        "TooLarge": error("the request body is larger than the configured limit"),
        "ServerError": error("internal error (500) or storage unavailable (503)"),
    }
    if secured:
        responses["Unauthorized"] = error("no, an invalid, or an expired token")
    return {
        "schemas": _schemas(),
        "responses": responses,
        "securitySchemes": {
            "psk": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "HS256 JWT; key: pbkdf2_hmac('sha256', psk, salt, 100000) with the salt (standard "
                "base64 of 16 random bytes) in the token's header; payload with `exp`. Required when the core "
                "runs with --psk, on every path but /system/*, /metrics and /api-doc*.",
            }
        },
    }


def _operation(op: Operation, secured: bool) -> Json:
    result: Json = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        result["description"] = op.description
    if op.parameters:
        result["parameters"] = list(op.parameters)
    if op.body:
        result["requestBody"] = op.body
    responses = dict(op.responses)
    if secured and not op.open:
        responses["401"] = _error("Unauthorized")
    responses["5XX"] = _error("ServerError")
    result["responses"] = dict(sorted(responses.items()))
    if secured and op.open:
        result["security"] = []
    return result


def openapi_document(secured: bool = False) -> Json:
    """The document; with `secured`, operations outside the open paths require the bearer token."""
    paths: dict[str, Json] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, secured)
    document: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "resotocore",
            "version": version("resoto-workflows"),
            "description": "The core of Resoto's workflows: subscribers and the action bus, workflows and "
            'their runs, the resource graph. Every error is JSON: `{"error": "..."}`.',
        },
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": _components(secured),
    }
    if secured:
        document["security"] = [{"psk": []}]
    return document


@cache
def _document_text(secured: bool) -> str:
    return json.dumps(openapi_document(secured))


@routes.get("/api-doc")
@routes.get("/api-doc/openapi.json")
async def api_doc(request: web.Request) -> web.Response:
    return web.json_response(text=_document_text(request.app[VERIFIER] is not None))

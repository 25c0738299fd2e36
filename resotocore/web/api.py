"""REST routes: subscribers (Resoto-compatible), workflows, tasks, system and metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from resotocore.bus.subscribers import check_name, make_subscription
from resotocore.core import CORE, Core
from resotocore.web.errors import ClientError, Conflict, NotFound, Unavailable
from resotocore.workflow.codec import step_dict
from resotocore.workflow.machine import Run
from resotolib.protocol import Subscriber, SubscriberId, Subscription, TaskId

routes = web.RouteTableDef()
_subscriptions = TypeAdapter(list[Subscription])

MAX_PAGE = 500


def _core(request: web.Request) -> Core:
    return request.app[CORE]


def _subscriber_json(subscriber: Subscriber) -> web.Response:
    return web.json_response(text=subscriber.model_dump_json())


def _subscribers_json(subscribers: list[Subscriber]) -> web.Response:
    return web.json_response(text="[" + ",".join(s.model_dump_json() for s in subscribers) + "]")


# ---- subscribers ----------------------------------------------------------------------------------


@routes.get("/subscribers")
async def list_subscribers(request: web.Request) -> web.Response:
    return _subscribers_json(_core(request).registry.all())


@routes.get("/subscribers/for/{message_type}")
async def subscribers_for(request: web.Request) -> web.Response:
    return _subscribers_json(_core(request).registry.for_message_type(request.match_info["message_type"]))


@routes.get("/subscriber/{id}")
async def get_subscriber(request: web.Request) -> web.Response:
    sid = SubscriberId(request.match_info["id"])
    subscriber = _core(request).registry.get(sid)
    if subscriber is None:
        raise NotFound(f"no subscriber {sid!r}")
    return _subscriber_json(subscriber)


@routes.put("/subscriber/{id}")
async def put_subscriber(request: web.Request) -> web.Response:
    core = _core(request)
    subscriptions = _subscriptions.validate_json(await request.read())
    if len(subscriptions) > core.config.max_subscriptions:
        raise ClientError(f"too many subscriptions: at most {core.config.max_subscriptions} per subscriber")
    for subscription in subscriptions:  # the model checks the timeout: a JSON integer within the limit
        check_name("message type", subscription.message_type)
    sid = SubscriberId(request.match_info["id"])
    unless_connected = request.query.get("unless_connected", "").lower() == "true"
    replaced = await core.registry.replace(sid, subscriptions, core.clock.now(), unless_connected=unless_connected)
    return _subscriber_json(replaced)


@routes.delete("/subscriber/{id}")
async def delete_subscriber(request: web.Request) -> web.Response:
    """204 whether or not the subscriber existed, as Resoto's core answers (its clients check for 204)."""
    await _core(request).registry.remove(SubscriberId(request.match_info["id"]))
    return web.Response(status=204)


@routes.post("/subscriber/{id}/{message_type}")
async def add_subscription(request: web.Request) -> web.Response:
    core = _core(request)
    sid = SubscriberId(check_name("subscriber id", request.match_info["id"]))
    query = request.query
    subscription = make_subscription(
        request.match_info["message_type"], query.get("timeout"), query.get("wait_for_completion")
    )
    existing = core.registry.get(sid)
    held = existing.subscriptions if existing else {}
    if subscription.message_type not in held and len(held) >= core.config.max_subscriptions:
        raise ClientError(f"too many subscriptions: at most {core.config.max_subscriptions} per subscriber")
    return _subscriber_json(await core.registry.add_subscription(sid, subscription, core.clock.now()))


@routes.delete("/subscriber/{id}/{message_type}")
async def remove_subscription(request: web.Request) -> web.Response:
    core = _core(request)
    sid = SubscriberId(check_name("subscriber id", request.match_info["id"]))
    message_type = request.match_info["message_type"]
    return _subscriber_json(await core.registry.remove_subscription(sid, message_type, core.clock.now()))


# ---- workflows and tasks --------------------------------------------------------------------------


@routes.get("/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    core = _core(request)
    result = []
    for workflow in core.engine.workflows.values():
        next_fire = core.scheduler.next_fire(workflow.id)
        result.append(
            {
                **workflow.model_dump(mode="json"),
                "next_run": next_fire.isoformat() if next_fire else None,
                "running": [r.id for r in core.engine.running() if r.workflow_id == workflow.id],
                "queued": any(q.workflow_id == workflow.id for q in core.engine.queued()),
                "missed_at_startup": core.scheduler.missed.get(workflow.id, 0),
            }
        )
    return web.json_response(result)


@routes.post("/workflows/{id}/run")
async def run_workflow(request: web.Request) -> web.Response:
    core = _core(request)
    _storing(core)
    result = await core.engine.trigger(request.match_info["id"], "manual")
    body: dict[str, Any] = {"status": result.status, "workflow": result.workflow_id, "reason": result.reason}
    if result.status == "started":
        return web.json_response({**body, "task_id": result.task_id})
    if result.status == "queued":
        return web.json_response(body, status=202)
    return web.json_response({**body, "error": result.reason}, status=409)


@routes.get("/workflows/{id}/runs")
async def workflow_runs(request: web.Request) -> web.Response:
    core = _core(request)
    workflow_id = request.match_info["id"]
    if workflow_id not in core.engine.workflows:
        raise NotFound(f"unknown workflow {workflow_id!r}")
    limit = _int_query(request, "limit", 20, 1, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 0, 1 << 62)
    page = await core.store.history(workflow_id, limit, offset)
    return web.json_response(
        {
            "runs": [run_json(run) for run in page.runs],
            "total": page.total,
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if offset + limit < page.total else None,
        }
    )


@routes.get("/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    engine = _core(request).engine
    return web.json_response([run_json(run, engine.progress(run.id)) for run in engine.running()])


@routes.get("/tasks/{id}")
async def get_task(request: web.Request) -> web.Response:
    core = _core(request)
    task_id = TaskId(request.match_info["id"])
    run = core.engine.get(task_id) or await core.store.run(task_id)
    if run is None:
        raise NotFound(f"no task {task_id!r}")
    return web.json_response(run_json(run, core.engine.progress(task_id)))


@routes.delete("/tasks/{id}")
async def cancel_task(request: web.Request) -> web.Response:
    core = _core(request)
    task_id = TaskId(request.match_info["id"])
    _storing(core)
    cancelled = await core.engine.cancel(task_id)
    if cancelled is not None:
        return web.json_response(run_json(cancelled))
    if await core.store.run(task_id) is not None:
        raise Conflict(f"task {task_id!r} has already ended")
    raise NotFound(f"no task {task_id!r}")


# ---- system -------------------------------------------------------------------------------------


@routes.get("/system/ping")
async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


@routes.get("/system/ready")
async def ready(request: web.Request) -> web.Response:
    _storing(_core(request))
    return web.Response(text="ok")


def _storing(core: Core) -> None:
    """Refuse at once (503) while the store refuses commits: a run started or cancelled now would wait
    for the store, and a caller that gave up meanwhile could not know what happened."""
    if core.engine.store_error is not None:
        raise Unavailable(f"storage unavailable, retrying: {core.engine.store_error}")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    core = _core(request)
    core.metrics.subscribers_connected.set(core.registry.connected)
    core.metrics.event_listeners.set(core.bus.listeners)
    body = generate_latest(core.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---- helpers ------------------------------------------------------------------------------------


def run_json(run: Run, progress: dict[SubscriberId, Any] | None = None) -> dict[str, Any]:
    """A run as the API shows it: the stored state plus the current step and whom it waits for."""
    current = run.current
    body: dict[str, Any] = {
        "id": run.id,
        "workflow": run.workflow_id,
        "trigger": run.trigger,
        "status": run.status.value,
        "success": run.success,
        "created_at": run.created_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "error": run.error,
        "step": current.name if current else None,
        "step_started_at": current.started_at.isoformat() if current else None,
        "step_deadline": current.deadline.isoformat() if current else None,
        "waiting_for": current.waiting_for if current else [],
        "steps": [
            {
                **step_dict(step),
                "duration": (step.ended_at - step.started_at).total_seconds() if step.ended_at else None,
            }
            for step in run.steps
        ],
    }
    if progress:
        body["progress"] = {sid: p.model_dump(mode="json", exclude_none=True) for sid, p in progress.items()}
    return body


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ClientError(f"invalid {name} {raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise ClientError(f"invalid {name} {value}: expected {low} to {high}")
    return value

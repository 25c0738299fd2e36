from __future__ import annotations

from typing import Any

from tests.support import CoreClientFactory, answer, core_of, receive_json, settle, subscribe


async def test_full_run_with_one_worker(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await subscribe(client, "worker", "collect", "cleanup")
    response = await client.post("/workflows/collect_and_cleanup/run")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    task_id = body["task_id"]
    for step in ("collect", "cleanup"):
        action = await receive_json(ws)
        assert action == {"kind": "action", "message_type": step, "data": {"task": task_id, "step": step}}
        await answer(ws, action)
    await settle(core_of(client))
    run = await (await client.get(f"/tasks/{task_id}")).json()
    assert run["status"] == "succeeded", run
    assert [s["name"] for s in run["steps"]][:3] == ["pre_collect", "collect", "post_collect"]
    assert len(run["steps"]) == 12

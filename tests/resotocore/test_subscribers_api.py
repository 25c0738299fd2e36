"""The subscriber endpoints, with the exact requests Resoto's published client sends."""

from __future__ import annotations

from typing import Any

import pytest

from resotolib.protocol import SubscriberId
from tests.support import CoreClientFactory, core_of, subscribe, until


async def test_post_adds_a_subscription_and_answers_200_with_the_subscriber(core_client: CoreClientFactory) -> None:
    client = await core_client()
    response = await client.post(
        "/subscriber/resoto.worker/collect", params={"timeout": "10800", "wait_for_completion": "True"}
    )
    assert response.status == 200
    assert await response.json() == {
        "id": "resoto.worker",
        "subscriptions": {"collect": {"message_type": "collect", "wait_for_completion": True, "timeout": 10800}},
    }
    response = await client.post("/subscriber/resoto.worker/cleanup", params={"wait_for_completion": "False"})
    body = await response.json()
    assert body["subscriptions"]["cleanup"] == {"message_type": "cleanup", "wait_for_completion": False, "timeout": 60}
    assert set(body["subscriptions"]) == {"collect", "cleanup"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("yes", True), ("FALSE", False), ("false", False), ("False", False)],
)
async def test_wait_for_completion_is_read_case_insensitively(
    core_client: CoreClientFactory, value: str, expected: bool
) -> None:
    client = await core_client()
    body = await (await client.post("/subscriber/s/collect", params={"wait_for_completion": value})).json()
    assert body["subscriptions"]["collect"]["wait_for_completion"] is expected


async def test_delete_subscription_answers_200(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await client.post("/subscriber/s/collect")
    await client.post("/subscriber/s/cleanup")
    response = await client.delete("/subscriber/s/collect")
    assert response.status == 200
    assert set((await response.json())["subscriptions"]) == {"cleanup"}
    # removing what is not there is not an error either (the client removes unconditionally)
    response = await client.delete("/subscriber/nobody/collect")
    assert response.status == 200
    assert await response.json() == {"id": "nobody", "subscriptions": {}}


async def test_get_put_delete_subscriber_and_lists(core_client: CoreClientFactory) -> None:
    client = await core_client()
    assert (await client.get("/subscriber/s")).status == 404
    subscriptions = [
        {"message_type": "collect", "wait_for_completion": True, "timeout": 30},
        {"message_type": "post_collect", "wait_for_completion": False, "timeout": 5},
    ]
    response = await client.put("/subscriber/s", json=subscriptions)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    assert body["subscriptions"]["post_collect"]["timeout"] == 5
    await client.post("/subscriber/other/collect")
    assert [s["id"] for s in await (await client.get("/subscribers")).json()] == ["other", "s"]
    assert [s["id"] for s in await (await client.get("/subscribers/for/post_collect")).json()] == ["s"]
    assert await (await client.get("/subscribers/for/nothing")).json() == []
    assert (await (await client.get("/subscriber/s")).json()) == body
    response = await client.delete("/subscriber/s")
    assert response.status == 204 and await response.read() == b""  # as Resoto's core answers
    assert (await client.get("/subscriber/s")).status == 404
    assert (await client.delete("/subscriber/s")).status == 204  # gone already: the same answer


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/subscriber/bad%20id/collect", {}, "invalid subscriber id"),
        ("/subscriber/w%0A/collect", {}, "invalid subscriber id"),
        ("/subscriber/s/collect%0A", {}, "invalid message type"),
        ("/subscriber/s/bad%20type", {}, "invalid message type"),
        ("/subscriber/s/collect", {"timeout": "soon"}, "invalid timeout"),
        ("/subscriber/s/collect", {"timeout": "0"}, "invalid timeout"),
        ("/subscriber/s/collect", {"timeout": "-5"}, "invalid timeout"),
        ("/subscriber/s/collect", {"timeout": "99999999999"}, "invalid timeout"),
        # whole seconds as Resoto's clients send them, digits 0-9 only: int() would take each of these
        ("/subscriber/s/collect", {"timeout": "1_0"}, "invalid timeout '1_0': expected whole seconds, digits 0-9"),
        ("/subscriber/s/collect", {"timeout": " 10"}, "invalid timeout ' 10'"),
        ("/subscriber/s/collect", {"timeout": "+10"}, "invalid timeout '+10'"),
        ("/subscriber/s/collect", {"timeout": "\uff11\uff10"}, "invalid timeout"),  # fullwidth digits
        ("/subscriber/s/collect", {"timeout": "9" * 5000}, "invalid timeout of 5000 digits"),
    ],
)
async def test_invalid_requests_get_400_and_change_nothing(
    core_client: CoreClientFactory, path: str, params: dict[str, str], reason: str
) -> None:
    client = await core_client()
    response = await client.post(path, params=params)
    assert response.status == 400
    assert reason in (await response.json())["error"]
    assert await (await client.get("/subscribers")).json() == []
    assert await core_of(client).store.subscribers() == []


@pytest.mark.parametrize(
    "body",
    [
        '{"not": "a list"}', "[{}]", '[{"message_type": "x y"}]', '[{"message_type": "c", "timeout": 0}]', "not json",
        '[{"message_type": "c", "wait_for_completion": "yes"}]', '[{"message_type": "c", "wait_for_completion": 1}]',
        '[{"message_type": "' + "x" * 5000 + '"}]',  # the error repeats the start of it only
    ],
)  # fmt: skip
async def test_put_with_a_bad_body_is_refused(core_client: CoreClientFactory, body: str) -> None:
    client = await core_client()
    await client.post("/subscriber/s/collect")
    response = await client.put("/subscriber/s", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert 0 < len((await response.json())["error"]) < 400
    assert set((await (await client.get("/subscriber/s")).json())["subscriptions"]) == {"collect"}


@pytest.mark.parametrize("value", ["true", "false", "60.0", "6e1", '"60"', "null", "0", "604801", "[60]"])
async def test_put_takes_a_timeout_only_as_a_json_integer_within_the_limit(
    core_client: CoreClientFactory, value: str
) -> None:
    """As the query takes only digits: 60.0 is refused like "60" and true (which lax parsing takes as 1 s)."""
    client = await core_client()
    await client.post("/subscriber/s/collect", params={"timeout": "30"})
    body = f'[{{"message_type": "cleanup", "timeout": {value}}}]'
    response = await client.put("/subscriber/s", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"].startswith("0.timeout: ")
    assert (await (await client.get("/subscriber/s")).json())["subscriptions"] == {
        "collect": {"message_type": "collect", "wait_for_completion": True, "timeout": 30}
    }
    assert [s.subscriptions["collect"].timeout for s in await core_of(client).store.subscribers()] == [30]
    body = '[{"message_type": "cleanup", "timeout": 604800}]'
    response = await client.put("/subscriber/s", data=body, headers={"Content-Type": "application/json"})
    assert (await response.json())["subscriptions"]["cleanup"]["timeout"] == 604800


async def test_put_unless_connected_leaves_a_connected_subscriber_alone(core_client: CoreClientFactory) -> None:
    client = await core_client()
    replacement = [{"message_type": "cleanup", "wait_for_completion": True, "timeout": 30}]
    channel = await subscribe(client, "s", "collect")
    response = await client.put("/subscriber/s", json=replacement, params={"unless_connected": "true"})
    assert response.status == 429
    assert (await response.json())["error"] == "subscriber s is already connected"
    assert set((await (await client.get("/subscriber/s")).json())["subscriptions"]) == {"collect"}
    assert (await client.put("/subscriber/s", json=replacement)).status == 200  # without it: replaced, as before
    await channel.close()
    await until(lambda: not core_of(client).registry.is_connected(SubscriberId("s")))
    response = await client.put("/subscriber/s", json=[], params={"unless_connected": "true"})
    assert response.status == 200
    assert (await client.get("/subscriber/s")).status == 404


async def test_subscriptions_are_persisted_across_restarts(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await client.post("/subscriber/w/collect", params={"timeout": "99"})
    await client.close()
    client = await core_client()
    body = await (await client.get("/subscriber/w")).json()
    assert body["subscriptions"]["collect"]["timeout"] == 99

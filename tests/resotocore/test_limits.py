"""Every limit answers with a clear 4xx or close, is configurable, and changes nothing."""

from __future__ import annotations

import json

import pytest

from resotocore.config import CoreConfig
from tests.support import CoreClientFactory


def node(i: int, pad: int = 0) -> str:
    return json.dumps({"id": f"n{i}", "reported": {"kind": "thing", "pad": "x" * pad}})


async def test_subscriptions_per_subscriber(core_client: CoreClientFactory, config: CoreConfig) -> None:
    client = await core_client(config.model_copy(update={"max_subscriptions": 2}))
    assert (await client.post("/subscriber/s/a")).status == 200
    assert (await client.post("/subscriber/s/b")).status == 200
    assert (await client.post("/subscriber/s/b", params={"timeout": "5"})).status == 200  # an update is fine
    response = await client.post("/subscriber/s/c")
    assert response.status == 400 and "at most 2" in (await response.json())["error"]
    response = await client.put("/subscriber/s", json=[{"message_type": t} for t in "xyz"])
    assert response.status == 400
    assert set((await (await client.get("/subscriber/s")).json())["subscriptions"]) == {"a", "b"}


async def test_merge_line_and_body_size(core_client: CoreClientFactory, config: CoreConfig) -> None:
    client = await core_client(config.model_copy(update={"max_line_size": 2048, "max_merge_size": 100_000}))
    lines = [node(1), node(2, pad=4000), node(3)]
    response = await client.post("/graph/g/merge", data="\n".join(lines))
    assert response.status == 400
    assert (await response.json())["error"] == "nothing merged: line 2: line longer than 2048 bytes"
    response = await client.post("/graph/g/merge", data="\n".join(node(i, pad=1000) for i in range(200)))
    assert response.status == 413 and "error" in await response.json()
    assert await (await client.get("/graph")).json() == []
    response = await client.post("/graph/g/merge", data="\n".join(node(i) for i in range(10)))
    assert response.status == 200


@pytest.mark.parametrize(
    ("lines", "max_line", "too_long"),
    [
        ([node(1, pad=4000), node(2)], 2048, 1),  # the first line of the first chunk
        ([node(1), node(2), node(3, pad=4000)], 2048, 3),  # the last line, with no newline after it
        ([node(i, pad=1000) for i in range(100)] + [node(100, pad=150_000), node(101)], 100_000, 101),  # across chunks
        ([node(i, pad=1000) for i in range(100)] + [node(100, pad=99_000), node(101)], 100_000, None),
    ],
)
async def test_merge_line_size_wherever_the_line_is(
    core_client: CoreClientFactory, config: CoreConfig, lines: list[str], max_line: int, too_long: int | None
) -> None:
    client = await core_client(config.model_copy(update={"max_line_size": max_line}))
    response = await client.post("/graph/g/merge", data="\n".join(lines))
    if too_long is None:
        assert response.status == 200
    else:
        assert response.status == 400
        assert (await response.json())["error"] == f"nothing merged: line {too_long}: line longer than {max_line} bytes"
        assert await (await client.get("/graph")).json() == []


async def test_request_body_size(core_client: CoreClientFactory, config: CoreConfig) -> None:
    client = await core_client(config.model_copy(update={"max_body_size": 4096}))
    response = await client.put(
        "/subscriber/s", data=b"[" + b" " * 8000 + b"]", headers={"Content-Type": "application/json"}
    )
    assert response.status == 413 and "error" in await response.json()

"""PSK authentication (Resoto's JWT scheme) and TLS, against a real core."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import structlog
import trustme
from aiohttp import WSCloseCode

from resotocore.config import CoreConfig
from resotocore.web import auth
from resotoctl.config import Connection
from resotoctl.stack_plan import StackConfig
from resotolib.auth import TokenSource, Verifier, encode
from resotolib.client import CoreClient, CoreError
from resotolib.protocol import Subscription
from resotolib.subscriber import ActionSubscriber
from resotometrics.config import MetricsConfig
from resotoworker.config import WorkerConfig
from tests.support import CoreClientFactory, CoreProcess, core_of, until

PSK = "changeme"


def resoto_token(psk: str, exp: float, alg: str = "HS256", salt: bytes | None = None) -> str:
    """A token built step by step the way Resoto's client builds it."""
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", psk.encode(), salt, 100_000)
    headers = {"salt": base64.standard_b64encode(salt).decode()}
    return jwt.encode({"exp": int(exp)}, key, algorithm=alg, headers=headers)


@pytest.fixture
def secured(config: CoreConfig) -> CoreConfig:
    return config.model_copy(update={"psk": PSK})


async def test_requests_need_a_valid_token(core_client: CoreClientFactory, secured: CoreConfig) -> None:
    client = await core_client(secured)
    assert (await client.get("/subscribers")).status == 401
    response = await client.get(
        "/subscribers", headers={"Authorization": f"Bearer {resoto_token(PSK, time.time() + 60)}"}
    )
    assert response.status == 200
    for open_path in ("/system/ping", "/system/ready", "/metrics"):
        assert (await client.get(open_path)).status == 200


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (f"Bearer {resoto_token('another psk', time.time() + 60)}", "Signature verification failed"),
        (f"Bearer {resoto_token(PSK, time.time() - 60)}", "token expired"),
        ("Bearer " + jwt.encode({"exp": int(time.time() + 60)}, key="", algorithm="none"), "algorithm"),
        ("Bearer not.a.token", "malformed token"),
        ("Bearer ", "Bearer <token>"),
        (f"Basic {resoto_token(PSK, time.time() + 60)}", "Bearer <token>"),
        ("Bearer " + jwt.encode({"exp": int(time.time() + 60)}, "k" * 32, algorithm="HS256"), "salt"),
    ],
)
async def test_bad_tokens_are_401_and_never_logged(
    core_client: CoreClientFactory, secured: CoreConfig, authorization: str, reason: str
) -> None:
    client = await core_client(secured)
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/subscriber/w/collect", headers={"Authorization": authorization})
    assert response.status == 401
    assert reason in (await response.json())["error"]
    token = authorization.partition(" ")[2]
    assert [entry for entry in logs if entry["event"] == "auth_failed"]
    assert all(not token or token not in str(entry) for entry in logs)
    assert await core_of(client).store.subscribers() == []


def test_the_psk_is_not_shown_with_the_settings(tmp_path: Path) -> None:
    core = CoreConfig(data_dir=tmp_path, psk="s3cret-psk", db_password="pw-123")
    others = (
        WorkerConfig(psk="s3cret-psk"), MetricsConfig(psk="s3cret-psk"), Connection(psk="s3cret-psk"),
        StackConfig(psk="s3cret-psk"),
    )  # fmt: skip
    for config in (core, *others):
        assert "s3cret-psk" not in repr(config) and "pw-123" not in repr(config) and "s3cret-psk" not in str(config)


def test_small_clock_skew_is_allowed() -> None:
    verifier = Verifier(PSK)
    assert verifier.verify(f"Bearer {resoto_token(PSK, time.time() - 5)}")["exp"] < time.time()
    token = encode({}, PSK, lifetime=300)
    assert verifier.decode(token)["exp"] > time.time()


def test_token_source_reuses_then_renews() -> None:
    now = [1_000_000.0]
    source = TokenSource(PSK, clock=lambda: now[0])
    first = source.authorization()
    now[0] += 100
    assert source.authorization() == first
    now[0] += 200  # within a minute of expiry: a new token
    assert source.authorization() != first


async def test_websockets_authenticate_by_header_or_first_frame(
    core_client: CoreClientFactory, secured: CoreConfig
) -> None:
    client = await core_client(secured)
    header = {"Authorization": TokenSource(PSK).authorization()}
    assert (await client.post("/subscriber/w/collect", headers=header)).status == 200
    task = await (await client.post("/workflows/collect/run", headers=header)).json()
    # header
    ws = await client.ws_connect("/subscriber/w/handle", headers=header)
    assert (await ws.receive_json())["data"]["task"] == task["task_id"]
    await ws.close()
    # first frame
    ws = await client.ws_connect("/subscriber/w/handle")
    await ws.send_json({"kind": "authorization", "jwt": TokenSource(PSK).authorization()})
    assert (await ws.receive_json())["data"]["task"] == task["task_id"]
    await ws.close()
    # a wrong first frame closes the socket, and the subscriber is not taken
    for first in ({"kind": "authorization", "jwt": "Bearer nope"}, {"kind": "event", "message_type": "x", "data": {}}):
        ws = await client.ws_connect("/subscriber/w/handle")
        await ws.send_json(first)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == WSCloseCode.POLICY_VIOLATION
    events = await client.ws_connect("/events")
    await events.send_json({"kind": "authorization", "jwt": f"Bearer {resoto_token('wrong', time.time() + 60)}"})
    assert (await events.receive()).type is aiohttp.WSMsgType.CLOSE
    assert not core_of(client).registry.is_connected("w")  # type: ignore[arg-type]


async def test_silent_websocket_is_closed(
    core_client: CoreClientFactory, secured: CoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "FIRST_FRAME_TIMEOUT", 0.1)
    client = await core_client(secured)
    ws = await client.ws_connect("/events")
    msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE and "no authorization frame" in str(msg.extra)


async def test_client_library_signs_requests(core_client: CoreClientFactory, secured: CoreConfig) -> None:
    client = await core_client(secured)
    url = str(client.make_url(""))
    async with CoreClient(url, psk=PSK) as core:
        await core.add_subscription("w", "collect")
        assert [s.id for s in await core.subscribers()] == ["w"]
        started = await core.run_workflow("collect")
    async with CoreClient(url, psk="wrong") as core:
        with pytest.raises(CoreError) as info:
            await core.subscribers()
        assert info.value.status == 401
    subscription = Subscription(message_type="collect")
    async with ActionSubscriber(url, "w", [subscription], psk=PSK, min_backoff=0.01) as subscriber:
        async for action in subscriber:
            assert action.data.task == started["task_id"]
            await subscriber.done(action)
            break


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


async def test_tls_with_psk_end_to_end(core_process: Any, tls: dict[str, Path]) -> None:
    core: CoreProcess = await core_process("--psk", PSK, "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]))
    assert core.url.startswith("https://")
    async with CoreClient(core.url, psk=PSK, ca_cert=tls["ca"]) as client:
        await client.add_subscription("w", "collect")
        async with client.websocket("subscriber", "w", "handle") as ws:
            assert not ws.closed
    async with CoreClient(core.url, psk=PSK) as client:  # the system CAs do not know ours
        with pytest.raises(CoreError):
            await client.subscribers()
    context = ssl.create_default_context(cafile=str(tls["ca"]))
    async with aiohttp.ClientSession() as session, session.get(f"{core.url}/subscribers", ssl=context) as r:
        assert r.status == 401


def test_non_loopback_needs_psk_or_allow_insecure(tmp_path: Path, tls: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without --psk"):
        CoreConfig(data_dir=tmp_path, host="0.0.0.0")
    assert CoreConfig(data_dir=tmp_path, host="0.0.0.0", psk="x").host == "0.0.0.0"
    assert CoreConfig(data_dir=tmp_path, host="0.0.0.0", allow_insecure=True).allow_insecure
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        CoreConfig(data_dir=tmp_path, tls_cert=tls["cert"])


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost",
             "LocalHost"],
)  # fmt: skip
def test_every_loopback_address_is_served_without_psk(tmp_path: Path, host: str) -> None:
    assert CoreConfig(data_dir=tmp_path, host=host).host == host


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "localhost.example.com", "example.com"]
)
def test_any_other_address_or_name_needs_psk(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match=f"refusing to listen on {re.escape(host)} without --psk"):
        CoreConfig(data_dir=tmp_path, host=host)


async def test_an_upgrade_header_does_not_open_rest_routes(core_client: CoreClientFactory, secured: CoreConfig) -> None:
    client = await core_client(secured)
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    requests = [
        ("POST", "/subscriber/evil/cleanup"),
        ("GET", "/subscribers"),
        ("POST", "/workflows/collect_and_cleanup/run"),
        ("GET", "/graph"),
        ("DELETE", "/graph/resoto"),
        ("POST", "/graph/resoto/clean"),
        ("GET", "/tasks"),
    ]
    for method, path in requests:
        response = await client.request(method, path, headers=upgrade)
        assert response.status == 401, (method, path, response.status)
    assert await core_of(client).store.subscribers() == []
    assert core_of(client).engine.running() == []


async def test_new_keys_are_derived_off_the_loop_and_a_flood_of_new_tokens_is_refused(
    core_client: CoreClientFactory, secured: CoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deriving a new salt's key blocks a thread, never the loop; past MAX_WAITING_KEYS new salts: 429."""
    release = threading.Event()
    derived_in: list[str] = []

    def slow_derive(psk: str, salt: bytes) -> bytes:
        derived_in.append(threading.current_thread().name)
        release.wait(10)
        return hashlib.pbkdf2_hmac("sha256", psk.encode(), salt, 100_000)

    monkeypatch.setattr(auth, "derive_key", slow_derive)
    monkeypatch.setattr(auth, "MAX_WAITING_KEYS", 2)
    client = await core_client(secured)
    same = resoto_token(PSK, time.time() + 60)

    def get(token: str) -> Any:
        return client.get("/subscribers", headers={"Authorization": f"Bearer {token}"})

    waiting = [asyncio.ensure_future(get(t)) for t in (same, same, resoto_token(PSK, time.time() + 60))]
    verifier = client.app[auth.VERIFIER]
    assert verifier is not None
    await until(lambda: verifier.waiting == 2 and len(derived_in) == 1)
    refused = await get(resoto_token(PSK, time.time() + 60))
    assert refused.status == 429 and "too many new tokens" in (await refused.json())["error"]
    assert (await client.get("/system/ping")).status == 200  # the loop answers while keys are derived
    assert not any(w.done() for w in waiting)
    release.set()
    assert [r.status for r in await asyncio.gather(*waiting)] == [200, 200, 200]
    assert len(derived_in) == 2  # two requests with the same new token shared one derivation
    assert threading.main_thread().name not in derived_in
    assert (await get(same)).status == 200  # known now: no derivation
    assert len(derived_in) == 2
    bogus = resoto_token("another psk", time.time() + 60)
    assert [(await get(bogus)).status for _ in range(2)] == [401, 401]
    assert len(derived_in) == 4  # the key of a bad token is not kept: bad tokens cannot evict good keys


async def test_a_websocket_with_a_new_token_during_a_flood_is_told_to_retry(
    core_client: CoreClientFactory, secured: CoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "MAX_WAITING_KEYS", 0)  # every new salt counts as one too many
    client = await core_client(secured)
    events = await client.ws_connect("/events")
    await events.send_json({"kind": "authorization", "jwt": f"Bearer {resoto_token(PSK, time.time() + 60)}"})
    assert (await events.receive()).type is aiohttp.WSMsgType.CLOSE
    assert events.close_code == WSCloseCode.TRY_AGAIN_LATER

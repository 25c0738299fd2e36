"""The daemon as users run it: a real process, killed with SIGKILL, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tests.chaos.faults import immutable_unsupported
from tests.resotoctl.support import until_async
from tests.support import StartCore


class Worker:
    """A subscriber the way Resoto's client behaves: re-register, then connect to the action channel."""

    def __init__(self, session: aiohttp.ClientSession, sid: str, *message_types: str) -> None:
        self.session = session
        self.sid = sid
        self.message_types = message_types
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, url: str) -> None:
        for message_type in self.message_types:
            params = {"timeout": "60", "wait_for_completion": "True"}
            async with self.session.post(f"{url}/subscriber/{self.sid}/{message_type}", params=params) as r:
                assert r.status == 200
        self.ws = await self.session.ws_connect(f"{url}/subscriber/{self.sid}/handle")

    async def next_action(self) -> dict[str, Any]:
        assert self.ws is not None
        msg = await asyncio.wait_for(self.ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        action: dict[str, Any] = msg.json()
        return action

    async def done(self, action: dict[str, Any]) -> None:
        assert self.ws is not None
        data = {"task": action["data"]["task"], "step": action["data"]["step"]}
        await self.ws.send_json({"kind": "action_done", "message_type": action["message_type"], "data": data})


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        return await response.json()


@pytest.mark.parametrize(
    ("kill_at", "answered_before_kill"),
    [("collect", False), ("collect", True), ("cleanup", False), ("generate_metrics", False)],
)
async def test_sigkill_mid_step_resumes_that_step_once(
    core_process: StartCore, tmp_path: Path, kill_at: str, answered_before_kill: bool
) -> None:
    async with aiohttp.ClientSession() as session:
        core = await core_process()
        worker = Worker(session, "worker", "collect", "cleanup", "generate_metrics")
        await worker.connect(core.url)
        async with session.post(f"{core.url}/workflows/collect_and_cleanup/run") as r:
            task_id = (await r.json())["task_id"]
        while (action := await worker.next_action())["message_type"] != kill_at:
            await worker.done(action)
        if answered_before_kill:
            await worker.done(action)
        core.kill()
        assert await core.wait() == -signal.SIGKILL
        assert worker.ws is not None
        await worker.ws.close()

        core = await core_process(data_dir=core.data_dir)
        ends = await session.ws_connect(f"{core.url}/events?show=task_end")
        await worker.connect(core.url)
        answered: list[str] = []
        while (await get_json(session, f"{core.url}/tasks/{task_id}"))["status"] == "running":
            action = await worker.next_action()
            await worker.done(action)
            if action["data"]["task"] == task_id:  # the hourly schedule may start a run of its own
                answered.append(action["message_type"])
            if action["message_type"] == "generate_metrics" and action["data"]["task"] == task_id:
                break
        async with asyncio.timeout(10):  # the last answer is being applied
            while (await ends.receive_json())["data"]["task"] != task_id:
                pass
        await ends.close()
        # the interrupted step is sent again; an answer sent just before the kill may or may not have
        # been stored, so that step is either sent again or already done, but never both
        expected = ["collect", "cleanup", "generate_metrics"]
        resumed_from = expected.index(kill_at)
        valid = [expected[resumed_from:]] + ([expected[resumed_from + 1 :]] if answered_before_kill else [])
        assert answered in valid
        history = await get_json(session, f"{core.url}/workflows/collect_and_cleanup/runs")
        ours = [r for r in history["runs"] if r["id"] == task_id]
        assert [r["status"] for r in ours] == ["succeeded"]  # once, whatever the schedule started meanwhile
        steps = ours[0]["steps"]
        assert [s["name"] for s in steps] == [
            f"{p}{phase}" for phase in ("collect", "cleanup_plan", "cleanup", "generate_metrics")
            for p in ("pre_", "", "post_")
        ]  # fmt: skip
        assert all(s["success"] for s in steps)


async def test_sigkill_after_some_answers_of_a_step_asks_only_the_others_again(
    core_process: StartCore, tmp_path: Path
) -> None:
    # several subscribers on one step: the answers that cannot complete it are applied in batches
    async with aiohttp.ClientSession() as session:
        core = await core_process()
        workers = [Worker(session, f"w{i}", "collect") for i in range(3)]
        for worker in workers:
            await worker.connect(core.url)
        async with session.post(f"{core.url}/workflows/collect/run") as r:
            task_id = (await r.json())["task_id"]
        actions = [await worker.next_action() for worker in workers]
        for worker, action in zip(workers[:2], actions, strict=False):
            await worker.done(action)
        task_url = f"{core.url}/tasks/{task_id}"

        async def only_w2_awaited() -> bool:  # then both answers are stored: a request sees committed state
            return bool((await get_json(session, task_url))["waiting_for"] == ["w2"])

        await until_async(only_w2_awaited)
        core.kill()
        assert await core.wait() == -signal.SIGKILL
        for worker in workers:
            assert worker.ws is not None
            await worker.ws.close()

        core = await core_process(data_dir=core.data_dir)
        for worker in workers:
            await worker.connect(core.url)
        action = await workers[2].next_action()  # only the one that had not answered is asked again
        assert (action["message_type"], action["data"]["task"]) == ("collect", task_id)
        await workers[2].done(action)

        async def ended() -> dict[str, Any] | None:
            state: dict[str, Any] = await get_json(session, f"{core.url}/tasks/{task_id}")
            return state if state["status"] != "running" else None

        run = await until_async(ended)
        collect = next(s for s in run["steps"] if s["name"] == "collect")
        assert {sid: o["outcome"] for sid, o in collect["subscribers"].items()} == dict.fromkeys(
            ("w0", "w1", "w2"), "done"
        )
        for worker in workers[:2]:  # nothing was sent to those that had answered
            assert worker.ws is not None
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(worker.ws.receive(), 0.2)


async def test_sigterm_stops_cleanly_and_closes_websockets(core_process: StartCore) -> None:
    core = await core_process()
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, "worker", "collect")
        await worker.connect(core.url)
        events = await session.ws_connect(f"{core.url}/events")
        assert core.proc is not None
        started = asyncio.get_running_loop().time()
        core.proc.send_signal(signal.SIGTERM)
        assert await core.wait() == 0
        assert asyncio.get_running_loop().time() - started < 5
        for ws in (worker.ws, events):
            assert ws is not None
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    events_logged = [e["event"] for e in core.log]
    assert "shutting_down" in events_logged and events_logged[-1] == "stopped"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resotocore", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_help_and_version() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--schedule", "--timezone", "--catch-up", "--log-format"):
        assert flag in result.stdout
    assert "RESOTOCORE_SCHEDULE" in result.stdout
    result = run_cli("--version")
    assert result.returncode == 0 and "resotocore, version" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--schedule", "every hour"], {}, "--schedule: invalid cron expression 'every hour'"),
        (["--timezone", "Mars/Base"], {}, "--timezone: unknown timezone 'Mars/Base'"),
        ([], {"RESOTOCORE_SCHEDULE": "99 * * * *"}, "--schedule: invalid cron expression '99 * * * *': minute '99'"),
        (["--schedule", "0 * * *"], {}, "--schedule: invalid cron expression '0 * * *': expected 5 fields"),
        (["--schedule", "0 0 30 2 *"], {}, "--schedule: invalid cron expression '0 0 30 2 *': it never fires"),
        (["--catch-up", "all"], {}, "'all' is not one of 'latest', 'none'"),
        (["--port", "70000"], {}, "--port: Input should be less than or equal to 65535"),
        (["--shutdown-timeout", "inf"], {}, "--shutdown-timeout: Input should be a finite number"),
        (["--db", "arangodb://127.0.0.1:notaport"], {}, "--db: invalid port in 'arangodb://127.0.0.1:notaport'"),
        (["--psk", ""], {}, "--psk: empty: give a key, or leave it unset to run without authentication"),
        ([], {"RESOTOCORE_HEARTBEAT": "nan"}, "--heartbeat: Input should be a finite number"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli("--data-dir", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "resotocore.db").exists()


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cert.pem and key.pem of one certificate, other-key.pem of another, encrypted-key.pem, missing.pem."""
    folder = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    cert, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    other.private_key_pem.write_to_path(str(folder / "other-key.pem"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    (folder / "encrypted-key.pem").write_bytes(pem)
    return folder


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("cert.pem", "missing.pem", "--tls-key: cannot read {}/missing.pem: No such file or directory"),
        ("missing.pem", "key.pem", "--tls-cert: cannot read {}/missing.pem: No such file or directory"),
        ("key.pem", "cert.pem", "--tls-cert: {}/key.pem holds no PEM certificate"),
        ("cert.pem", "other-key.pem", "--tls-key: {0}/other-key.pem is not the private key of the certificate in "
                                      "--tls-cert {0}/cert.pem"),
        ("cert.pem", "cert.pem", "--tls-key: {}/cert.pem holds no PEM private key"),
        ("cert.pem", "encrypted-key.pem", "--tls-key: {}/encrypted-key.pem holds an encrypted private key"),
    ],
)  # fmt: skip
def test_a_certificate_or_key_that_does_not_load_is_refused_naming_the_flag(
    tmp_path: Path, pems: Path, cert: str, key: str, message: str
) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("--data-dir", str(data_dir), "--tls-cert", str(pems / cert), "--tls-key", str(pems / key))
    assert result.returncode == 2
    assert message.format(pems) in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("--data-dir", str(tmp_path), "--port", str(port), "--log-format", "json")
    assert result.returncode == 1
    assert "startup_failed" in result.stderr and "Traceback" not in result.stderr


def not_a_database(path: Path) -> None:
    path.write_bytes(b"not a database " * 300)


def read_only_directory(path: Path) -> None:
    """chmod does not stop root: then the directory gets the immutable flag too (see tests/chaos/faults.py)."""
    path.parent.chmod(0o555)
    if os.geteuid() == 0:
        if reason := immutable_unsupported(path.parent.parent):
            pytest.skip(f"root writes into a read-only directory, and {reason}")
        subprocess.run(["chattr", "+i", str(path.parent)], check=True, capture_output=True)


def writable_again(directory: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(directory)], check=False, capture_output=True)
    directory.chmod(0o755)


@pytest.mark.parametrize(
    ("name", "spoil", "message"),
    [
        ("resotocore.db", Path.mkdir, "unable to open database file"),
        ("resotocore.db", not_a_database, "file is not a database"),
        ("graph.db", not_a_database, "file is not a database"),
        ("resotocore.db", read_only_directory, "unable to open database file"),
    ],
)  # fmt: skip
def test_a_database_that_cannot_be_opened_stops_the_core_with_one_line(
    tmp_path: Path, name: str, spoil: Callable[[Path], None], message: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    try:
        spoil(data_dir / name)
        result = run_cli("--data-dir", str(data_dir), "--port", "0", "--log-format", "json")
    finally:
        writable_again(data_dir)
    assert result.returncode == 1
    [entry] = [json.loads(line) for line in result.stderr.splitlines()]  # one line, no traceback
    assert entry.keys() == {"event", "level", "timestamp", "error"}
    assert (entry["event"], entry["error"]) == (
        "startup_failed",
        f"cannot open the database {data_dir / name}: {message}",
    )


async def test_a_malformed_request_is_logged_as_one_json_line(core_process: StartCore) -> None:
    core = await core_process()
    port = int(core.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /system/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        assert b" 400 " in await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert core.proc is not None
    core.proc.send_signal(signal.SIGTERM)
    assert await core.wait() == 0
    assert [e for e in core.log if e["event"] == "raw"] == []  # every line of stderr was one JSON object
    [error] = [e for e in core.log if e.get("logger") == "aiohttp.server"]
    assert error["level"] == "error" and "LineTooLong" in error["exception"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_address_is_logged_as_a_url_that_works(core_process: StartCore) -> None:
    core = await core_process("--host", "::1")
    assert core.url.startswith("http://[::1]:")
    async with aiohttp.ClientSession() as session, session.get(f"{core.url}/system/ping") as response:
        assert response.status == 200

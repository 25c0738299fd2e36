"""A consumer that never reads: the core's memory stays flat, the consumer is dropped, others are served."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import CoreProcess

EVENTS = 20_000
PAYLOAD = "x" * 2000  # 20k events of 2 KB: 40 MB through the core


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def never_reading(url: str, path: str = "/events") -> asyncio.StreamWriter:
    """Open a websocket with a raw handshake and then never read a byte (with a small receive buffer, so
    what the core sends soon piles up on its side)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 101")
    return writer


async def test_a_consumer_that_never_reads_does_not_grow_memory(core_process: Any) -> None:
    core: CoreProcess = await core_process("--queue-size", "200")
    assert core.proc is not None
    slow = await never_reading(core.url)
    async with aiohttp.ClientSession() as session:
        fast = await session.ws_connect(f"{core.url}/events?show=load")
        sender = await session.ws_connect(f"{core.url}/events?show=nothing")
        await asyncio.sleep(0.2)
        before = rss_mib(core.proc.pid)
        received = 0
        caught_up = asyncio.Event()

        async def read_all() -> None:
            nonlocal received
            while received < EVENTS:
                msg = await fast.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                received += 1
                caught_up.set()

        reading = asyncio.create_task(read_all())
        for i in range(EVENTS):
            await sender.send_json({"kind": "event", "message_type": "load", "data": {"i": i, "pad": PAYLOAD}})
            while received < i - 100:  # a consumer that reads keeps up within its queue
                caught_up.clear()
                await caught_up.wait()
        await asyncio.wait_for(reading, 60)
        after = rss_mib(core.proc.pid)
        assert received == EVENTS  # the reading consumer got everything
        assert after - before < 30, f"core memory grew from {before:.0f} to {after:.0f} MiB"
        async with session.get(f"{core.url}/metrics") as response:
            assert 'resotocore_queue_overflows_total{channel="events"} 1.0' in await response.text()
    slow.close()


STUCK_PAD = 20_000


def events_to_get_stuck() -> int:
    """Events of STUCK_PAD bytes that fill more than the kernel's socket buffers can take (their largest
    size is a setting of the machine), so the core's writer ends up waiting on a consumer that never reads."""
    largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return (2 * largest + 2**20) // STUCK_PAD + 1


async def stuck_sending(core: CoreProcess, events: int) -> asyncio.StreamWriter:
    """A consumer that never reads, and `events` events for it (fewer than its listener's queue holds)."""
    slow = await never_reading(core.url, "/events?show=noise")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{core.url}/events?show=nothing") as sender:
        for i in range(events):
            await sender.send_json({"kind": "event", "message_type": "noise", "data": {"i": i, "pad": "x" * STUCK_PAD}})
        await asyncio.sleep(0.5)
    return slow


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")))


async def test_a_consumer_that_never_reads_does_not_hold_up_shutdown(core_process: Any) -> None:
    events = events_to_get_stuck()
    core: CoreProcess = await core_process("--queue-size", str(events + 100))
    assert core.proc is not None
    slow = await stuck_sending(core, events)
    started = time.monotonic()
    core.proc.send_signal(signal.SIGTERM)
    assert await core.wait(within=15) == 0
    assert time.monotonic() - started < 10, "shutdown waited for a consumer that does not read"
    assert any(e.get("event") == "websocket_cut_off" for e in core.log)
    slow.close()


async def test_a_silent_consumer_is_cut_off_once_the_heartbeat_finds_it(core_process: Any) -> None:
    events = events_to_get_stuck()
    core: CoreProcess = await core_process("--heartbeat", "1", "--queue-size", str(events + 100))
    slow = await stuck_sending(core, events)
    async with asyncio.timeout(15):
        while await metric(core.url, "resotocore_event_listeners") > 0:  # noqa: ASYNC110 - polled over HTTP
            await asyncio.sleep(0.2)
    assert any(e.get("event") == "websocket_cut_off" for e in core.log)
    slow.close()

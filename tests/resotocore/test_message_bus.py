"""The bus on its own: retained messages are replayed to new listeners until they expire."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from resotocore.bus.message_bus import Listener, MessageBus
from tests.support import START, FakeClock


async def received(bus: MessageBus, *listeners: Listener) -> list[list[str]]:
    """Every frame queued for each listener so far (a live probe marks the end)."""
    bus.emit("probe", lambda: "probe")
    frames: list[list[str]] = []
    for listener in listeners:
        frames.append([])
        while (frame := await listener.next()) != "probe":
            assert frame is not None
            frames[-1].append(frame)
    return frames


async def test_a_retained_message_is_replayed_once_to_each_new_listener_that_accepts_it() -> None:
    bus = MessageBus(clock=FakeClock())
    bus.emit("missed", lambda: "missed:wf", retain_until=START + timedelta(minutes=5), key="wf")
    bus.emit("task_end", lambda: "not retained")
    async with bus.subscribe("all") as everything, bus.subscribe("other", ["task_end", "probe"]) as other:
        assert await received(bus, everything, other) == [["missed:wf"], []]
        bus.emit("missed", lambda: "newer", retain_until=START + timedelta(minutes=5), key="wf")
        assert await received(bus, everything, other) == [["newer"], []]  # once, live: no replay when subscribed
    async with bus.subscribe("later") as later:
        assert await received(bus, later) == [["newer"]]


async def test_one_retained_frame_per_message_type_and_key_in_emit_order() -> None:
    bus = MessageBus(clock=FakeClock())
    until = START + timedelta(minutes=5)
    bus.emit("missed", lambda: "a:1", retain_until=until, key="a")
    bus.emit("missed", lambda: "b:1", retain_until=until, key="b")
    bus.emit("other", lambda: "other:a", retain_until=until, key="a")
    bus.emit("missed", lambda: "a:2", retain_until=until, key="a")
    assert [r.frame for r in bus.retained()] == ["b:1", "other:a", "a:2"]
    async with bus.subscribe("all") as listener:
        assert await received(bus, listener) == [["b:1", "other:a", "a:2"]]


async def test_a_retained_message_expires_on_the_bus_clock() -> None:
    clock = FakeClock()
    bus = MessageBus(clock=clock)
    bus.emit("missed", lambda: "missed:wf", retain_until=START + timedelta(minutes=5), key="wf")
    clock.advance(timedelta(minutes=5) - timedelta(microseconds=1))
    async with bus.subscribe("just in time") as listener:
        assert await received(bus, listener) == [["missed:wf"]]
    clock.advance(timedelta(microseconds=1))
    async with bus.subscribe("too late") as listener:
        assert await received(bus, listener) == [[]]
    assert bus.retained() == []


async def test_a_listener_has_one_reader_and_closing_wakes_it() -> None:
    bus = MessageBus(clock=FakeClock())
    listener = bus.listener("one")
    reader = asyncio.create_task(listener.next())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="has a reader already"):
        await listener.next()
    listener.close("done")
    assert await asyncio.wait_for(reader, 1) is None

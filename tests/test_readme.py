"""The README's example script works as printed (pointed at a test core)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import CoreProcess

README = Path(__file__).parent.parent / "README.md"


def example_script() -> str:
    section = README.read_text().split("## Hook a script onto an action", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the section has a python example"
    return match.group(1)


def test_the_example_is_about_fifteen_lines() -> None:
    code = [line for line in example_script().splitlines() if line.strip()]
    assert len(code) <= 15


async def test_the_example_answers_post_collect(core_process: Any, tmp_path: Path) -> None:
    core: CoreProcess = await core_process()
    script = tmp_path / "report.py"
    script.write_text(example_script().replace("http://127.0.0.1:8900", core.url))
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # until the script has subscribed
                async with session.get(f"{core.url}/subscribers/for/post_collect") as r:
                    if await r.json():
                        break
                await asyncio.sleep(0.02)
            async with session.post(f"{core.url}/workflows/collect/run") as r:
                task_id = (await r.json())["task_id"]
            assert proc.stdout is not None
            expected = f"collect finished in task {task_id}"
            async with asyncio.timeout(10):  # the library's log lines come first
                while (line := (await proc.stdout.readline()).decode().strip()) != expected:
                    assert line, "the script ended before printing"
            for _ in range(200):
                async with session.get(f"{core.url}/tasks/{task_id}") as r:
                    run = await r.json()
                if run["status"] != "running":
                    break
                await asyncio.sleep(0.02)
            post_collect = next(s for s in run["steps"] if s["name"] == "post_collect")
            assert post_collect["subscribers"]["my-report"]["outcome"] == "done"
    finally:
        proc.kill()
        await proc.wait()

"""Export and import: a SQLite round trip through the real CLI, and a core started on the imported data."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from resotocore import migrate
from resotocore.config import CoreConfig
from resotocore.db.backends import open_stores
from resotocore.db.store import Changes, QueuedRun, StoreError
from resotocore.workflow.machine import Run, RunStatus, StepRun
from resotolib.graph import CleanRequest, Filter, NodePatch
from resotolib.protocol import Subscriber, SubscriberId, Subscription, TaskId
from resotoworker.collector import GraphBatch
from tests.support import CoreClientFactory

T0 = datetime(2026, 2, 1, tzinfo=UTC)
WORKFLOW = "collect_and_cleanup"
EMPTY_EXPORT = (
    '{"type":"header","format":"resotocore-export","version":1}\n'
    '{"type":"end","counts":{"subscriber":0,"run":0,"queued":0,"trigger_time":0,"node":0,"edge":0}}\n'
)


def batch(account: str) -> list[str]:
    graph = GraphBatch("example", account)
    for i in range(3):
        iid = graph.resource("example_instance", "eu-1", f"i-{i}", tags={"expiration": "1h"}, ctime=T0, cores=i)
        graph.edge(iid, graph.resource("example_volume", "eu-1", f"v-{i}", size=1.5), "delete")
    return graph.ndjson()


async def chunks(lines: list[str]) -> AsyncIterator[bytes]:
    yield ("\n".join(lines) + "\n").encode()


def finished_run(number: int) -> Run:
    at = T0 + timedelta(hours=number // 2)  # pairs of runs share a start time: the stored order decides
    step = StepRun(name="collect", message_type="collect", started_at=at, deadline=at, ended_at=at, success=True)
    return Run(
        id=TaskId(f"task-{number}"), workflow_id=WORKFLOW, trigger="schedule", status=RunStatus.succeeded,
        created_at=at, ended_at=at, steps=(step, replace(step, name="cleanup")),
    )  # fmt: skip


async def populate(config: CoreConfig, schedule_state: bool = True) -> None:
    async with open_stores(config) as (store, graphs):
        subscribers = [
            Subscriber(id=SubscriberId(sid), subscriptions={t: Subscription(message_type=t, timeout=30) for t in types})
            for sid, types in (("worker", ["collect", "cleanup"]), ("metrics ü", ["generate_metrics"]))
        ]  # fmt: skip
        changes = Changes(subscribers=subscribers)
        for number in (3, 0, 1, 2, 5, 4):
            changes.add_run(finished_run(number))
        if schedule_state:
            changes.queued.append(QueuedRun("metrics", "event", T0))
            changes.trigger_times.update({f"{WORKFLOW}/0": T0, "metrics/0": T0 + timedelta(minutes=5)})
        await store.commit(changes)
        for graph, account in (("resoto", "acc1"), ("resoto", "acc2"), ("other", "x")):
            await graphs.merge(graph, chunks(batch(account)))
        await graphs.clean("resoto", CleanRequest(filter=Filter(kinds=["example_volume"]), reason="old"))
        await graphs.patch("resoto", [NodePatch(id=batch("acc1")[4].split('"')[3], cleaned=True, event_log=[{"k": 1}])])


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resotocore", *args], input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, "RESOTOCORE_LOG_FORMAT": "json"},
    )  # fmt: skip


async def test_round_trip_through_the_cli_is_identical(tmp_path: Path) -> None:
    await populate(CoreConfig(data_dir=tmp_path / "one"))
    first = cli("export", "--data-dir", str(tmp_path / "one"))
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert lines[0] == {"type": "header", "format": "resotocore-export", "version": 1}
    assert lines[-1]["counts"] == {"subscriber": 2, "run": 6, "queued": 1, "trigger_time": 2, "node": 28, "edge": 35}
    assert [line["data"]["id"] for line in lines if line["type"] == "run"] == [f"task-{n}" for n in (3, 0, 1, 2, 5, 4)]
    (tmp_path / "export.ndjson").write_text(first.stdout)
    imported = cli("--data-dir", str(tmp_path / "two"), "import", "--input", str(tmp_path / "export.ndjson"))
    assert imported.returncode == 0, imported.stderr
    again = cli("--data-dir", str(tmp_path / "two"), "export", "--output", str(tmp_path / "again.ndjson"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.ndjson").read_text() == first.stdout
    piped = cli("import", "--data-dir", str(tmp_path / "three"), "--input", "-", stdin=first.stdout)
    assert piped.returncode == 0, piped.stderr
    assert cli("export", "--data-dir", str(tmp_path / "three")).stdout == first.stdout


async def test_the_core_serves_the_imported_state(tmp_path: Path, core_client: CoreClientFactory) -> None:
    original = CoreConfig(data_dir=tmp_path / "one", port=0, catch_up="none")
    await populate(original, schedule_state=False)
    path = tmp_path / "export.ndjson"
    with path.open("w") as out:
        await migrate.export(original, out)
    copy = original.model_copy(update={"data_dir": tmp_path / "two"})
    assert await migrate.import_file(copy, path) == migrate.check(path)

    async def served(config: CoreConfig) -> list[Any]:
        client = await core_client(config)
        answers = [await (await client.get("/subscribers")).json()]
        answers.append(await (await client.get(f"/workflows/{WORKFLOW}/runs", params={"limit": "4"})).json())
        answers.append(await (await client.get(f"/workflows/{WORKFLOW}/runs", params={"offset": "4"})).json())
        answers.append(await (await client.get("/graph")).json())
        for graph in ("resoto", "other"):
            search = await client.post(f"/graph/{graph}/search", json={"with_edges": "delete"})
            answers.append(await search.text())
        await client.close()
        return answers

    from_original, from_copy = await served(original), await served(copy)
    assert from_copy == from_original
    assert [r["id"] for r in from_copy[1]["runs"]] == [
        "task-4",
        "task-5",
        "task-2",
        "task-3",
    ]  # ties: last stored first
    assert len(from_copy[0]) == 2 and from_copy[3] == ["other", "resoto"]


async def test_import_refuses_a_store_with_state_unless_forced(tmp_path: Path) -> None:
    config = CoreConfig(data_dir=tmp_path / "one")
    await populate(config)
    path = tmp_path / "export.ndjson"
    with path.open("w") as out:
        await migrate.export(config, out)
    with pytest.raises(migrate.MigrationError, match="already holds state"):
        await migrate.import_file(config, path)
    refused = cli("import", "--data-dir", str(tmp_path / "one"), "--input", str(path))
    assert refused.returncode == 1 and "already holds state" in refused.stderr and "Traceback" not in refused.stderr
    async with open_stores(config) as (store, _):
        await store.commit(Changes(deleted_subscribers=[SubscriberId("worker")]))
    assert await migrate.import_file(config, path, force=True) == migrate.check(path)
    async with open_stores(config) as (store, _):
        assert [s.id for s in await store.subscribers()] == ["metrics ü", "worker"]
        assert (await store.history(WORKFLOW, 10, 0)).total == 6  # same ids replaced, not added


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-1], "ends before its end record"),
        (lambda lines: lines[:3] + lines[4:], "the end record counts"),
        (lambda lines: ['{"type": "header", "format": "other", "version": 1}', *lines[1:]], "line 1: not a"),
        (lambda lines: [*lines[:2], '{"type": "run", "data": {"id": 1}}', *lines[2:]], "line 3: invalid run record"),
        (lambda lines: [*lines[:2], "{broken", *lines[2:]], "line 3: not valid JSON"),
        (lambda lines: [*lines[:2], '{"type": "mystery"}', *lines[2:]], "line 3: unknown record type 'mystery'"),
    ],
)
async def test_a_broken_input_imports_nothing(tmp_path: Path, edit: Any, message: str) -> None:
    config = CoreConfig(data_dir=tmp_path / "one")
    await populate(config)
    path = tmp_path / "export.ndjson"
    with path.open("w") as out:
        await migrate.export(config, out)
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    target = CoreConfig(data_dir=tmp_path / "two")
    with pytest.raises(migrate.MigrationError, match=message):
        await migrate.import_file(target, path)
    async with open_stores(target) as (store, graphs):
        assert await migrate.is_empty(store, graphs)


@pytest.mark.parametrize("command", ["export", "import"])
def test_a_database_that_cannot_be_opened_is_one_line_of_error(tmp_path: Path, command: str) -> None:
    database = tmp_path / "data" / "resotocore.db"
    database.parent.mkdir()
    database.write_bytes(b"not a database " * 300)
    empty = tmp_path / "empty.ndjson"
    empty.write_text(EMPTY_EXPORT)
    source = ["--input", str(empty)] if command == "import" else []
    result = cli(command, "--data-dir", str(database.parent), *source)
    assert result.returncode == 1
    assert result.stderr == f"Error: cannot open the database {database}: file is not a database\n"


def test_export_refuses_a_data_directory_without_a_store_and_creates_nothing(tmp_path: Path) -> None:
    data_dir, output = tmp_path / "mistyped", tmp_path / "state.ndjson"
    result = cli("export", "--data-dir", str(data_dir), "--output", str(output))
    assert result.returncode == 1
    assert result.stderr == f"Error: nothing to export: {data_dir} holds no store (resotocore.db is missing)\n"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_an_earlier_export_as_it_was(tmp_path: Path) -> None:
    data_dir, output = tmp_path / "data", tmp_path / "state.ndjson"
    data_dir.mkdir()
    assert cli("import", "--data-dir", str(data_dir), "--input", "-", stdin=EMPTY_EXPORT).returncode == 0
    assert cli("export", "--data-dir", str(data_dir), "--output", str(output)).returncode == 0
    earlier = output.read_text()
    (data_dir / "graph.db").write_bytes(b"not a database " * 300)  # the next export fails half-way
    result = cli("export", "--data-dir", str(data_dir), "--output", str(output))
    assert result.returncode == 1 and "graph.db" in result.stderr
    assert output.read_text() == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["data", "state.ndjson"]


def test_an_export_keeps_the_files_permissions_and_writes_through_a_symlink(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert cli("import", "--data-dir", str(data_dir), "--input", "-", stdin=EMPTY_EXPORT).returncode == 0
    new, kept = tmp_path / "new.ndjson", tmp_path / "kept.ndjson"
    kept.write_text("old")
    kept.chmod(0o640)
    link = tmp_path / "link.ndjson"
    link.symlink_to(target := tmp_path / "target.ndjson")
    for output in (new, kept, link):
        assert cli("export", "--data-dir", str(data_dir), "--output", str(output)).returncode == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o600  # the whole inventory: owner only
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text().startswith('{"type":"header"')
    assert link.is_symlink() and target.read_text() == kept.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


async def test_export_from_arangodb_creates_no_database(tmp_path: Path, aiohttp_server: Any) -> None:
    """A stand-in that answers like ArangoDB does for a database that does not exist (a mistyped --db-name)."""
    seen: list[str] = []

    async def no_such_database(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        body = {"error": True, "errorNum": 1228, "errorMessage": "database not found", "code": 404}
        return web.json_response(body, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", no_such_database)
    server = await aiohttp_server(app)
    config = CoreConfig(data_dir=tmp_path, db=f"arangodb://127.0.0.1:{server.port}", db_name="typo")
    with pytest.raises(StoreError, match=f"^ArangoDB at http://127.0.0.1:{server.port} has no database 'typo'$"):
        await migrate.export(config, io.StringIO())
    assert seen and all(line.startswith("GET /_db/typo/") for line in seen)  # nothing asked of _system

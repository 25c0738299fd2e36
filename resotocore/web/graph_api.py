"""Graph routes: merge (NDJSON in), search (NDJSON out), aggregate, clean, patch, list, delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from resotocore.core import CORE
from resotocore.db.graph_store import GraphStore, MergeError
from resotocore.db.store import StoreError
from resotocore.web.errors import ClientError, NotFound
from resotolib.graph import AggregateRequest, AggregateRow, CleanRequest, NodePatch, SearchRequest, check_graph_name

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
READ_CHUNK = 1 << 16
_aggregate_rows = TypeAdapter(list[AggregateRow])  # JSON without NaN or Infinity: those become null
Query = TypeVar("Query", SearchRequest, AggregateRequest, CleanRequest)
MAX_AGGREGATE_TERMS = 100


def _graphs(request: web.Request) -> GraphStore:
    return request.app[CORE].graph


def _name(request: web.Request) -> str:
    try:
        return check_graph_name(request.match_info["graph"])
    except ValueError as e:
        raise ClientError(str(e)) from None


def _parse(model: type[Query], body: bytes) -> Query:
    """A JSON query; what the model allows but the store cannot take is answered as the client's error."""
    query = model.model_validate_json(body)
    _check_values(query.model_dump())
    if any("\x00" in tag for tag in query.filter.tags):
        raise ClientError("invalid tag name in filter: NUL character")
    if isinstance(query, AggregateRequest) and len(query.group_by) + len(query.functions) > MAX_AGGREGATE_TERMS:
        raise ClientError(f"too many group_by paths and functions: at most {MAX_AGGREGATE_TERMS} together")
    return query


def _check_values(value: object) -> None:
    """Integers beyond 64 bits and times outside the years 1-9999 (in UTC) cannot be stored or compared."""
    match value:
        case bool():
            pass
        case int() if not -(1 << 63) <= value < 1 << 63:
            raise ClientError(f"integer {value} out of range: at most 64 bits (signed)")
        case datetime():
            try:
                value.astimezone(UTC)
            except (OverflowError, ValueError):
                raise ClientError(f"time {value.isoformat()} out of range in UTC") from None
        case dict():
            for item in value.values():
                _check_values(item)
        case list() | tuple():
            for item in value:
                _check_values(item)


async def _existing(request: web.Request) -> str:
    name = _name(request)
    if not await _graphs(request).exists(name):
        raise NotFound(f"no graph {name!r}")
    return name


@routes.get("/graph")
async def list_graphs(request: web.Request) -> web.Response:
    return web.json_response(await _graphs(request).graphs())


@routes.delete("/graph/{graph}")
async def delete_graph(request: web.Request) -> web.Response:
    name = await _existing(request)
    deleted = await _graphs(request).delete_graph(name)
    return web.json_response({"graph": name, "deleted_nodes": deleted})


@routes.post("/graph/{graph}/merge")
async def merge(request: web.Request) -> web.Response:
    name = _name(request)
    config = request.app[CORE].config
    try:
        result = await _graphs(request).merge(name, _limited(request, config.max_merge_size, config.max_line_size))
    except MergeError as e:
        raise ClientError(f"nothing merged: {e}") from None
    return web.json_response(result.model_dump())


async def _limited(request: web.Request, max_total: int, max_line: int) -> AsyncIterator[bytes]:
    """The request body in chunks; past the size limits the merge stops (and is rolled back)."""
    total, line, current = 0, 1, 0  # current: length of the line that the last chunk left open
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        total += len(chunk)
        if total > max_total:
            raise web.HTTPRequestEntityTooLarge(max_size=max_total, actual_size=total)
        newlines = chunk.count(b"\n")
        first = chunk.find(b"\n") if newlines else len(chunk)
        if current + first > max_line:
            raise MergeError(line, f"line longer than {max_line} bytes")
        if newlines:
            if len(chunk) > max_line:  # a line inside the chunk, or the one it leaves open, may be too long
                for index, part in enumerate(chunk.split(b"\n")[1:], start=1):
                    if len(part) > max_line:
                        raise MergeError(line + index, f"line longer than {max_line} bytes")
            current = len(chunk) - chunk.rfind(b"\n") - 1
            line += newlines
        else:
            current += first
        yield chunk


@routes.post("/graph/{graph}/search")
async def search(request: web.Request) -> web.StreamResponse:
    name = await _existing(request)
    search_request = _parse(SearchRequest, await request.read() or b"{}")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        async for lines in _graphs(request).search(name, search_request):
            await response.write(("\n".join(lines) + "\n").encode())
    except StoreError as e:  # the answer has started: the last line says what went wrong
        log.error("search_failed", graph=name, error=str(e))
        await response.write((json.dumps({"error": str(e)}) + "\n").encode())
    except ConnectionError as e:  # the client went away (stopped reading, e.g. `| head`): nothing left to tell it
        log.info("search_abandoned", graph=name, reason=type(e).__name__)
        return response
    except Exception:  # never leave a started answer unfinished: the client would wait forever
        log.exception("search_failed", graph=name)
        await response.write(b'{"error": "internal error; see the core\'s log"}\n')
    await response.write_eof()
    return response


@routes.post("/graph/{graph}/aggregate")
async def aggregate(request: web.Request) -> web.Response:
    name = await _existing(request)
    rows = await _graphs(request).aggregate(name, _parse(AggregateRequest, await request.read()))
    return web.json_response(text=_aggregate_rows.dump_json(rows).decode())


@routes.post("/graph/{graph}/clean")
async def clean(request: web.Request) -> web.Response:
    name = await _existing(request)
    marked = await _graphs(request).clean(name, _parse(CleanRequest, await request.read()))
    return web.json_response({"marked": marked})


@routes.patch("/graph/{graph}/nodes")
async def patch_nodes(request: web.Request) -> web.Response:
    name = await _existing(request)
    patches = []
    for number, line in enumerate((await request.read()).splitlines(), start=1):
        if line.strip():
            try:
                patches.append(NodePatch.model_validate_json(line))
            except ValidationError as e:
                raise ClientError(f"nothing patched: line {number}: {e.errors()[0]['msg']}") from None
    updated, missing = await _graphs(request).patch(name, patches)
    return web.json_response({"updated": updated, "missing": missing})

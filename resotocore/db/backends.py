"""Choosing and opening the storage backends a configuration selects: embedded SQLite or ArangoDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog

from resotocore.config import CoreConfig
from resotocore.db.arango_conn import ArangoConnection
from resotocore.db.arango_store import ArangoStore
from resotocore.db.graph_arango import ArangoGraphStore
from resotocore.db.graph_sqlite import SqliteGraphStore
from resotocore.db.graph_store import GraphStore
from resotocore.db.sqlite import SqliteStore
from resotocore.db.store import Store

log = structlog.get_logger(__name__)


@asynccontextmanager
async def open_stores(config: CoreConfig, create: bool = True) -> AsyncIterator[tuple[Store, GraphStore]]:
    """The workflow store and the graph store; closed in reverse order on exit.

    ArangoDB: the database (unless not `create`: a StoreError then), collections and indexes are created
    when missing; an unreachable server or refused credentials raise StoreError with a one-line message
    before anything starts.
    """
    async with AsyncExitStack() as stack:
        store: Store
        graph: GraphStore
        if (url := config.arango_url) is not None:
            conn = await asyncio.to_thread(
                ArangoConnection.connect, url, config.db_name, config.db_user, config.db_password, create=create
            )
            stack.callback(conn.close)
            store = await ArangoStore.open(conn)
            stack.push_async_callback(store.close)
            graph = await ArangoGraphStore.open(conn)
            stack.push_async_callback(graph.close)
            log.info("storage_opened", backend="arangodb", url=conn.url, database=conn.name)
        else:
            store = SqliteStore(config.database, config.durability)
            stack.push_async_callback(store.close)
            graph = SqliteGraphStore(config.data_dir / "graph.db", config.durability)
            stack.push_async_callback(graph.close)
            log.info("storage_opened", backend="sqlite", data_dir=str(config.data_dir))
        yield store, graph

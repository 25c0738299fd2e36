"""The one place that talks to python-arango: connecting, schema, queries, stream transactions.

python-arango is synchronous and its results are loosely typed (``Result[T]`` unions, ``Any``
documents); this module narrows them and is the only one that handles them. Every call here blocks:
the stores run them in a thread executor. Server and driver errors become ``StoreError`` with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from arango.client import ArangoClient
from arango.cursor import Cursor
from arango.database import Database, StandardDatabase
from arango.exceptions import ArangoError, ArangoServerError
from arango.http import DefaultHTTPClient

from resotocore.db.store import StoreError
from resotocore.graph.aql import Aql

log = structlog.get_logger(__name__)
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # retries are ours to report, once

DATABASE_NOT_FOUND = 1228
BATCH = 1000
TRANSACTION_BATCH = 1_000_000


@dataclass(frozen=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False
    sparse: bool = False


@dataclass(frozen=True)
class Collection:
    name: str
    edge: bool = False
    indexes: tuple[Index, ...] = field(default_factory=tuple)


def http_url(url: str) -> str:
    """``arangodb://host:port`` → ``http://host:port`` (``arangodbs://`` → https); http(s) stays."""
    parts = urlsplit(url)
    scheme = {"arangodb": "http", "arangodbs": "https", "arangodb+ssl": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/")


class ArangoConnection:
    """One database on one server (or cluster coordinator list), reachable and authorized."""

    def __init__(self, client: ArangoClient, db: StandardDatabase, url: str, name: str, user: str, password: str):
        self._client = client
        self._db = db
        self._credentials = (user, password)
        self.url = url
        self.name = name

    @classmethod
    def connect(
        cls, url: str, name: str, user: str, password: str, timeout: float = 30, create: bool = True
    ) -> ArangoConnection:
        """Open the database (with `create`, create it when missing); a StoreError says what is wrong in one line."""
        hosts = http_url(url)
        http = DefaultHTTPClient(request_timeout=timeout, retry_attempts=1, backoff_factor=0.2)
        client = ArangoClient(hosts=hosts, http_client=http, request_timeout=timeout, resolver_max_tries=2)
        try:
            try:
                db = client.db(name, username=user, password=password, verify=True)
            except ArangoServerError as e:
                if e.error_code != DATABASE_NOT_FOUND and e.http_code != 404:
                    raise
                if not create:
                    client.close()
                    raise StoreError(f"ArangoDB at {hosts} has no database {name!r}") from None
                system = client.db("_system", username=user, password=password, verify=True)
                if not _bool(system.has_database(name)):
                    system.create_database(name)
                    log.info("arango_database_created", url=hosts, database=name)
                db = client.db(name, username=user, password=password, verify=True)
        except ArangoServerError as e:
            client.close()
            if e.http_code in (401, 403):
                raise StoreError(f"ArangoDB at {hosts} refused the credentials of user {user!r}") from None
            raise StoreError(f"ArangoDB at {hosts} answered: {_first_line(e)}") from None
        except (ArangoError, OSError) as e:
            client.close()
            raise StoreError(f"cannot reach ArangoDB at {hosts}: {_first_line(e)}") from None
        return cls(client, db, hosts, name, user, password)

    def ensure(self, collections: list[Collection]) -> None:
        """Create missing collections and indexes (adding an index that exists changes nothing)."""
        with _errors():
            for spec in collections:
                if not _bool(self._db.has_collection(spec.name)):
                    self._db.create_collection(spec.name, edge=spec.edge)
                    log.info("arango_collection_created", database=self.name, collection=spec.name)
                collection = self._db.collection(spec.name)
                for index in spec.indexes:
                    definition = {"type": "persistent", "fields": list(index.fields), "sparse": index.sparse}
                    collection.add_index({**definition, "unique": index.unique})

    def query(self, aql: Aql) -> list[Any]:
        with _errors():
            return _run(self._db, aql)

    def batches(self, aql: Aql, size: int = BATCH) -> Iterator[list[Any]]:
        """The results in batches as the server sends them (a streaming cursor)."""
        with _errors():
            cursor = _cursor(self._db.aql.execute(aql.query, bind_vars=aql.bind_vars, batch_size=size, stream=True))
        try:
            while True:
                with _errors():
                    queue = cursor.batch()
                    batch = list(queue or ())
                    if queue:
                        queue.clear()
                    more = bool(cursor.has_more())
                if batch:
                    yield batch
                if not more:
                    return
                with _errors():
                    cursor.fetch()
        finally:
            cursor.close(ignore_missing=True)

    @contextmanager
    def transaction(self, write: list[str]) -> Iterator[Transaction]:
        """A stream transaction: committed when the block ends, aborted when it raises."""
        with _errors():
            txn = self._db.begin_transaction(write=write)
        try:
            yield Transaction(txn)
        except BaseException:
            try:
                txn.abort_transaction()
            except ArangoError as e:
                log.warning("arango_abort_failed", error=_first_line(e))
            raise
        with _errors():
            txn.commit_transaction()

    def drop(self) -> None:
        """Drop this database (tests)."""
        with _errors():
            user, password = self._credentials
            system = self._client.db("_system", username=user, password=password)
            system.delete_database(self.name, ignore_missing=True)

    def close(self) -> None:
        self._client.close()


class Transaction:
    def __init__(self, db: Database) -> None:
        self._db = db

    def query(self, aql: Aql) -> list[Any]:
        """The whole result in the first answer: a cursor's next batches would travel outside the transaction."""
        with _errors():
            return _run(self._db, aql, TRANSACTION_BATCH)


def _run(db: Database, aql: Aql, batch_size: int = BATCH) -> list[Any]:
    cursor = _cursor(db.aql.execute(aql.query, bind_vars=aql.bind_vars, batch_size=batch_size))
    try:
        return list(cursor)
    finally:
        cursor.close(ignore_missing=True)


def _cursor(result: object) -> Cursor:
    if not isinstance(result, Cursor):
        raise StoreError(f"unexpected answer from python-arango: {type(result).__name__}")
    return result


def _bool(result: object) -> bool:
    if not isinstance(result, bool):
        raise StoreError(f"unexpected answer from python-arango: {type(result).__name__}")
    return result


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ArangoError as e:
        raise StoreError(f"ArangoDB: {_first_line(e)}") from e
    except OSError as e:
        raise StoreError(f"ArangoDB unreachable: {_first_line(e)}") from e

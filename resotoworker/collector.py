"""The collector plugin API. A collector lists the resources of one cloud, one account at a time,
and deletes single resources. Collectors are found by entry point (group ``resoto.collectors``),
so a third-party package adds one by declaring::

    [project.entry-points."resoto.collectors"]
    mycloud = "mypackage.collector:MyCloudCollector"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from resotolib.graph import ROOT_ID, Edge, EdgeType, Node, node_id

ENTRY_POINT_GROUP = "resoto.collectors"

Progress = Callable[[str, int, int], Awaitable[None]]
"""progress(name, current, total): report how far a collector got (sent as action_progress)."""


@dataclass(frozen=True)
class CollectorContext:
    """What the worker hands a collector: its data directory and the worker's settings."""

    data_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)


class Collector(ABC):
    """One cloud. Subclasses set `cloud` and implement accounts, collect_account and delete."""

    cloud: ClassVar[str]

    def __init__(self, context: CollectorContext) -> None:
        self.context = context

    @abstractmethod
    async def accounts(self) -> Sequence[str]:
        """The account ids this collector can reach."""

    @abstractmethod
    async def collect_account(self, account: str, progress: Progress) -> GraphBatch:
        """Every resource of one account, as one merge batch (its account node replaces the old subtree)."""

    @abstractmethod
    async def delete(self, node: Node) -> None:
        """Delete the cloud resource behind `node`; raise on failure."""


def load_collectors(names: Sequence[str], context: CollectorContext) -> list[Collector]:
    """Instantiate the named collectors from their entry points; unknown names raise with the known ones."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    missing = [n for n in names if n not in found]
    if missing:
        raise LookupError(f"unknown collector {', '.join(missing)}; installed: {', '.join(sorted(found)) or 'none'}")
    collectors = []
    for name in names:
        cls = found[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Collector)):
            raise TypeError(f"entry point {name} is not a Collector subclass")
        collectors.append(cls(context))
    return collectors


class GraphBatch:
    """Builds one account's merge batch: root → cloud → account (replace) → regions → resources."""

    def __init__(self, cloud: str, account: str, account_name: str | None = None) -> None:
        self.cloud = cloud
        self.account = account
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self._regions: dict[str, str] = {}
        self.root_id = ROOT_ID
        self.cloud_id = node_id("cloud", cloud, "", "", cloud)
        self.account_id = node_id("account", cloud, account, "", account)
        self.nodes.append(Node(id=ROOT_ID, reported={"kind": "graph_root", "id": ROOT_ID, "name": "root"}))
        self.nodes.append(Node(id=self.cloud_id, reported={"kind": "cloud", "id": cloud, "name": cloud}))
        self.nodes.append(
            Node(
                id=self.account_id,
                reported={"kind": "account", "id": account, "name": account_name or account},
                metadata={"replace": True},
            )
        )
        self.edge(ROOT_ID, self.cloud_id)
        self.edge(self.cloud_id, self.account_id)

    def region(self, region: str) -> str:
        """The region node's id, created on first use."""
        if region not in self._regions:
            rid = node_id("region", self.cloud, self.account, region, region)
            self._regions[region] = rid
            self.nodes.append(Node(id=rid, reported={"kind": "region", "id": region, "name": region}))
            self.edge(self.account_id, rid)
        return self._regions[region]

    def resource(
        self,
        kind: str,
        region: str,
        provider_id: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        ctime: datetime | None = None,
        protected: bool = False,
        parent: str | None = None,
        **fields: Any,
    ) -> str:
        """Add a resource under its region (or `parent`); returns its node id."""
        nid = node_id(kind, self.cloud, self.account, region, provider_id)
        reported: dict[str, Any] = {"kind": kind, "id": provider_id, "name": name or provider_id}
        reported["tags"] = dict(tags or {})
        if ctime is not None:
            reported["ctime"] = ctime.isoformat()
        reported.update(fields)
        metadata: dict[str, Any] = {"protected": True} if protected else {}
        self.nodes.append(Node(id=nid, reported=reported, metadata=metadata))
        self.edge(parent or self.region(region), nid)
        return nid

    def edge(self, from_id: str, to_id: str, edge_type: EdgeType = "default") -> None:
        self.edges.append(Edge(from_id=from_id, to_id=to_id, edge_type=edge_type))

    def ndjson(self) -> list[str]:
        """The batch in Resoto's merge format: one JSON line per node, then one per edge."""
        lines = [n.model_dump_json() for n in self.nodes]
        lines += [e.model_dump_json(by_alias=True) for e in self.edges]
        return lines

"""The resource graph as every process sees it: nodes, edges, filters and aggregates (pydantic).

A node is ``{"id", "reported", "metadata", "desired"}``; ``reported`` holds ``kind``, ``id``, ``name``,
``tags``, ``ctime`` and kind-specific fields. Edges are ``default`` (containment) or ``delete``
(``from`` must be deleted before ``to``). Collectors send a merge as NDJSON: nodes, then edges.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

EdgeType = Literal["default", "delete"]
DEFAULT_GRAPH = "resoto"
GRAPH_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
"""What the core accepts as a graph name (``/graph/{graph}``); anything else is answered 400."""
ROOT_ID = "root"
FIELD_PATH = re.compile(r"^(reported|metadata|desired)(\.[A-Za-z0-9_:\-]+)+$")
SHORTCUTS = ("id", "kind", "cloud", "account", "region", "name", "ctime", "expires")


def check_path(path: str) -> str:
    """A path a filter, group or aggregate may name; ValueError with the choices otherwise."""
    if path not in SHORTCUTS and not FIELD_PATH.match(path):
        raise ValueError(f"invalid path {path!r}: use {', '.join(SHORTCUTS)} or reported.<field>[.<field>...]")
    return path


FieldPath = Annotated[str, AfterValidator(check_path)]
"""A path a filter, group or aggregate may name."""


def node_id(kind: str, cloud: str, account: str, region: str, provider_id: str) -> str:
    """The stable id of a resource: the same resource always gets the same id, across runs and workers."""
    key = "\x1f".join((kind, cloud, account, region, provider_id))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def check_graph_name(name: str) -> str:
    """``name`` when the core accepts it as a graph name, else ValueError saying what a name may hold."""
    if not GRAPH_NAME.fullmatch(name):
        raise ValueError(f"invalid graph name {name!r}: use 1-64 letters, digits, _ and -")
    return name


GraphName = Annotated[str, AfterValidator(check_graph_name)]
"""A settings field holding a graph name: a bad name is refused when the settings are read."""


class Node(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256)
    reported: dict[str, JsonValue]
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    desired: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("reported")
    @classmethod
    def _has_kind(cls, reported: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if not isinstance(reported.get("kind"), str) or not reported["kind"]:
            raise ValueError("reported.kind must be a non-empty string")
        return reported

    @property
    def kind(self) -> str:
        return str(self.reported["kind"])


class Edge(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_id: str = Field(alias="from")
    to_id: str = Field(alias="to")
    edge_type: EdgeType = "default"


Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "exists"]


class Comparison(BaseModel):
    """``path op value``: path is a shortcut (kind, cloud, account, region, name, ...) or reported.x.y.

    Every key is checked and `value` is required (``null`` too must be written out), except for
    ``exists``, which takes none: a misspelt key or a misread operator must not turn a filter into one
    that matches nearly everything.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: FieldPath
    op: Op = "=="
    value: JsonValue = None

    @model_validator(mode="after")
    def _has_value(self) -> Comparison:
        given = "value" in self.model_fields_set
        if self.op == "exists" and given:  # {"op": "exists", "value": false} would match the opposite of its intent
            raise ValueError(f"comparison {self.path} exists takes no value (nodes without it: == null)")
        if self.op != "exists" and not given:
            raise ValueError(f"comparison {self.path} {self.op} needs a value (op 'exists' tests whether it is set)")
        return self


class Filter(BaseModel):
    """What to match. Every given criterion must hold; the empty filter ``{}`` matches every node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ids: list[str] | None = None
    kinds: list[str] | None = None
    cloud: list[str] | None = None
    account: list[str] | None = None
    region: list[str] | None = None
    fields: list[Comparison] = Field(default_factory=list)
    tags: dict[str, str | None] = Field(
        default_factory=dict, description="tag name to value; null: the tag exists with any value"
    )
    expired_before: datetime | None = None
    clean: bool | None = Field(None, description="desired.clean")
    cleaned: bool | None = Field(None, description="metadata.cleaned")
    protected: bool | None = Field(None, description="metadata.protected")

    @field_validator("cloud", "account", "region", "kinds", "ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SearchRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    filter: Filter = Field(default_factory=Filter)
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)
    with_edges: EdgeType | None = Field(None, description="also return edges of this type among the found nodes")


class AggregateFunction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    function: Literal["count", "sum", "min", "max"]
    path: FieldPath | None = None
    name: str = Field(alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _has_path(self) -> AggregateFunction:
        if self.function != "count" and self.path is None:
            raise ValueError(f"{self.function} needs a path")
        return self


class AggregateRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    filter: Filter = Field(default_factory=Filter)
    group_by: list[FieldPath] = Field(default_factory=list)
    functions: list[AggregateFunction] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_names(self) -> AggregateRequest:
        """Groups and values are keyed by these names: a repeated one would silently be one key."""
        for what, names in (
            ("group_by path", self.group_by),
            ("function name ('as')", [f.name for f in self.functions]),
        ):
            if repeated := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"each {what} may appear once; repeated: {', '.join(repeated)}")
        return self


class AggregateRow(BaseModel):
    group: dict[str, JsonValue]
    values: dict[str, JsonValue]


class CleanRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    filter: Filter
    reason: str = Field("marked for cleanup", max_length=1000)


class NodePatch(BaseModel):
    """One line of ``PATCH /graph/{graph}/nodes``: what to change on one node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    cleaned: bool | None = None
    clean: bool | None = Field(None, description="desired.clean")
    event_log: list[dict[str, JsonValue]] = Field(default_factory=list, description="entries appended")
    tags: dict[str, str | None] = Field(default_factory=dict, description="tags set; null removes the tag")


class MergeResult(BaseModel):
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

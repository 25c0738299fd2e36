"""Metric definitions: what one Prometheus metric family is computed from, as pydantic models.

A definition names the metric (``name``, ``help``, ``type``) and the aggregate query that computes it:
the ``filter`` of the nodes to look at, the ``labels`` (label name to the field path grouped by), the
``function`` over the matching nodes of each group and, for sum/min/max, the ``path`` it reads. The
core's aggregate cannot do arithmetic, so ``scale`` multiplies every value in the exporter (GiB to
bytes: 1073741824). ``expired: true`` keeps only nodes whose expiry lies before the time of the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from resotolib.graph import AggregateFunction, AggregateRequest, FieldPath, Filter

RESERVED_PREFIX = "resotometrics_"
"""The exporter's own metrics; definitions may not use it."""
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
VALUE = "value"
"""The name (``as``) of the aggregate function's result in every row."""


def _label_name(name: str) -> str:
    if not LABEL_NAME.match(name):
        raise ValueError(f"invalid label name {name!r}: use letters, digits and _, not starting with a digit")
    if name.startswith("__"):
        raise ValueError(f"invalid label name {name!r}: names starting with '__' are reserved by Prometheus")
    return name


def _metric_name(name: str) -> str:
    if not METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: use letters, digits, _ and :, not starting with a digit")
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(f"invalid metric name {name!r}: {RESERVED_PREFIX}* are the exporter's own metrics")
    return name


"""A shortcut (cloud, account, region, kind, name, ...) or ``reported.<field>[.<field>...]``."""
LabelName = Annotated[str, AfterValidator(_label_name)]
MetricName = Annotated[str, AfterValidator(_metric_name)]


class MetricDefinition(BaseModel):
    """One metric family: computed by one aggregate query, one sample per group of nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: MetricName = Field(description="Metric name; a counter's samples always end in _total.")
    help: str = Field(min_length=1, description="The # HELP text.")
    type: Literal["gauge", "counter"] = Field("gauge", description="Prometheus metric type.")
    filter: Filter = Field(default_factory=Filter, description="Which nodes count (resotolib.graph.Filter).")
    expired: bool = Field(False, description="Only nodes whose expiry lies before the time of the run.")
    labels: dict[LabelName, FieldPath] = Field(
        default_factory=dict, description="Label name to the field path whose value it carries (grouped by)."
    )
    function: Literal["count", "sum", "min", "max"] = Field("count", description="Aggregate of each group.")
    path: FieldPath | None = Field(None, description="Field the function reads; required for sum, min and max.")
    scale: float = Field(1.0, description="Every value is multiplied by this factor (unit conversion).")

    @field_validator("scale")
    @classmethod
    def _finite(cls, scale: float) -> float:
        if not math.isfinite(scale) or scale == 0:
            raise ValueError("scale must be a finite number other than 0")
        return scale

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.function != "count" and self.path is None:
            raise ValueError(f"function {self.function} needs a path: the field it reads")
        if self.expired and self.filter.expired_before is not None:
            raise ValueError("use either expired: true or filter.expired_before, not both")
        return self

    @property
    def exposed_names(self) -> frozenset[str]:
        """The family and sample names this metric puts on /metrics (a counter's samples end in _total)."""
        if self.type == "counter":
            family = self.name.removesuffix("_total")
            return frozenset({family, family + "_total"})
        return frozenset({self.name})

    @property
    def group_by(self) -> list[str]:
        """The distinct label paths, in label order (two labels may carry the same path)."""
        return list(dict.fromkeys(self.labels.values()))

    def request(self, now: datetime) -> AggregateRequest:
        """The aggregate query of a run at ``now``."""
        selector = self.filter.model_copy(update={"expired_before": now}) if self.expired else self.filter
        function = AggregateFunction(function=self.function, path=self.path, name=VALUE)
        return AggregateRequest(filter=selector, group_by=self.group_by, functions=[function])


class DefinitionFile(BaseModel):
    """A definition file: the metrics, and whether they extend the built-in ones or replace them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extend: bool = Field(
        True,
        description="true: add these metrics to the built-in ones (a metric of the same name replaces the "
        "built-in one); false: serve only these metrics.",
    )
    metrics: list[MetricDefinition] = Field(default_factory=list, description="The metric definitions.")


def combine(defaults: Sequence[MetricDefinition], user: DefinitionFile) -> tuple[MetricDefinition, ...]:
    """The definitions in effect: the user's alone, or the defaults with the user's replacing and added."""
    if not user.extend:
        return tuple(user.metrics)
    mine = {m.name: m for m in user.metrics}
    replaced = [mine.pop(d.name, d) for d in defaults]
    return (*replaced, *mine.values())

"""A snapshot: every metric family of one update, built from the aggregate rows of each definition.

Pure: no I/O, no clock. Label values are what the core answered for the label's path, as text (absent
is ``""``, numbers and booleans as JSON would write them); prometheus-client escapes them when it
renders the snapshot. Rows whose label values come out the same (``1`` and ``"1"``) are combined with
the definition's function, so a snapshot never holds the same series twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import JsonValue

from resotolib.graph import AggregateRow
from resotometrics.definition import VALUE, MetricDefinition

LabelValues = tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    """What /metrics serves until the next update; never changed once built."""

    families: tuple[Metric, ...] = ()
    series: int = 0
    computed_at: datetime | None = None
    """When the update that built it started (None: no update succeeded yet)."""


EMPTY = Snapshot()


def build_snapshot(
    definitions: Sequence[MetricDefinition], rows: Mapping[str, Sequence[AggregateRow]], computed_at: datetime
) -> Snapshot:
    """One family per definition, from the rows its query answered (a definition without rows: no samples)."""
    families = tuple(build_family(d, rows.get(d.name, ())) for d in definitions)
    return Snapshot(families, sum(len(f.samples) for f in families), computed_at)


def build_family(definition: MetricDefinition, rows: Sequence[AggregateRow]) -> Metric:
    """The family of one definition: one sample per distinct label set, scaled, sorted by labels."""
    samples: dict[LabelValues, float] = {}
    paths = list(definition.labels.values())
    for row in rows:
        value = sample_value(definition.function, row.values.get(VALUE))
        if value is None:
            continue
        value *= definition.scale
        key = tuple(label_value(row.group.get(path)) for path in paths)
        samples[key] = value if key not in samples else _combine(definition.function, samples[key], value)
    names = list(definition.labels)
    family: GaugeMetricFamily | CounterMetricFamily
    if definition.type == "counter":
        family = CounterMetricFamily(definition.name, definition.help, labels=names)
    else:
        family = GaugeMetricFamily(definition.name, definition.help, labels=names)
    for key in sorted(samples):
        family.add_metric(list(key), samples[key])
    return family


def label_value(value: JsonValue) -> str:
    """A group value as label text: strings as they are, absent as "", anything else as compact JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep the output valid UTF-8
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def sample_value(function: str, value: JsonValue) -> float | None:
    """The number of one row; a sum over nothing is 0, min and max over nothing give no sample."""
    if value is None:
        return 0.0 if function in ("count", "sum") else None
    if isinstance(value, bool | int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return None if math.isnan(number) else number


def _combine(function: str, current: float, value: float) -> float:
    match function:
        case "min":
            return min(current, value)
        case "max":
            return max(current, value)
    return current + value

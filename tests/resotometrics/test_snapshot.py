"""Snapshots built from aggregate rows (pure), and their text exposition read back by Prometheus's parser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from resotolib.graph import AggregateRow
from resotometrics.definition import MetricDefinition
from resotometrics.exporter import Exporter
from resotometrics.snapshot import EMPTY, build_family, build_snapshot, label_value, sample_value
from tests.resotometrics.support import only, parse_metrics

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ODD = 'a "quoted" \\ back\\slash\nnew line, ünïcødé 🚀 } # HELP x'


def metric(**fields: Any) -> MetricDefinition:
    return MetricDefinition.model_validate({"name": "m", "help": "h", **fields})


def row(value: JsonValue, **group: JsonValue) -> AggregateRow:
    return AggregateRow(group=group, values={"value": value})


def samples(definition: MetricDefinition, rows: list[AggregateRow]) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for s in build_family(definition, rows).samples]


def test_one_sample_per_group_with_label_names_mapped_from_paths() -> None:
    definition = metric(labels={"cloud": "cloud", "type": "reported.instance_type"})
    rows = [row(3, cloud="aws", **{"reported.instance_type": "t3"}), row(1, cloud="aws")]
    assert samples(definition, rows) == [
        ("m", {"cloud": "aws", "type": ""}, 1.0),
        ("m", {"cloud": "aws", "type": "t3"}, 3.0),
    ]


def test_scale_multiplies_every_value() -> None:
    definition = metric(labels={"cloud": "cloud"}, function="sum", path="reported.volume_size", scale=2**30)
    assert samples(definition, [row(28, cloud="aws"), row(0.5, cloud="gcp")]) == [
        ("m", {"cloud": "aws"}, 28 * 2**30),
        ("m", {"cloud": "gcp"}, 2**29),
    ]


def test_label_values_that_render_the_same_are_combined() -> None:
    rows = [row(2, **{"reported.n": 1}), row(5, **{"reported.n": "1"}), row(4, **{"reported.n": None})]
    counted = metric(labels={"n": "reported.n"})
    assert samples(counted, rows) == [("m", {"n": ""}, 4.0), ("m", {"n": "1"}, 7.0)]
    largest = metric(labels={"n": "reported.n"}, function="max", path="reported.size")
    assert samples(largest, rows) == [("m", {"n": ""}, 4.0), ("m", {"n": "1"}, 5.0)]
    smallest = metric(labels={"n": "reported.n"}, function="min", path="reported.size")
    assert samples(smallest, rows) == [("m", {"n": ""}, 4.0), ("m", {"n": "1"}, 2.0)]


def test_values_the_core_could_not_compute() -> None:
    assert sample_value("sum", None) == 0.0  # every value of the group was absent
    assert sample_value("count", None) == 0.0
    assert sample_value("max", None) is None
    assert sample_value("sum", "12.5") == 12.5
    assert sample_value("sum", "n/a") is None
    assert sample_value("sum", {"a": 1}) is None
    assert sample_value("max", True) == 1.0
    largest = metric(labels={"c": "cloud"}, function="max", path="reported.size")
    assert samples(largest, [row(None, cloud="a"), row("x", cloud="b"), row(7, cloud="c")]) == [("m", {"c": "c"}, 7.0)]


def test_label_values_as_text() -> None:
    assert label_value(None) == ""
    assert label_value(ODD) == ODD
    assert label_value(3) == "3"
    assert label_value(2.5) == "2.5"
    assert label_value(True) == "true"
    assert label_value({"b": 1, "a": [1, "x"]}) == '{"a":[1,"x"],"b":1}'
    assert label_value("broken \udc80 surrogate") == "broken ? surrogate"


def test_counter_samples_end_in_total() -> None:
    assert samples(metric(name="things", type="counter"), [row(2)]) == [("things_total", {}, 2.0)]
    assert samples(metric(name="things_total", type="counter"), [row(2)]) == [("things_total", {}, 2.0)]


def test_snapshot_has_one_family_per_definition() -> None:
    definitions = [metric(name="a", labels={"c": "cloud"}), metric(name="b"), metric(name="c", type="counter")]
    snapshot = build_snapshot(definitions, {"a": [row(1, cloud="x"), row(2, cloud="y")], "b": [row(0)]}, AT)
    assert [f.name for f in snapshot.families] == ["a", "b", "c"]
    assert [len(f.samples) for f in snapshot.families] == [2, 1, 0]
    assert snapshot.series == 3 and snapshot.computed_at == AT
    assert EMPTY.families == () and EMPTY.computed_at is None


def test_odd_label_values_survive_the_text_format() -> None:
    odd_values = [ODD, "", "\\", '"', "\n", "\\n", "tab\there", "🚀", "a=b,c", "} x 1"]
    definition = metric(name="resoto_odd_total", help='help with \\ and\nnewline "quoted"', labels={"v": "name"})
    exporter = Exporter([definition])
    rows = [row(n + 1, name=value) for n, value in enumerate(odd_values)]
    rows.append(row(100, name="broken \udc80"))
    exporter.succeeded(build_snapshot([definition], {definition.name: rows}, AT), 0.5)
    text = exporter.render().decode("utf-8")  # valid UTF-8 even with a lone surrogate in the data
    parsed = only(parse_metrics(text), "resoto_odd_total")
    assert parsed == {
        **{frozenset({("v", value)}): float(n + 1) for n, value in enumerate(odd_values)},
        frozenset({("v", "broken ?")}): 100.0,
    }


def test_exporter_metrics_track_updates() -> None:
    exporter = Exporter([metric(name="a")])
    before = parse_metrics(exporter.render().decode())
    assert only(before, "resotometrics_last_success_timestamp_seconds") == {frozenset(): 0.0}
    assert only(before, "resotometrics_update_failures_total") == {frozenset(): 0.0}
    assert only(before, "a") == {}
    exporter.succeeded(build_snapshot(exporter.definitions, {"a": [row(5)]}, AT), 1.5)
    exporter.failed("metric a: 400: bad", 0.2)
    after = parse_metrics(exporter.render().decode())
    assert only(after, "a") == {frozenset(): 5.0}
    assert only(after, "resotometrics_last_success_timestamp_seconds") == {frozenset(): AT.timestamp()}
    assert only(after, "resotometrics_update_failures_total") == {frozenset(): 1.0}
    assert only(after, "resotometrics_update_metrics_seconds_count") == {frozenset(): 2.0}
    assert only(after, "resotometrics_update_metrics_seconds_sum") == {frozenset(): 1.7}
    assert exporter.health(core_connected=True) == {
        "status": "ok", "core_connected": True, "metrics": 1, "series": 1, "updates": 1,
        "last_success": AT.isoformat(), "last_error": "metric a: 400: bad",
    }  # fmt: skip

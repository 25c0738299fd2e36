"""Metric definitions: the built-in file, user files that extend or replace it, and bad files refused
with the line and the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from resotometrics.definition import MetricDefinition
from resotometrics.loader import DefinitionError, load_definitions, parse_definitions

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GIB = 2**30
BUILT_IN = [
    "resoto_instances_total", "resoto_cores_total", "resoto_memory_bytes", "resoto_volumes_total",
    "resoto_volume_bytes", "resoto_snapshots_total", "resoto_buckets_total", "resoto_security_groups_total",
    "resoto_accounts_total", "resoto_expired_resources_total", "resoto_cleaned_resources_total",
]  # fmt: skip


def by_name(definitions: tuple[MetricDefinition, ...]) -> dict[str, MetricDefinition]:
    return {d.name: d for d in definitions}


def test_built_in_definitions() -> None:
    definitions = load_definitions()
    assert [d.name for d in definitions] == BUILT_IN
    d = by_name(definitions)
    for definition in definitions:
        assert definition.type == "gauge" and definition.help
        assert list(definition.labels)[:1] == ["cloud"]
        assert definition.request(NOW).functions[0].name == "value"
    for name in ("resoto_instances_total", "resoto_cores_total", "resoto_memory_bytes"):
        assert d[name].filter.kinds == ["example_instance", "aws_ec2_instance"]
        assert d[name].labels == {
            "cloud": "cloud", "account": "account", "region": "region",
            "instance_type": "reported.instance_type", "status": "reported.instance_status",
        }  # fmt: skip
    assert (d["resoto_cores_total"].function, d["resoto_cores_total"].path) == ("sum", "reported.instance_cores")
    assert (d["resoto_memory_bytes"].path, d["resoto_memory_bytes"].scale) == ("reported.instance_memory", GIB)
    assert (d["resoto_volume_bytes"].path, d["resoto_volume_bytes"].scale) == ("reported.volume_size", GIB)
    assert d["resoto_volumes_total"].labels["volume_type"] == "reported.volume_type"
    assert d["resoto_buckets_total"].filter.kinds == ["example_bucket", "aws_s3_bucket"]
    assert d["resoto_accounts_total"].filter.kinds == ["account"]
    assert d["resoto_cleaned_resources_total"].filter.cleaned is True
    assert d["resoto_instances_total"].filter.cleaned is False  # deleted by the cleanup that just ran


def test_expired_is_relative_to_the_run() -> None:
    expired = by_name(load_definitions())["resoto_expired_resources_total"]
    request = expired.request(NOW)
    assert request.filter.expired_before == NOW and request.filter.cleaned is False
    assert request.group_by == ["cloud", "account", "region", "kind"]


def test_labels_sharing_a_path_group_once() -> None:
    text = "metrics:\n  - name: m\n    help: h\n    labels: {a: cloud, b: reported.x, c: cloud}\n"
    [metric] = parse_definitions(text, "f.yaml").metrics
    assert metric.group_by == ["cloud", "reported.x"]


def test_user_file_extends_and_replaces_by_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "metrics:\n"
        "  - name: resoto_buckets_total\n    help: Buckets per account.\n    labels: {account: account}\n"
        "  - name: my_gpus_total\n    help: GPUs.\n    type: counter\n    function: sum\n    path: reported.gpus\n"
    )
    definitions = load_definitions(path)
    assert [d.name for d in definitions] == [*BUILT_IN, "my_gpus_total"]
    d = by_name(definitions)
    assert d["resoto_buckets_total"].labels == {"account": "account"}
    assert d["my_gpus_total"].type == "counter" and d["my_gpus_total"].exposed_names == {"my_gpus", "my_gpus_total"}


def test_user_file_replaces_everything(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extend: false\nmetrics:\n  - name: only_this\n    help: Alone.\n")
    assert [d.name for d in load_definitions(path)] == ["only_this"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param("metrics:\n  - name: a\n    help: h\n    lables: {x: cloud}\n", 4,
                     "unknown field 'lables' (did you mean 'labels'?) in metrics[0]", id="unknown-field"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    filter:\n      regoin: [x]\n", 5,
                     "unknown field 'regoin' (did you mean 'region'?) in metrics[0].filter", id="unknown-filter"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    filter:\n      fields: [{path: a, opp: '>'}]\n", 5,
                     "unknown field 'opp' (did you mean 'op'?) in metrics[0].filter.fields[0]", id="unknown-op-key"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    type: histogram\n", 4,
                     "metrics[0].type: Input should be 'gauge' or 'counter'", id="bad-type"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    scale: lots\n", 4,
                     "metrics[0].scale: Input should be a valid number", id="bad-number"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    filter: {kinds: 5}\n", 4,
                     "metrics[0].filter.kinds: Input should be a valid list", id="bad-filter"),
        pytest.param("metrics:\n  - name: a\n    help: [h\n  - name: b\n", 4,
                     "invalid YAML: while parsing a flow sequence", id="yaml-syntax"),
        pytest.param("metrics:\n  - name: a\n\thelp: h\n", 3, "invalid YAML", id="yaml-tab"),
        pytest.param("metrics:\n  - name: a\n    help: h\n  - name: b\n    help: h\n  - name: a\n    help: x\n", 6,
                     "duplicate metric name 'a' (first in metrics[0])", id="duplicate-name"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    help: again\n", 4, "duplicate key 'help'",
                     id="duplicate-key"),
        pytest.param("metrics:\n  - name: a\n    type: gauge\n", 2, "missing field 'help' in metrics[0]",
                     id="missing-field"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    labels:\n      ok: cloud\n      bad-name: cloud\n", 6,
                     "invalid label name 'bad-name'", id="label-name"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    labels:\n      __x: cloud\n", 5,
                     "reserved by Prometheus", id="label-reserved"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    labels:\n      x: tags.owner\n", 5,
                     "metrics[0].labels.x: invalid path 'tags.owner'", id="label-path"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    function: sum\n", 2,
                     "function sum needs a path", id="sum-without-path"),
        pytest.param("metrics:\n  - name: 9lives\n    help: h\n", 2, "invalid metric name '9lives'", id="metric-name"),
        pytest.param("metrics:\n  - name: resotometrics_x\n    help: h\n", 2, "the exporter's own metrics",
                     id="reserved-name"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    type: counter\n  - name: a_total\n    help: h\n", 5,
                     "metric name 'a_total' clashes with metrics[0] 'a'", id="counter-clash"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    scale: 0\n", 4, "scale must be a finite number",
                     id="scale-zero"),
        pytest.param("metrics:\n  - name: a\n    help: h\n    expired: true\n    filter: {expired_before: 2020}\n", 2,
                     "either expired: true or filter.expired_before", id="expired-twice"),
        pytest.param("", 1, "the file is empty", id="empty"),
        pytest.param("- name: a\n", 1, "expected a mapping with 'metrics'", id="not-a-mapping"),
        pytest.param("metrics:\n  - name: a\n    help: h\n---\nmetrics: []\n", 4, "invalid YAML", id="two-documents"),
    ],
)  # fmt: skip
def test_bad_file_is_refused_with_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "bad.yaml")
    assert caught.value.line == line, str(caught.value)
    assert f"bad.yaml:{line}: " in str(caught.value)
    assert reason in str(caught.value)


def test_every_problem_is_reported_with_its_line() -> None:
    text = "metrics:\n  - name: a\n    help: h\n    colour: red\n  - name: b\n    help: h\n    type: summary\n"
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "bad.yaml")
    assert [p.line for p in caught.value.problems] == [4, 7]
    assert str(caught.value).startswith("bad.yaml:4: unknown field 'colour'")
    assert "; bad.yaml:7: metrics[1].type" in str(caught.value)


def test_user_metric_must_not_clash_with_a_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("metrics:\n  - name: resoto_instances\n    help: h\n    type: counter\n")
    with pytest.raises(
        DefinitionError, match=r"mine.yaml:2: .*clashes with the built-in metric 'resoto_instances_total'"
    ):
        load_definitions(path)
    path.write_text("extend: false\nmetrics:\n  - name: resoto_instances\n    help: h\n    type: counter\n")
    assert [d.name for d in load_definitions(path)] == ["resoto_instances"]


def test_replacing_everything_with_nothing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extend: false\nmetrics: []\n")
    with pytest.raises(DefinitionError, match="no metrics are defined"):
        load_definitions(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"nope.yaml: cannot read the file"):
        load_definitions(tmp_path / "nope.yaml")


def test_documented_example_is_valid(tmp_path: Path) -> None:
    readme = Path(__file__).parents[2] / "resotometrics" / "README.md"
    example = readme.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    definitions = by_name(load_definitions(path))
    assert list(definitions)[-2:] == ["resoto_gpu_instances_total", "resoto_largest_volume_bytes"]
    assert definitions["resoto_gpu_instances_total"].labels["owner"] == "reported.tags.owner"

"""Reading definition files: YAML with line numbers kept, so every problem names its line and reason.

The file is composed into PyYAML nodes (which carry their marks) and constructed from those same
nodes. A pydantic error's location (``metrics.2.labels.status``) is walked down the node tree to the
offending key or item, whose line is reported. Parsing is pure (``parse_definitions``); only
``load_definitions`` reads files.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from resotolib.graph import Comparison, Filter
from resotometrics.definition import DefinitionFile, MetricDefinition, combine

DEFAULT_FILE = "metrics.yaml"
MAX_PROBLEMS = 10
_KNOWN_FIELDS = sorted(
    {name for model in (DefinitionFile, MetricDefinition, Filter, Comparison) for name in model.model_fields}
)


@dataclass(frozen=True)
class Problem:
    line: int | None
    reason: str


class DefinitionError(ValueError):
    """A definition file that cannot be used; ``str()`` is ``file:line: reason`` for each problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.reason))
        super().__init__(str(self))

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None

    def __str__(self) -> str:
        return "; ".join(
            f"{self.source}:{p.line}: {p.reason}" if p.line else f"{self.source}: {p.reason}" for p in self.problems
        )


def load_definitions(path: Path | None = None) -> tuple[MetricDefinition, ...]:
    """The built-in definitions, extended or replaced by the file at ``path``; raises DefinitionError."""
    builtin = resources.files("resotometrics").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
    defaults = parse_definitions(builtin, f"{DEFAULT_FILE} (built in)")
    if path is None:
        return tuple(defaults.metrics)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DefinitionError(str(path), [Problem(None, f"cannot read the file: {e}")]) from None
    user = parse_definitions(text, str(path), defaults.metrics)
    if not user.extend and not user.metrics:
        raise DefinitionError(str(path), [Problem(None, "extend is false and no metrics are defined")])
    return combine(defaults.metrics, user)


def parse_definitions(text: str, source: str, builtin: Sequence[MetricDefinition] = ()) -> DefinitionFile:
    """Parse and validate one definition file; raises DefinitionError naming the line of each problem.

    ``builtin``: the definitions the file extends, when it does; its metrics must not clash with them.
    """
    root, data = _compose(text, source)
    if root is None:
        raise DefinitionError(source, [Problem(1, "the file is empty: expected a mapping with 'metrics'")])
    if (duplicate := _duplicate_key(root)) is not None:
        raise DefinitionError(source, [duplicate])
    try:
        parsed = DefinitionFile.model_validate(data)
    except ValidationError as e:
        problems = [Problem(_line(root, err["loc"]), _reason(err)) for err in e.errors()[:MAX_PROBLEMS]]
        raise DefinitionError(source, problems) from None
    replaced = {m.name for m in parsed.metrics}
    kept = [b for b in builtin if b.name not in replaced] if parsed.extend else []
    if problems := _clashes(root, parsed.metrics, kept):
        raise DefinitionError(source, problems)
    return parsed


def _clashes(root: yaml.Node, metrics: Sequence[MetricDefinition], others: Sequence[MetricDefinition]) -> list[Problem]:
    """Metrics whose names clash with an earlier one (or one of ``others``): the same name, or a counter
    whose samples (always ending in _total) carry the name of another metric."""
    seen: dict[str, str] = {}
    for other in others:
        seen.update(dict.fromkeys(other.exposed_names, f"the built-in metric {other.name!r}"))
    firsts: dict[str, int] = {}
    problems = []
    for index, metric in enumerate(metrics):
        line = _line(root, ("metrics", index, "name"))
        if metric.name in firsts:
            problems.append(
                Problem(line, f"duplicate metric name {metric.name!r} (first in metrics[{firsts[metric.name]}])")
            )
        elif (clash := next((seen[n] for n in sorted(metric.exposed_names) if n in seen), None)) is not None:
            problems.append(
                Problem(line, f"metric name {metric.name!r} clashes with {clash}: a counter's samples end in _total")
            )
        firsts.setdefault(metric.name, index)
        for name in metric.exposed_names:
            seen.setdefault(name, f"metrics[{index}] {metric.name!r}")
    return problems


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (with marks) and the Python data constructed from it; YAML errors name their line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = ": ".join(part for part in (e.context, e.problem) if part) or "invalid YAML"
        raise DefinitionError(source, [Problem(mark.line + 1 if mark else None, f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as e:
        raise DefinitionError(source, [Problem(None, f"invalid YAML: {e}")]) from None
    finally:
        loader.dispose()


def _duplicate_key(node: yaml.Node) -> Problem | None:
    """The first key given twice in one mapping (YAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return Problem(key.start_mark.line + 1, f"duplicate key {key.value!r}")
                seen.add(key.value)
            if (found := _duplicate_key(value)) is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if (found := _duplicate_key(item)) is not None:
                return found
    return None


def _line(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The line of the node at a pydantic error location: as deep as the location can be followed."""
    node, mark = root, root.start_mark
    for part in loc:
        if part == "[key]":  # a dict key failed: the key itself is where the problem is
            break
        if isinstance(node, yaml.MappingNode):
            key = str(part)
            entry = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
            if entry is None:
                break
            mark, node = entry[0].start_mark, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return mark.line + 1


def _reason(error: ErrorDetails) -> str:
    loc = error["loc"]
    where = _where(loc)
    match error["type"]:
        case "extra_forbidden":
            field = str(loc[-1])
            close = difflib.get_close_matches(field, _KNOWN_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown field {field!r}{hint}" + (f" in {_where(loc[:-1])}" if len(loc) > 1 else "")
        case "missing":
            return f"missing field {str(loc[-1])!r}" + (f" in {_where(loc[:-1])}" if len(loc) > 1 else "")
        case "model_type" | "dict_type" if not loc:
            return "expected a mapping with 'metrics' (a list of metric definitions) and optionally 'extend'"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            text += " (key)"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text

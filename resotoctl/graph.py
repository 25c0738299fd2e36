"""``resotoctl graph search`` and ``resotoctl graph aggregate``: a quick look at the inventory.

Both take the same filter flags; ``--filter`` is a JSON filter (see ``resotolib.graph.Filter``) and
``--kind``, ``--cloud``, ``--account``, ``--region`` replace the same field of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.table import Table

from resotoctl.bus import split_names
from resotoctl.config import Ctl
from resotoctl.errors import execute
from resotoctl.output import Output
from resotoctl.render import NONE, table
from resotolib.graph import DEFAULT_GRAPH, AggregateFunction, AggregateRequest, Filter, Node, SearchRequest

F = TypeVar("F", bound=Callable[..., Any])


def parse_function(spec: str) -> AggregateFunction:
    """``count:n``, ``count:PATH:n``, ``sum:reported.instance_cores:cores`` (a path may contain ``:``)."""
    function, *middle, name = spec.split(":") if ":" in spec else (spec, "")
    if not name:
        raise click.BadParameter(
            f"{spec!r}: expected FUNCTION:NAME or FUNCTION:PATH:NAME, e.g. count:n", param_hint="--function"
        )
    try:
        return AggregateFunction.model_validate({"function": function, "path": ":".join(middle) or None, "as": name})
    except ValidationError as e:
        raise click.BadParameter(f"{spec!r}: {_first_error(e)}", param_hint="--function") from None


def build_filter(
    filter_json: str | None,
    kinds: Iterable[str],
    clouds: Iterable[str],
    accounts: Iterable[str],
    regions: Iterable[str],
) -> Filter:
    """The filter of ``--filter`` with the lists of the other flags put in (a flag replaces its field)."""
    try:
        base = Filter.model_validate_json(filter_json).model_dump(exclude_unset=True) if filter_json else {}
        flags = {"kinds": kinds, "cloud": clouds, "account": accounts, "region": regions}
        return Filter.model_validate({**base, **{k: list(v) for k, v in flags.items() if v}})
    except ValidationError as e:
        raise click.BadParameter(_first_error(e), param_hint="--filter") from None


def filter_options(fn: F) -> F:
    """The flags shared by search and aggregate: graph name and filter."""
    options = [
        click.option("--graph", "graph_name", default=DEFAULT_GRAPH, show_default=True, help="Graph to look in."),
        click.option("--kind", "kinds", multiple=True, help="Resource kind (repeatable, or comma-separated)."),
        click.option("--cloud", "clouds", multiple=True, help="Cloud id (repeatable, or comma-separated)."),
        click.option("--account", "accounts", multiple=True, help="Account id (repeatable, or comma-separated)."),
        click.option("--region", "regions", multiple=True, help="Region id (repeatable, or comma-separated)."),
        click.option("--filter", "filter_json", metavar="JSON", help='A filter, e.g. \'{"tags": {"owner": null}}\'.'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group()
def graph() -> None:
    """Look at the inventory: find resources, count and sum them by cloud, account, region, kind.

    \b
    Examples:
      resotoctl graph search --kind example_instance --region eu-1 --limit 20
      resotoctl graph aggregate --group-by cloud,account --function count:n
    """


@graph.command()
@filter_options
@click.option("--limit", type=click.IntRange(1), help="Most resources to return.")
@click.pass_obj
def search(ctl: Ctl, /, graph_name: str, limit: int | None, filter_json: str | None, **lists: tuple[str, ...]) -> None:
    """Resources matching the filter: a table, or one JSON line per node with --json.

    \b
    Examples:
      resotoctl graph search --cloud aws --kind aws_ec2_instance
      resotoctl graph search --filter '{"fields": [{"path": "reported.instance_cores", "op": ">=", "value": 8}]}'
      resotoctl --json graph search --account 1234 | jq -r .reported.name
    """
    request = SearchRequest(filter=_filter(filter_json, lists), limit=limit)

    async def main() -> None:
        out = Output(ctl.as_json)
        nodes: list[Node] = []
        async with ctl.client() as client:
            async for item in client.search(graph_name, request):
                if not isinstance(item, Node):
                    continue
                if out.as_json:
                    out.line(item.model_dump_json(by_alias=True))
                else:
                    nodes.append(item)
        if not out.as_json:
            out.show(nodes_table(nodes) if nodes else "no resources match")

    execute(main())


@graph.command()
@filter_options
@click.option("--group-by", "group_by", multiple=True, metavar="PATHS", help="Paths to group by (comma-separated).")
@click.option(
    "--function", "functions", multiple=True, required=True, metavar="SPEC",
    help="FUNCTION:NAME or FUNCTION:PATH:NAME; FUNCTION is count, sum, min or max (repeatable).",
)  # fmt: skip
@click.pass_obj
def aggregate(
    ctl: Ctl, /, graph_name: str, group_by: tuple[str, ...], functions: tuple[str, ...], filter_json: str | None,
    **lists: tuple[str, ...],
) -> None:  # fmt: skip
    """Count, sum, min or max over the matching resources, grouped by paths (cloud, account, region, kind,
    reported.<field>, ...).

    \b
    Examples:
      resotoctl graph aggregate --group-by cloud,account --function count:n
      resotoctl graph aggregate --kind example_instance --group-by region \\
          --function count:n --function sum:reported.instance_cores:cores
    """
    try:
        request = AggregateRequest(
            filter=_filter(filter_json, lists),
            group_by=split_names(group_by),
            functions=[parse_function(f) for f in functions],
        )
    except ValidationError as e:
        raise click.BadParameter(_first_error(e), param_hint="--group-by") from None

    async def main() -> None:
        async with ctl.client() as client:
            rows = await client.aggregate(graph_name, request)
        out = Output(ctl.as_json)
        if out.as_json:
            out.document(rows)
        else:
            plain_rows = [row.model_dump(mode="json") for row in rows]
            out.show(aggregate_table(plain_rows, request.group_by, [f.name for f in request.functions]))

    execute(main())


# ---- tables --------------------------------------------------------------------------------------


def nodes_table(nodes: Iterable[Node]) -> Table:
    result = table("Resources", "Kind", "Id", "Name", "Cloud", "Account", "Region", "Created")
    for node in nodes:
        ancestors = node.metadata.get("ancestors")
        where: Mapping[str, Any] = ancestors if isinstance(ancestors, dict) else {}
        reported = node.reported
        result.add_row(
            node.kind,
            str(reported.get("id", node.id)),
            str(reported.get("name") or NONE),
            *(str(where.get(k) or NONE) for k in ("cloud", "account", "region")),
            str(reported.get("ctime") or NONE),
        )
    return result


def aggregate_table(rows: Iterable[Mapping[str, Any]], group_by: list[str], names: list[str]) -> Table:
    result = table("Aggregate", *group_by, *names)
    for column in result.columns[len(group_by) :]:
        column.justify = "right"
    for row in rows:
        group, values = row.get("group") or {}, row.get("values") or {}
        result.add_row(*(_number(group.get(g)) for g in group_by), *(_number(values.get(n)) for n in names))
    return result


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return NONE if value is None else str(value)
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def _filter(filter_json: str | None, lists: Mapping[str, tuple[str, ...]]) -> Filter:
    pick = {name: split_names(lists.get(name, ())) for name in ("kinds", "clouds", "accounts", "regions")}
    return build_filter(filter_json, pick["kinds"], pick["clouds"], pick["accounts"], pick["regions"])


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])

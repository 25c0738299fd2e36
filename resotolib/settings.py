"""Command-line flags and environment variables derived from one pydantic settings model.

Each field becomes ``--field-name`` with the environment variable ``PREFIX_FIELD_NAME`` and the field's
description as help text, so flags, env vars and documentation can never drift apart. A list field is a
repeatable flag; its environment variable holds the items separated by commas or whitespace.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def model_options(model: type[BaseModel], env_prefix: str) -> Callable[[F], F]:
    """A decorator adding one click option per field of `model`."""

    def decorate(fn: F) -> F:
        for name, info in reversed(model.model_fields.items()):
            flag = "--" + name.replace("_", "-")
            kwargs: dict[str, Any] = {
                "help": info.description,
                "envvar": env_prefix + name.upper(),
                "show_envvar": True,
                "default": None,
            }
            if not info.is_required():
                default = info.get_default(call_default_factory=True)
                if default is not None:
                    kwargs["show_default"] = _show(default)
            annotation = _unoptional(info.annotation)
            if annotation is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", name, **kwargs)(fn)
                continue
            if get_origin(annotation) is Literal:
                kwargs["type"] = click.Choice([str(a) for a in get_args(annotation)])
            elif get_origin(annotation) in (list, tuple):
                kwargs["multiple"] = True
                kwargs["type"] = _EnvList()
            elif annotation in (int, float):
                kwargs["type"] = annotation
            elif annotation is Path:
                kwargs["type"] = click.Path(path_type=Path)
            fn = click.option(flag, name, **kwargs)(fn)
        return fn

    return decorate


def build(model: type[M], values: Mapping[str, Any]) -> M:
    """Validate the given flag values into the model; a bad value is a click usage error naming the flag."""
    given = {k: v for k, v in values.items() if k in model.model_fields and v is not None and v != ()}
    try:
        return model(**given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            flag = "--" + field.replace("_", "-") if field else "configuration"
            problems.append(f"{flag}: {err['msg'].removeprefix('Value error, ')}")
        raise click.UsageError("; ".join(problems)) from None


class _EnvList(click.types.StringParamType):
    """One item of a repeatable flag; its environment variable holds items separated by commas or whitespace.
    Items stay strings: the settings model converts them."""

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part for part in re.split(r"[,\s]+", rv) if part]


def _unoptional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _show(default: Any) -> str:
    if isinstance(default, list | tuple):
        return ", ".join(str(d) for d in default) or "none"
    return str(default)

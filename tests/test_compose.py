"""docker-compose.yml, the Dockerfile and prometheus.yml, checked without Docker.

The compose file is validated against the Compose specification's JSON schema, shipped as
tests/data/compose-spec.json: schema/compose-spec.json of the compose-spec/compose-spec repository at
commit 00655e2222608fa6eaecdf12ac5195889ca2244a (JSON Schema draft-07, 74,133 bytes, sha256 below).
To update it, replace the file with a newer version of that schema and change ``SCHEMA_SHA256``.

Every service built from our image runs one of our console scripts; each ``--flag`` of its command and
each RESOTO* variable of its environment must appear in that script's real ``--help`` (click prints
every option's variable), so renaming a flag or a variable breaks this test instead of the deployment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
SCHEMA_SHA256 = "bc50c2d79102aed8df21b3a13e56c9396c7a06da6cff5ce37629f2ee7eb41735"
IMAGE = "resoto-workflows:local"
CORE_URI = "http://resotocore:8900"
PENDING: dict[tuple[str, str], str] = {}
"""(service, variable) the compose file passes although the command does not read it yet (xfail, strict)."""


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def ours() -> dict[str, dict[str, Any]]:
    """The services that run our image (built from the Dockerfile)."""
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE or "build" in s}


def argv(service: dict[str, Any]) -> list[str]:
    command = [*_words(service.get("entrypoint")), *_words(service.get("command"))]
    return command or ["resotocore"]  # the image's CMD


def _words(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else list(value)


def console_scripts() -> dict[str, str]:
    """Our distribution's console scripts: name -> entry point."""
    return {ep.name: ep.value for ep in distribution("resoto-workflows").entry_points if ep.group == "console_scripts"}


def script_path(name: str) -> str:
    """The installed script: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"console script {name} is not installed"
    return found


@functools.cache
def help_of(script: str) -> str:
    """The real ``SCRIPT --help`` output."""
    done = subprocess.run(
        [script_path(script), "--help"], capture_output=True, text=True, timeout=60, check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RESOTO")}, "COLUMNS": "200"},
    )  # fmt: skip
    return done.stdout


def help_flags(script: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", help_of(script)))


def help_env_vars(script: str) -> set[str]:
    return set(re.findall(r"\bRESOTO[A-Z0-9_]+", help_of(script)))


def env_cases() -> list[Any]:
    cases = []
    for name, service in ours().items():
        for variable in service.get("environment") or {}:
            if variable.startswith("RESOTO"):
                reason = PENDING.get((name, variable))
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                cases.append(pytest.param(name, variable, marks=marks, id=f"{name}-{variable}"))
    return cases


def test_the_schema_is_the_shipped_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)


def test_an_invalid_compose_file_is_refused() -> None:
    """The validation bites: an unknown key or a wrongly typed value fails."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    bad = compose()
    bad["services"]["resotoworker"]["comand"] = ["resotoworker"]
    bad["services"]["resotometrics"]["ports"] = "9955:9955"
    assert len(list(validator.iter_errors(bad))) == 2


def test_the_stack_is_complete() -> None:
    services = compose()["services"]
    assert set(services) == {"arangodb", "resotocore", "resotoworker", "resotometrics", "prometheus"}
    assert set(ours()) == {"resotocore", "resotoworker", "resotometrics"}
    assert {argv(s)[0] for s in ours().values()} == {"resotocore", "resotoworker", "resotometrics"}
    worker = argv(services["resotoworker"])
    assert {"--cleanup", "--cleanup-expired"} <= set(worker) and worker[worker.index("--collector") + 1] == "example"
    core = services["resotocore"]["environment"]
    assert core["RESOTOCORE_DB"].startswith("arangodb://arangodb:") and core["RESOTOCORE_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", ["resotocore", "resotoworker", "resotometrics"])
def test_each_command_is_an_installed_console_script_with_these_flags(name: str) -> None:
    command = argv(ours()[name])
    assert command[0] in console_scripts(), f"{name}: {command[0]} is not a console script of ours"
    unknown = {word.split("=")[0] for word in command[1:] if word.startswith("--")} - help_flags(command[0])
    assert not unknown, f"{name}: {command[0]} --help does not know {sorted(unknown)}"


@pytest.mark.parametrize(("name", "variable"), env_cases())
def test_each_variable_is_read_by_the_command(name: str, variable: str) -> None:
    script = argv(ours()[name])[0]
    assert variable.startswith(script.upper() + "_"), f"{name}: {variable} is not a variable of {script}"
    assert variable in help_env_vars(script), f"{name}: {script} --help does not mention {variable}"


def test_every_service_of_ours_gets_the_psk_and_reaches_the_core() -> None:
    services = ours()
    psk = services["resotocore"]["environment"]["RESOTOCORE_PSK"]
    assert psk.startswith("${RESOTOCORE_PSK:-") and psk.endswith("}")  # a variable, with a default for local use
    for name in ("resotoworker", "resotometrics"):
        env = services[name]["environment"]
        assert env[f"{name.upper()}_PSK"] == psk
        assert env[f"{name.upper()}_RESOTOCORE_URI"] == CORE_URI


def test_published_ports_listen_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_prometheus_scrapes_the_exporter() -> None:
    services = compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    port = services["resotometrics"]["environment"]["RESOTOMETRICS_WEB_PORT"]
    assert targets == [f"resotometrics:{port}"]
    assert services["resotometrics"]["environment"]["RESOTOMETRICS_WEB_HOST"] == "0.0.0.0"


def test_bind_mounts_and_build_context_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    for service in ours().values():
        assert (ROOT / service["build"] / "Dockerfile").is_file()


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each instruction of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_what_exists_and_what_the_package_needs() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied = [source for op, args in instructions if op == "COPY" for source in args.split()[:-1]]
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= set(copied)
    assert any(op == "RUN" and args.startswith("pip install .") for op, args in instructions)


def test_dockerfile_command_and_variables_are_real() -> None:
    instructions = dockerfile()
    cmd = json.loads(next(args for op, args in reversed(instructions) if op == "CMD"))
    assert cmd[0] in console_scripts()
    assert ours()["resotocore"]["command"] == cmd  # the default command of the image is the core's
    variables = [v.split("=")[0] for op, args in instructions if op == "ENV" for v in args.split()]
    for variable in (v for v in variables if v.startswith("RESOTO")):
        script = variable.split("_")[0].lower()
        assert variable in help_env_vars(script), f"the Dockerfile sets {variable}, unknown to {script} --help"

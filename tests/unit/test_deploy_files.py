"""The container files agree with the code. No Docker engine is needed: docker-compose.yml,
deploy/Dockerfile and the monitoring configuration are read as data and compared with what
the services, the CLI, the settings model and the telemetry really are:

- every command is a service module (``services/<name>/__main__.py``) or a ``schoolmig``
  subcommand, every health check a module that exists;
- every variable set on a schoolmig container is one ``shared.platform.settings.Settings`` reads
  (``SCHOOLMIG_<field>``, a field's alias such as ``DATABASE_URL``, a ``*_FILE`` secret) or
  an OpenTelemetry one (``OTEL_*``); secrets come from the environment, never literals;
- every third-party image is pinned to one release (rule in ``_pin_problem``);
- health checks, no fixed host port on a service that scales, named volumes where the data
  lives, a stop grace period longer than the services' drain;
- the Dockerfile: pinned bases, dependencies from requirements.lock before the code, a
  fixed non-root user, the state directories as volumes, a HEALTHCHECK;
- Prometheus loads alerts.yml and scrapes the collector; Grafana provisions the dashboard;
  every dashboard query names only metrics and labels the services export, under the same
  names whether Prometheus scrapes a service or the OpenTelemetry Collector.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import AliasChoices, SecretStr

import shared.platform.settings
from shared.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
LOCK = ROOT / "requirements.lock"
COLLECTOR = ROOT / "deploy" / "otel-collector" / "config.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "schoolmig.json"
TELEMETRY = ROOT / "shared" / "platform" / "telemetry.py"

SERVICES = {"ingest", "transform", "loader", "validator", "coordinator"}
SCALED = SERVICES  # each must work with `docker compose up --scale <name>=N`
SERVERS = {"kafka", "postgres", "prometheus", "grafana"}  # the collector's image has no shell to run a check
BACKUP_USERS = {"ingest", "validator", "coordinator"}
#: Images whose upstream numbers one release with two components (PostgreSQL since 10:
#: 18.1 is a release, 18 a moving line). Every other image needs major.minor.patch.
TWO_PART_RELEASES = {"postgres"}
#: What `schoolmig up` allows a service beyond SCHOOLMIG_GRACEFUL_TIMEOUT_S to exit
#: (schoolmig/stack.py): closing clients, flushing the last OTLP export.
EXIT_MARGIN_S = 5.0


# --------------------------------------------------------------------------- reading


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def schoolmig_services() -> dict[str, dict[str, Any]]:
    """The containers built from deploy/Dockerfile (the five services and one-shot jobs)."""
    return {name: s for name, s in services().items() if "build" in s}


def is_job(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "")) == "no"


def long_running() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in schoolmig_services().items() if not is_job(s)}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, source, target) per volume entry; kind is 'volume' (named) or 'bind'."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry.get("type", "volume"), str(entry.get("source", "")), str(entry["target"])))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:  # anonymous
            out.append(("anonymous", "", parts[0]))
            continue
        source, target = parts[0], parts[1]
        out.append(("bind" if source.startswith((".", "/", "~")) else "volume", source, target))
    return out


def inside(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def named_volume_holding(service_name: str, path: str) -> str | None:
    for kind, source, target in mounts(services()[service_name]):
        if kind == "volume" and inside(path, target):
            return source
    return None


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile():
        if instruction == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction, args))
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value`
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def json_or_words(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        return [str(x) for x in json.loads(args)]
    return shlex.split(args)


def image_env() -> dict[str, str]:
    return env_of(stages()[-1])


# --------------------------------------------------------------------------- the code


@cache
def cli_commands() -> set[str]:
    from schoolmig.cli import build_parser

    parser = build_parser()
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices}


def module_exists(module: str) -> bool:
    if module.startswith("services."):
        return (ROOT / "services" / module.split(".", 1)[1] / "__main__.py").is_file()
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def command_problem(command: list[str]) -> str | None:
    """Why a container command would not start, or None."""
    if command[:2] == ["python", "-m"] and len(command) > 2:
        module = command[2]
        if module.startswith("services.") and not module_exists(module):
            return f"services/{module.split('.', 1)[1]}/__main__.py does not exist"
        if not module_exists(module):
            return f"module {module} does not exist"
        return None
    if command and command[0] == "schoolmig":
        if len(command) < 2 or command[1] not in cli_commands():
            return f"`schoolmig {command[1] if len(command) > 1 else ''}` is not a subcommand of schoolmig/cli.py (has: {sorted(cli_commands())})"
        return None
    return f"{command!r} is neither `python -m <module>` nor `schoolmig <subcommand>`"


@cache
def settings_env_names() -> frozenset[str]:
    """Every variable the settings model reads."""
    prefix = (Settings.model_config.get("env_prefix") or "").upper()
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        aliases: list[Any] = []
        if isinstance(field.validation_alias, AliasChoices):
            aliases = list(field.validation_alias.choices)
        elif field.validation_alias is not None:
            aliases = [field.validation_alias]
        elif field.alias is not None:
            aliases = [field.alias]
        strings = [a for a in aliases if isinstance(a, str)]
        names |= {a.upper() for a in strings} if strings else {prefix + name.upper()}
    names |= {v.upper() for v in getattr(shared.platform.settings, "SECRET_FILES", {}).values()}
    return frozenset(names)


def env_name_of(field: str) -> str:
    info = Settings.model_fields[field]
    if isinstance(info.validation_alias, AliasChoices):
        return str(info.validation_alias.choices[0]).upper()
    return ((Settings.model_config.get("env_prefix") or "") + field).upper()


def secret_env_names() -> set[str]:
    return {
        env_name_of(n)
        for n, f in Settings.model_fields.items()
        if not f.repr or "SecretStr" in str(f.annotation) or f.annotation is SecretStr
    }


def setting_value(service: dict[str, Any], field: str) -> str:
    """A setting as a container of this service gets it: compose, else the image, else the default."""
    name = env_name_of(field)
    return environment(service).get(name) or image_env().get(name) or str(Settings.model_fields[field].default)


@cache
def telemetry_source() -> str:
    return TELEMETRY.read_text()


@cache
def instruments() -> dict[str, dict[str, Any]]:
    """OpenTelemetry instruments of shared/platform/telemetry.py: name -> kind, unit, field, labels."""
    src = telemetry_source()
    found: dict[str, dict[str, Any]] = {}
    calls = list(
        re.finditer(r"(?:(\w+)=)?meter\.create_(counter|histogram|observable_gauge|up_down_counter|gauge)\(\s*\"([^\"]+)\"", src)
    )
    for i, m in enumerate(calls):
        segment = src[m.start() : calls[i + 1].start() if i + 1 < len(calls) else len(src)]
        unit = re.search(r'unit="([^"]*)"', segment)
        kind = {"counter": "counter", "histogram": "histogram"}.get(m.group(2), "gauge")
        labels: set[str] = set()
        if gauge := re.search(r"gauges\.observe\(gauges\.(\w+),([^)]*)\)", segment):
            labels = set(re.findall(r'"(\w+)"', gauge.group(2)))
        for observation in re.finditer(r"Observation\([^{}]*\{([^}]*)\}", segment):  # a callback's own points
            labels |= set(re.findall(r'"(\w+)"\s*:', observation.group(1)))
        found[m.group(3)] = {"kind": kind, "unit": unit.group(1) if unit else "", "field": m.group(1), "labels": labels}
    # Labels recorded with each counter / histogram, wherever the code records them.
    by_field = {v["field"]: v for v in found.values() if v["field"]}
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py"), *ROOT.glob("schoolmig/**/*.py")]:
        text = path.read_text()
        for m in re.finditer(r"metrics\.(\w+)\.(?:add|record)\((?:[^{}()]|\([^()]*\))*\{([^}]*)\}", text):
            if m.group(1) in by_field:
                by_field[m.group(1)]["labels"] |= set(re.findall(r'"(\w+)"\s*:', m.group(2)))
    return found


@cache
def exported() -> dict[str, str]:
    """Prometheus name -> instrument name, as the services' own /metrics endpoint writes them
    (every instrument recorded once with zero, every gauge observed once)."""
    from shared.platform.telemetry import PipelineMetrics, setup_telemetry

    metrics = setup_telemetry("deploy-files-test")
    for field in PipelineMetrics.__dataclass_fields__:
        instrument = getattr(metrics, field)
        if hasattr(instrument, "add"):
            instrument.add(0, {"probe": "deploy-files-test"})
        elif hasattr(instrument, "record"):
            instrument.record(0.0, {"probe": "deploy-files-test"})
    probes: list[tuple[dict[Any, Any], Any]] = []
    for m in re.finditer(r"gauges\.observe\(gauges\.(\w+),([^)]*)\)", telemetry_source()):
        arity = len(re.findall(r'"\w+"', m.group(2)))
        key = "deploy-files-test" if arity == 1 else ("deploy-files-test",) * arity
        values = getattr(metrics.schools, m.group(1))
        if key not in values:
            values[key] = 0
            probes.append((values, key))
    try:
        text = generate_latest().decode()
    finally:
        for values, key in probes:
            values.pop(key, None)
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    bases = sorted(((name.replace(".", "_"), name) for name in instruments()), key=lambda b: -len(b[0]))
    out: dict[str, str] = {}
    for prom in names:
        for base, name in bases:
            if prom == base or prom.startswith(base + "_"):
                out[prom] = name
                break
    return out


def known_metric_names() -> set[str]:
    """What the alert rules' test accepts (exported by shared/platform/telemetry.py), plus `up`."""
    return set(exported()) | {"up"}


# --------------------------------------------------------------------------- compose


def test_every_service_and_job_runs_a_command_that_exists() -> None:
    assert SERVICES <= set(schoolmig_services()), f"docker-compose.yml lacks {sorted(SERVICES - set(schoolmig_services()))}"
    for name, service in schoolmig_services().items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: give `command` as a list"
        assert (problem := command_problem(command)) is None, f"{name}: {problem}"
        if name in SERVICES:
            assert command == ["python", "-m", f"services.{name}"], f"{name} runs {command}, not its own service"


def test_every_variable_on_a_schoolmig_container_is_read_by_the_settings() -> None:
    known = settings_env_names()
    for name, service in schoolmig_services().items():
        for variable in environment(service):
            assert variable.startswith("OTEL_") or variable.upper() in known, (
                f"{name}: {variable} is not read by shared.platform.settings.Settings (nor an OTEL_* variable): a typo, or a setting that does not exist"
            )
    for variable in image_env():
        if variable.startswith("SCHOOLMIG_"):
            assert variable in known, f"deploy/Dockerfile: ENV {variable} is not read by shared.platform.settings.Settings"


def test_secrets_come_from_the_environment() -> None:
    secret = secret_env_names() | {"POSTGRES_PASSWORD"}
    for name, service in services().items():
        for variable, value in environment(service).items():
            if variable in secret or re.search(r"PASSWORD|TOKEN|SECRET|_KEYS?$", variable):
                if variable.endswith("_FILE"):
                    continue
                assert "${" in value, (
                    f"{name}: {variable} is written in docker-compose.yml; take it from the environment (${{{variable}:?…}})"
                )
    for name, service in schoolmig_services().items():
        url = environment(service).get("DATABASE_URL", "")
        if "@" in url:
            credentials = url.split("://", 1)[-1].rsplit("@", 1)[0]
            assert ":" not in credentials or "${" in credentials, f"{name}: DATABASE_URL holds a literal password"


def _pin_problem(image: str) -> str | None:
    """A third-party image must name one release: a digest (@sha256:…), or a tag starting with
    its full version — major.minor.patch (``3.9.1``, ``v3.0.1``, ``0.115.0``, ``3.11.11-slim``),
    or major.minor for images numbered that way (PostgreSQL: ``18.1``). ``latest``, no tag,
    a bare major (``postgres:18``) or a major.minor line (``python:3.11``) move under you."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return None
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag:
        return "no tag (that is `latest`)"
    if tag == "latest":
        return "`latest`"
    version = re.match(r"v?(\d+(?:\.\d+)*)", tag)
    if not version:
        return f"tag {tag!r} is not a version"
    needed = 2 if repo.rsplit("/", 1)[-1] in TWO_PART_RELEASES else 3
    if len(version.group(1).split(".")) < needed:
        return f"tag {tag!r} is a moving line, not one release (needs {'major.minor' if needed == 2 else 'major.minor.patch'} or a digest)"
    return None


def test_every_third_party_image_is_pinned_to_one_release() -> None:
    for name, service in services().items():
        if "build" in service:
            continue  # built here from deploy/Dockerfile, whose bases are checked below
        assert "image" in service, f"{name}: no image"
        assert (problem := _pin_problem(str(service["image"]))) is None, f"{name}: image {service['image']}: {problem}"


def test_every_service_and_server_has_a_health_check() -> None:
    for name in [*long_running(), *sorted(SERVERS)]:
        assert name in services(), f"docker-compose.yml has no {name}"
        check = services()[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        test = check["test"]
        if name in long_running():
            assert isinstance(test, list) and test[0] == "CMD", f'{name}: healthcheck should be ["CMD", "python", "-m", …]'
            assert (problem := command_problem(test[1:])) is None, f"{name}: healthcheck: {problem}"
    for name, service in services().items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services(), f"{name} depends on {dependency}, which is not in docker-compose.yml"
            wanted = condition.get("condition") if isinstance(condition, dict) else "service_started"
            target = services()[dependency]
            if wanted == "service_healthy":
                assert (target.get("healthcheck") or {}).get("test"), (
                    f"{name} waits for {dependency} to be healthy; it has no healthcheck"
                )
            if wanted == "service_completed_successfully":
                assert is_job(target), f'{name} waits for {dependency} to complete; it is not a one-shot job (restart: "no")'


def test_services_wait_for_the_topics_job() -> None:
    jobs = {name for name, s in schoolmig_services().items() if is_job(s) and s.get("command", [])[:2] == ["schoolmig", "topics"]}
    assert jobs, "no one-shot `schoolmig topics --create` job"
    for name, service in long_running().items():
        depends = service.get("depends_on") or {}
        assert any((depends.get(job) or {}).get("condition") == "service_completed_successfully" for job in jobs), (
            f"{name} does not wait for the topics job (condition: service_completed_successfully)"
        )


def _published(port: Any) -> str | None:
    if isinstance(port, dict):
        return None if port.get("published") in (None, "") else str(port["published"])
    parts = str(port).split(":")
    return parts[-2] if len(parts) >= 2 else None


def test_no_service_meant_to_scale_publishes_a_fixed_host_port() -> None:
    for name in sorted(SCALED):
        for port in services()[name].get("ports") or []:
            host = _published(port)
            assert host is None or re.fullmatch(r"\d+-\d+", host), (
                f"{name}: port {port!r} fixes host port {host}: a second replica (`--scale {name}=2`) cannot start; "
                'publish the container port only ("8080") or a host range'
            )


def test_named_volumes_hold_the_data_where_it_is_written() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for kind, source, _target in mounts(service):
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared under top-level `volumes`"
            if kind == "bind" and source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repository"

    for log_dir in environment(services()["kafka"]).get("KAFKA_LOG_DIRS", "").split(","):
        assert log_dir, "kafka: set KAFKA_LOG_DIRS to a directory on a named volume"
        assert named_volume_holding("kafka", log_dir), f"kafka: KAFKA_LOG_DIRS {log_dir} is not on a named volume"

    postgres = services()["postgres"]
    major = int(re.match(r"(\d+)", str(postgres["image"]).rsplit(":", 1)[1]).group(1))  # type: ignore[union-attr]
    pgdata = environment(postgres).get("PGDATA") or (
        f"/var/lib/postgresql/{major}/docker" if major >= 18 else "/var/lib/postgresql/data"
    )
    assert named_volume_holding("postgres", pgdata), f"postgres: its data ({pgdata}) is not on a named volume"

    command = services()["prometheus"].get("command") or []
    tsdb = next((c.split("=", 1)[1] for c in command if str(c).startswith("--storage.tsdb.path=")), "/prometheus")
    assert named_volume_holding("prometheus", tsdb), f"prometheus: its TSDB ({tsdb}) is not on a named volume"

    assert "backups" in declared, "no named volume `backups`"
    for name in sorted(BACKUP_USERS):
        backup_dir = setting_value(services()[name], "backup_dir")
        assert ("volume", "backups", backup_dir) in mounts(services()[name]), (
            f"{name}: the `backups` volume is not mounted at SCHOOLMIG_BACKUP_DIR ({backup_dir})"
        )


def _seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"cannot read duration {duration!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def test_stop_grace_period_outlasts_the_drain() -> None:
    for name, service in long_running().items():
        graceful = float(setting_value(service, "graceful_timeout_s"))
        period = service.get("stop_grace_period")
        assert period, f"{name}: no stop_grace_period (Docker's 10 s default kills it mid-drain)"
        assert _seconds(str(period)) > graceful + EXIT_MARGIN_S, (
            f"{name}: stop_grace_period {period} is not longer than SCHOOLMIG_GRACEFUL_TIMEOUT_S ({graceful:g} s) + {EXIT_MARGIN_S:g} s"
        )


def test_services_export_to_the_collector() -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    otlp_port = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for name, service in long_running().items():
        endpoint = environment(service).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        m = re.fullmatch(r"http://([\w.-]+):(\d+)/?", endpoint)
        assert m, f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r} should be http://<collector>:<port>"
        assert m.group(1) in services(), f"{name}: exports to {m.group(1)}, not a service of docker-compose.yml"
        assert m.group(2) == otlp_port, (
            f"{name}: exports to port {m.group(2)}; the collector's OTLP/HTTP receiver is on {otlp_port}"
        )


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_bases_are_pinned() -> None:
    args = {
        m.group(1): m.group(2)
        for instruction, a in dockerfile()
        for m in [re.match(r"(\w+)=(\S+)", a)]
        if instruction == "ARG" and m
    }
    names: set[str] = set()
    for instruction, a in dockerfile():
        if instruction != "FROM":
            continue
        words = [w for w in a.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if image not in names:
            assert (problem := _pin_problem(image)) is None, f"deploy/Dockerfile: FROM {image}: {problem}"
        if len(words) >= 3 and words[1].upper() == "AS":
            names.add(words[2])


def test_dockerfile_installs_the_lock_before_the_code() -> None:
    code = ("shared", "services", "schoolmig", ".")
    for stage in stages():
        lock_install = next(
            (i for i, (ins, a) in enumerate(stage) if ins == "RUN" and "pip install" in a and "-r requirements.lock" in a), None
        )
        if lock_install is None:
            continue
        assert "--no-deps" in stage[lock_install][1], (
            "deploy/Dockerfile: install requirements.lock with --no-deps (the lock is complete)"
        )
        copy_lock = next((i for i, (ins, a) in enumerate(stage) if ins == "COPY" and "requirements.lock" in a.split()), None)
        assert copy_lock is not None and copy_lock < lock_install, (
            "deploy/Dockerfile: COPY requirements.lock before installing it"
        )
        code_copies = [i for i, (ins, a) in enumerate(stage) if ins == "COPY" and "--from" not in a and a.split()[0] in code]
        assert code_copies, "deploy/Dockerfile: the builder never copies the code"
        assert lock_install < min(code_copies), (
            "deploy/Dockerfile: the code is copied before the dependencies are installed (every code change would reinstall them)"
        )
        project = [
            i for i, (ins, a) in enumerate(stage) if ins == "RUN" and re.search(r"pip install .*--no-deps.*\s\.(\s|$)", a + " ")
        ]
        assert project and project[0] > max(code_copies), (
            "deploy/Dockerfile: install the project itself with `pip install --no-deps .` after copying it"
        )
        break
    else:
        pytest.fail("deploy/Dockerfile: no stage runs `pip install --no-deps -r requirements.lock`")
    runtime = stages()[-1]
    assert any(ins == "COPY" and "--from=" in a and "/opt/venv" in a for ins, a in runtime), (
        "deploy/Dockerfile: the runtime stage does not copy /opt/venv"
    )


def test_lock_file_pins_every_dependency() -> None:
    if not LOCK.exists():
        pytest.skip("requirements.lock is not in the repository yet; deploy/Dockerfile installs from it")
    pinned: set[str] = set()
    logical = re.sub(r"\\\n", " ", LOCK.read_text())
    for number, line in enumerate(logical.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==[^\s;]+", line)
        assert m, f"requirements.lock line {number}: {line!r} is not pinned as name==version"
        pinned.add(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()  # type: ignore[union-attr]
        assert name in pinned, f"requirements.lock does not pin {name} (a dependency in pyproject.toml)"


def test_dockerfile_runs_as_a_fixed_non_root_user_with_state_volumes() -> None:
    runtime = stages()[-1]
    users = [a for ins, a in runtime if ins == "USER"]
    assert users, "deploy/Dockerfile: no USER: the services would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"deploy/Dockerfile: USER {users[-1]} is root"
    assert user.isdigit() or any(ins == "RUN" and "useradd" in a and re.search(r"(--uid|-u)\s+\d+", a) for ins, a in runtime), (
        "deploy/Dockerfile: give the user a fixed uid (useradd --uid N, or USER N)"
    )
    env = env_of(runtime)
    volumes = [v for ins, a in runtime if ins == "VOLUME" for v in json_or_words(a)]
    volume_at = max(i for i, (ins, _) in enumerate(runtime) if ins == "VOLUME") if volumes else -1
    for variable in ("SCHOOLMIG_BACKUP_DIR", "SCHOOLMIG_STATE_DIR"):
        assert variable in env, f"deploy/Dockerfile: set ENV {variable}"
        assert env[variable] in volumes, f"deploy/Dockerfile: {variable} ({env[variable]}) is not a VOLUME"
        made = [i for i, (ins, a) in enumerate(runtime) if ins == "RUN" and env[variable] in a]
        assert made and made[-1] < volume_at, f"deploy/Dockerfile: make and chown {env[variable]} before declaring it a VOLUME"
    assert env.get("SCHOOLMIG_METRICS_HOST") == "0.0.0.0", (
        "deploy/Dockerfile: SCHOOLMIG_METRICS_HOST must be 0.0.0.0 to be scraped from outside"
    )
    exposed = {p.split("/")[0] for ins, a in runtime if ins == "EXPOSE" for p in a.split()}
    assert env.get("SCHOOLMIG_METRICS_PORT") in exposed, "deploy/Dockerfile: EXPOSE the SCHOOLMIG_METRICS_PORT"
    assert ("STOPSIGNAL", "SIGTERM") in runtime, "deploy/Dockerfile: STOPSIGNAL SIGTERM (what the services drain on)"


def test_dockerfile_has_a_health_check_that_exists() -> None:
    checks = [a for ins, a in stages()[-1] if ins == "HEALTHCHECK"]
    assert checks and checks[-1].upper() != "NONE", "deploy/Dockerfile: no HEALTHCHECK"
    command = checks[-1].split("CMD", 1)[1].strip()
    assert (problem := command_problem(json_or_words(command))) is None, f"deploy/Dockerfile HEALTHCHECK: {problem}"


# --------------------------------------------------------------------------- Prometheus, collector


def _mount_target(service: str, source: str) -> str | None:
    return next((t for _, s, t in mounts(services()[service]) if s.rstrip("/") == source.rstrip("/")), None)


def test_prometheus_loads_the_alert_rules_and_scrapes_the_collector() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    command = services()["prometheus"].get("command") or []
    config_path = next(
        (c.split("=", 1)[1] for c in command if str(c).startswith("--config.file=")), "/etc/prometheus/prometheus.yml"
    )
    assert _mount_target("prometheus", "./deploy/prometheus/prometheus.yml") == config_path, (
        f"prometheus: deploy/prometheus/prometheus.yml is not mounted at {config_path}"
    )
    alerts_at = _mount_target("prometheus", "./deploy/prometheus/alerts.yml")
    assert alerts_at, "prometheus: deploy/prometheus/alerts.yml is not mounted"
    assert alerts_at in (config.get("rule_files") or []), f"prometheus.yml does not load {alerts_at} in rule_files"

    collector = yaml.safe_load(COLLECTOR.read_text())
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert collector["exporters"]["prometheus"].get("resource_to_telemetry_conversion", {}).get("enabled") is True
    pipeline = collector["service"]["pipelines"]["metrics"]
    assert "prometheus" in pipeline["exporters"] and "otlp" in pipeline["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline.get(kind, []):
            assert component in collector.get(kind, {}), f"otel-collector: pipeline uses {kind} {component}, not defined"
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    collector_name = next(n for n, s in services().items() if "opentelemetry-collector" in str(s.get("image", "")))
    assert f"{collector_name}:{exporter_port}" in targets, f"prometheus.yml does not scrape {collector_name}:{exporter_port}"


def test_prometheus_sees_every_service_up_for_the_service_down_rule() -> None:
    """SchoolmigServiceDown reads up{job=~"schoolmig-.*"}: one job per service, on its own
    metrics port (the collector alone gives one `up`, its own)."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = int(image_env()["SCHOOLMIG_METRICS_PORT"])
    for name in sorted(SERVICES):
        job = jobs.get(f"schoolmig-{name}")
        assert job, f"prometheus.yml has no job schoolmig-{name} (SchoolmigServiceDown needs its `up`)"
        found = [(n, sd.get("port")) for sd in job.get("dns_sd_configs", []) for n in sd.get("names", [])]
        found += [tuple(t.rsplit(":", 1)) for sc in job.get("static_configs", []) for t in sc["targets"]]
        assert any(host == name and int(p) == port for host, p in found), f"job schoolmig-{name} does not scrape {name}:{port}"


UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def collector_names(name: str, unit: str, kind: str) -> set[str]:
    """The names the collector's Prometheus exporter writes for an instrument
    (pkg/translator/prometheus, name normalization on, the default)."""

    def clean(s: str) -> str:
        return "_".join(t for t in re.split(r"[^A-Za-z0-9]+", s) if t)

    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]
    main, _, per = unit.partition("/")
    if (main := main.strip()) and not set("{}") & set(main):
        if (prom := clean(UNITS.get(main, main))) and prom not in tokens:
            tokens.append(prom)
    if (per := per.strip()) and not set("{}") & set(per):
        if (prom := clean(PER_UNITS.get(per, per))) and prom not in tokens:
            tokens += ["per", prom]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    base = "_".join(tokens)
    return {f"{base}_bucket", f"{base}_sum", f"{base}_count"} if kind == "histogram" else {base}


def test_the_collector_path_gives_the_names_the_services_export() -> None:
    """The dashboard and the alert rules are written against the services' own /metrics;
    in docker-compose.yml Prometheus gets the same metrics through the collector, which must
    write the same names (its transform processor clears the unit "1" that would add _ratio)."""
    collector = yaml.safe_load(COLLECTOR.read_text())
    pipeline = collector["service"]["pipelines"]["metrics"]
    clears_ratio = any(
        re.search(r'set\(unit,\s*""\)\s+where\s+unit\s*==\s*"1"', statement)
        for processor in pipeline.get("processors", [])
        if processor.split("/")[0] == "transform"
        for group in collector["processors"][processor].get("metric_statements", [])
        for statement in group.get("statements", [])
    )
    direct: dict[str, set[str]] = {}
    for prom, name in exported().items():
        direct.setdefault(name, set()).add(prom)
    for name, info in instruments().items():
        unit = "" if clears_ratio and info["unit"] == "1" else info["unit"]
        via_collector = collector_names(name, unit, info["kind"])
        assert via_collector == direct.get(name), (
            f"{name}: the services export {sorted(direct.get(name, []))}, the collector would write {sorted(via_collector)}"
        )


# --------------------------------------------------------------------------- Grafana


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    provisioning_at = _mount_target("grafana", "./deploy/grafana/provisioning")
    dashboards_at = _mount_target("grafana", "./deploy/grafana/dashboards")
    assert provisioning_at == "/etc/grafana/provisioning", (
        "grafana: mount deploy/grafana/provisioning at /etc/grafana/provisioning"
    )
    assert dashboards_at, "grafana: deploy/grafana/dashboards is not mounted"
    sources = [
        d for f in (GRAFANA / "provisioning" / "datasources").glob("*.yml") for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    prometheus = next((d for d in sources if d.get("uid") == "prometheus"), None)
    assert prometheus and prometheus["type"] == "prometheus", "no provisioned Prometheus datasource with uid `prometheus`"
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in services()
    providers = [
        p for f in (GRAFANA / "provisioning" / "dashboards").glob("*.yml") for p in yaml.safe_load(f.read_text())["providers"]
    ]
    paths = {p["options"]["path"] for p in providers if p.get("type", "file") == "file"}
    assert dashboards_at in paths, f"no dashboard provider reads {dashboards_at} (the providers read {sorted(paths)})"
    assert DASHBOARD.is_file()


def _dashboard_panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for p in panels:
            out += [p] if p.get("type") != "row" else []
            out += walk(p.get("panels", []))
        return out

    return walk(json.loads(DASHBOARD.read_text())["panels"])


KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "e",
}


def metric_names_in(expr: str) -> set[str]:
    """Every metric an expr selects: identifiers that are neither functions, aggregations'
    labels, label matchers, durations nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def label_names_in(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = {
        label for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text) for label in re.findall(r"\w+", group)
    }
    labels |= {label for group in re.findall(r"\{([^}]*)\}", text) for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", group)}
    return labels


def labels_of(metric: str) -> set[str]:
    if metric == "up":
        return {"job", "instance"}
    name = exported()[metric]
    extra = {"le"} if metric.endswith("_bucket") else set()
    return instruments()[name]["labels"] | extra | {"job", "instance"}


def test_every_dashboard_query_uses_exported_metrics_and_their_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    known = known_metric_names()
    alert_names = {
        n
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        for n in re.findall(r"\b(schoolmig_[a-z_]+)", r["expr"])
    }
    assert alert_names <= known, f"alerts.yml uses {sorted(alert_names - known)}, not exported"
    panels = _dashboard_panels()
    assert panels, "the dashboard has no panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    used: set[str] = set()
    for panel in panels:
        where = f"dashboard panel {panel.get('title')!r}"
        assert (panel.get("datasource") or {}).get("uid") == "prometheus", f"{where}: datasource uid is not `prometheus`"
        assert panel.get("targets"), f"{where}: no targets"
        for target in panel["targets"]:
            expr = target.get("expr", "")
            assert expr.strip(), f"{where}: a target without expr"
            assert "$" not in expr, f"{where}: {expr!r} uses a Grafana variable; queries must run on Prometheus as they are"
            assert (target.get("datasource") or {"uid": "prometheus"}).get("uid") == "prometheus", f"{where}: target datasource"
            metrics = metric_names_in(expr)
            assert metrics, f"{where}: {expr!r} selects no metric"
            assert metrics <= known, f"{where}: {expr!r} uses {sorted(metrics - known)}, which the services do not export"
            allowed = set().union(*(labels_of(m) for m in metrics))
            labels = label_names_in(expr)
            assert labels <= allowed, (
                f"{where}: {expr!r} uses label(s) {sorted(labels - allowed)} that the code never sets on {sorted(metrics)}"
            )
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= allowed, f"{where}: legend uses {sorted(legend - allowed)}, not a label of {sorted(metrics)}"
            used |= metrics
    for needed in (
        "schoolmig_school_progress",
        "schoolmig_records_loaded_total",
        "schoolmig_errors_total",
        "schoolmig_school_phase",
        "schoolmig_records_quarantined_total",
        "schoolmig_consumer_lag",
        "schoolmig_validation_duration_seconds_bucket",
        "schoolmig_sync_duration_seconds_bucket",
        "schoolmig_phase_transitions_total",
    ):
        assert needed in used, f"the dashboard does not show {needed}"

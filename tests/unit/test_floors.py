"""The code's floors: each module imports only from its own floor and the floors below it,
no service imports another service, and neither ``shared`` nor the command line imports a
service (what two floors need moves down). Read from the source, so a new import that
reaches up fails here, naming the module and what it imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Bottom first. A module belongs to the first floor with a prefix of its name.
FLOORS: list[tuple[str, ...]] = [
    ("shared.catalog",),  # domains, tables, zones, ids: pure
    ("shared.mapping",),  # source records to rows and back: pure, knows rows, not the wire
    ("shared.platform", "shared.failures.policy"),  # settings, Kafka, PostgreSQL, signing; whose fault a failure is
    ("shared.wire",),  # the messages and their batches
    ("shared.source",),  # what a browser holds
    ("shared.wire.fanout",),  # a parsed snapshot's records planned as raw batches
    ("shared.failures",),  # the guard and the dead letters
    ("shared.ledger",),  # each record's state in PostgreSQL
    ("shared.service",),  # how every service is made (the guarded broker, the lifespan, the rounds)
    ("services", "schoolmig"),  # the services, and the command line beside them
]


def floor_of(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, prefixes in enumerate(FLOORS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, module
    return max(matches)[1]  # the longest prefix decides (shared.failures.policy before shared.failures)


def modules() -> dict[str, Path]:
    found = {}
    for top in ("shared", "services", "schoolmig"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n.split(".")[0] in ("shared", "services", "schoolmig")]


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    upward = [
        f"{module} imports {name}"
        for module, path in modules().items()
        for name in imports(path)
        if floor_of(name) > floor_of(module)
    ]
    assert upward == []


def test_no_service_reaches_into_another_and_nothing_outside_the_services_reaches_into_one() -> None:
    reaching = []
    for module, path in modules().items():
        for name in imports(path):
            if not name.startswith("services."):
                continue
            target = name.split(".")[1]
            if not module.startswith(f"services.{target}"):
                reaching.append(f"{module} imports {name}")
    assert reaching == []


def test_the_floors_hold_the_rules_they_are_named_for() -> None:
    """The test above would pass vacuously if every module sat on one floor."""
    assert floor_of("shared.catalog.domains") < floor_of("shared.mapping.students") < floor_of("shared.platform.kafka")
    assert floor_of("shared.failures.policy") < floor_of("shared.wire.batching") < floor_of("shared.source.snapshot")
    assert floor_of("shared.source.snapshot") < floor_of("shared.wire.fanout") < floor_of("shared.failures.guard")
    assert floor_of("shared.failures.deadletters") < floor_of("shared.ledger.accounting") < floor_of("schoolmig.cli")

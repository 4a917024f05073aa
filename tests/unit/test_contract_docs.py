import subprocess
import sys
from pathlib import Path

import yaml

from shared.catalog.domains import Domain

ROOT = Path(__file__).resolve().parents[2]


def test_the_published_asyncapi_document_is_current(tmp_path: Path) -> None:
    """docs/asyncapi.yaml is what `make docs` generates from the contract today."""
    out = tmp_path / "asyncapi.yaml"
    subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", "schoolmig.contract:app", "--yaml", "--out", str(out)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    # Compared as data: FastStream's channel order varies with the hash seed.
    generated = yaml.safe_load(out.read_text())
    committed = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    assert generated == committed, "run `make docs` and commit the result"


def test_the_document_describes_both_envelopes_with_every_field() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    schemas = spec["components"]["schemas"]
    assert set(schemas["SnapshotManifest"]["properties"]) >= {
        "kind",
        "schema_version",
        "school_id",
        "snapshot_id",
        "format",
        "taken_at",
        "size_bytes",
        "sha256",
        "chunk_count",
        "chunk_sha256",
    }
    assert set(schemas["SnapshotChunk"]["properties"]) >= {
        "kind",
        "schema_version",
        "school_id",
        "snapshot_id",
        "index",
        "data_b64",
    }
    assert set(schemas["ChangeBatch"]["properties"]) >= {"kind", "schema_version", "school_id", "client_id", "changes"}
    assert set(schemas["Change"]["properties"]) >= {"op", "domain", "record_id", "record", "source_ts", "seq"}
    assert {c["address"] for c in spec["channels"].values()} == {
        "schoolmig.ingest",
        "schoolmig.control.modes",
        "schoolmig.outcomes",
        "schoolmig.events",
        "schoolmig.deadletter",
    }
    for envelope in ("SnapshotManifest", "SnapshotChunk", "ChangeBatch"):
        assert schemas[envelope]["required"][0] == "kind"  # a message without it is refused
    record_rules = {rule["if"]["properties"]["domain"]["const"] for rule in schemas["Change"]["allOf"]}
    assert record_rules == {d.value for d in Domain}


def test_the_record_schemas_in_docs_are_current(tmp_path: Path) -> None:
    """docs/schemas/records/ is what `make docs` writes from shared.mapping.schemas today."""
    from schoolmig.contract import write_record_schemas

    for path in write_record_schemas(tmp_path):
        committed = ROOT / "docs" / "schemas" / "records" / path.name
        assert committed.exists() and committed.read_text() == path.read_text(), "run `make docs` and commit the result"

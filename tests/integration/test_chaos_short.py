"""The short form of ``make chaos`` (``tests/chaos``): two schools through the real stack
with replicas, killed at random and with their broker lost (the other scenarios run in the
full form; redeliveries out of order are also ``test_loader_writes``), and every row must show nothing lost, nothing
duplicated, every table's checksum equal to the clean single-replica run's, and every school
validated. The full form (20 schools, every scenario) is ``make chaos``."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.__main__ import arguments, run_chaos


async def test_faults_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    command_line = "--schools 2 --only kill-9 broker-lost --kills 2 --kill-every 0.6"
    args = arguments([*command_line.split(), "--out", str(tmp_path / "chaos.json")])
    table = await run_chaos(args)
    assert [row["scenario"] for row in table] == ["clean", "kill-9", "broker-lost"]
    for row in table:
        assert row["ok"], row
        assert (row["lost"], row["duplicated"], row["checksums_differing"]) == (0, 0, 0), row

"""The README's first hour, as an operator lives it: `schoolmig init`, `schoolmig up` in one
terminal, every other command from another one with nothing but the state directory in
common (no KAFKA_BOOTSTRAP_SERVERS, no DATABASE_URL, no key exported by hand); a school
migrated (with one of `up`'s services killed and started again), cut over, refused a
rollback without an export (at once, with the reason),
exported and verified, rolled back; an unknown operator refused at once; the history and
the dead letters read; then `up` stopped and started again, and everything is still there."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from schoolmig.stack import StackInfo
from tests.integration.conftest import localstorage_dump

pytestmark = pytest.mark.integration

SCHOOL = "first-hour"
STUDENTS = [
    {
        "id": f"s-{n}",
        "name": f"Pupil {n}",
        "email": f"p{n}@x",
        "status": "active",
        "joinDate": "2024-01-01",
        "dateOfBirth": "2010-01-01",
    }
    for n in range(1, 6)
]


BAD = {"id": "s-bad", "status": "active"}  # no name: quarantined with its reason
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def look_at_the_status_page(api_url: str, screenshot: Path) -> dict[str, str]:
    """What a person sees on the page in Debian's chromium, once it has read the figures."""
    from playwright.async_api import async_playwright, expect

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "chromium is missing: `make test` installs it (deploy/ensure-debian-package.sh chromium chromium)"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1100})
            await page.goto(f"{api_url}/status")
            await expect(page.locator("#updated")).not_to_have_text("never", timeout=20_000)
            row = page.locator("#schools tbody tr", has_text=SCHOOL)
            await expect(row).to_have_count(1)
            refused = page.locator("#commands td.refused")
            await expect(refused.first).to_contain_text("refused")
            await page.screenshot(path=str(screenshot), full_page=True)
            seen = {
                "total": await page.locator("#total").inner_text(),
                "migrated": await page.locator("#migrated").inner_text(),
                "failed": await page.locator("#failed").inner_text(),
                "progress": await page.locator("#progress").inner_text(),
                "school": await row.inner_text(),
                "quarantine": await page.locator("#quarantine tbody").inner_text(),
                "refused": await refused.first.inner_text(),
                "letters": await page.locator("#letters tbody").inner_text(),
                "error": await page.locator("#error").inner_text(),
            }
        finally:
            await browser.close()
    return seen


async def mode_announced(bootstrap: str, topic: str, school: str, timeout_s: float = 30) -> dict[str, Any]:
    """The school's mode as a client reads it from the compacted control topic."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == school.encode():
                        return dict(json.loads(record.value))
        raise AssertionError(f"no mode of {school} on {topic} within {timeout_s:.0f}s")
    finally:
        await consumer.stop()


async def clean_up_a_device(bootstrap: str, api_url: str, browser: Path) -> Path:
    """A device's HybridClient, once the school's mode says ``clear_local``: archive and clear."""
    from schoolmig.hybrid import HybridClient, LocalData, Outbox, http_mode_source, kafka_publisher

    client = HybridClient(
        SCHOOL,
        "office-pc",
        local=LocalData(browser),
        outbox=Outbox(browser.parent / "outbox"),
        publisher=kafka_publisher(bootstrap, "schoolmig.ingest"),
        mode=http_mode_source(api_url),
    )
    deadline = time.monotonic() + 30
    while (archive := await client.clean_up_if_told()) is None:
        assert time.monotonic() < deadline, "the coordinator never said clear_local"
        await asyncio.sleep(0.5)
    return archive


def wait_for(read: Any, done: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while not done(value := read()):
        assert time.monotonic() < deadline, value
        time.sleep(0.5)
    return value


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCHOOLMIG_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    return env | {"SCHOOLMIG_STATE_DIR": str(state), "SCHOOLMIG_OPERATOR": "head-teacher"} | extra


def cli(state: Path, *args: str, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schoolmig.cli", *args],
        env=_env(state, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON on stdout (rc {done.returncode}): {done.stdout!r} {done.stderr!r}") from None


class Up:
    """`schoolmig up` in its own terminal (process group), its output kept."""

    def __init__(self, state: Path, **extra: str) -> None:
        self.state, self.extra = state, extra
        self.out = state.parent / f"up-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Up:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "schoolmig.cli", "up"],
            env=_env(self.state, **self.extra),
            stdout=self.out.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while StackInfo.load_running(self.state) is None or "- files: [" not in self.printed():  # its last line
            assert self.process.poll() is None, self.printed()
            assert time.monotonic() < deadline, self.printed()
            time.sleep(0.2)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def printed(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


def test_the_first_hour_from_another_terminal_and_a_restart_that_keeps_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = tmp_path / f"{SCHOOL}.json"
    data.write_bytes(localstorage_dump(students=[*STUDENTS, BAD]))

    # Without a stack or a key, a command is one line saying what to set.
    nothing = cli(state, "status")
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1 and "schoolmig up" in nothing.stderr
    keyless = cli(state, "cutover", "--school", SCHOOL)
    assert keyless.returncode == 2 and keyless.stderr.count("\n") == 1 and "schoolmig init" in keyless.stderr

    made = cli(state, "init")
    assert made.returncode == 0, made.stderr
    for name in ("operator_key", "service_key", "api_token"):
        path = state / "secrets" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) >= 32
        assert path.read_text().strip() not in made.stdout + made.stderr  # paths, never the secrets
    key = (state / "secrets" / "operator_key").read_text()
    assert cli(state, "init").returncode == 0 and (state / "secrets" / "operator_key").read_text() == key  # kept

    with Up(state, SCHOOLMIG_LOCAL_GRACE_S="3") as up:  # the plan's last step, after a grace period made short
        printed = up.printed()
        assert f"data         {(state / 'postgres').resolve()}" in printed and "fsync on" in printed
        assert "API writes   on" in printed and "scrape_configs:" in printed and "file_sd_configs:" in printed
        assert key.strip() not in printed
        twice = cli(state, "up", timeout=30)  # one `up` per state dir
        assert twice.returncode == 2 and "already runs" in twice.stderr

        # A service that dies is started again by `up` (the migration below goes through it).
        [transform] = [p for p in psutil.Process(up.pid).children(recursive=True) if "services.transform" in p.cmdline()]
        transform.kill()
        wait_for(up.printed, lambda out: "exited with -9; restart #1" in out)

        migrated = cli(state, "migrate", str(data), "--school", SCHOOL, "--device", "office-pc", "--json")
        assert migrated.returncode == 0, migrated.stderr
        [report] = as_json(migrated)["schools"]
        assert report["phase"] == "validated", report
        assert report["domains"]["students"] == {"source": len(STUDENTS) + 1, "loaded": len(STUDENTS), "quarantined": 1}
        [quarantined] = report["quarantine"]
        ready = {s["school_id"]: s for s in as_json(cli(state, "status", "--json"))}[SCHOOL]
        assert ready["next"] == f"schoolmig cutover --school {SCHOOL}"

        cut = cli(state, "cutover", "--school", SCHOOL, "--reason", "validated; school told", "--json")
        assert cut.returncode == 0, cut.stdout + cut.stderr
        assert as_json(cut)["transitions"][-1]["to_phase"] == "completed"

        # The cutover stood its grace period: a device told so archives its local copy and clears it.
        running = StackInfo.load_running(state)
        assert running is not None
        browser = tmp_path / "office-pc" / "local.json"
        browser.parent.mkdir()
        browser.write_text(json.dumps({"students": STUDENTS}))
        archive = asyncio.run(clean_up_a_device(running.kafka_bootstrap_servers, running.api_url, browser))
        assert json.loads(browser.read_text()) == {} and json.loads(archive.read_text()) == {"students": STUDENTS}
        copies = wait_for(
            lambda: {s["school_id"]: s for s in as_json(cli(state, "status", "--json"))}[SCHOOL]["local_copies"],
            lambda c: "office-pc" in c["cleared"],
        )
        assert copies == {"told_to_clear": True, "cleared": ["office-pc"], "holding": []}, copies

        asked = time.monotonic()
        refused = cli(state, "rollback", "--school", SCHOOL, "--json")
        answer = as_json(refused)
        assert refused.returncode == 1 and answer["refused"] and answer["answered_by"] == "coordinator"
        assert "export" in answer["outcome"] and time.monotonic() - asked < 30
        plain = cli(state, "rollback", "--school", SCHOOL)
        assert plain.returncode == 1 and "refused" in plain.stderr and plain.stdout == ""

        stranger = cli(state, "redrive", "--school", SCHOOL, SCHOOLMIG_OPERATOR="stranger", SCHOOLMIG_OPERATOR_KEY="not-known")
        assert stranger.returncode == 1 and "refused unread" in stranger.stderr, stranger.stderr

        api = StackInfo.load_running(state).api_url  # type: ignore[union-attr]
        shot = Path(os.environ.get("SCHOOLMIG_STATUS_SCREENSHOT") or tmp_path / "status.png")
        seen = asyncio.run(look_at_the_status_page(api, shot))
        assert (seen["total"], seen["migrated"], seen["failed"], seen["progress"]) == ("6", "5", "1", "100%"), seen
        assert "completed" in seen["school"] and "6 / 6" in seen["school"] and "100%" in seen["school"], seen
        assert "local copies cleared on 1 device(s), none holds one" in seen["school"], seen
        assert quarantined["reason"] in seen["quarantine"] and "export" in seen["refused"], seen
        assert "coordinator" in seen["letters"] and not seen["error"], seen
        assert shot.stat().st_size > 10_000

        exported = cli(state, "export", "--school", SCHOOL, "--verify", "--json")
        assert exported.returncode == 0, exported.stderr
        assert as_json(exported)["verified"]
        listed = [s["school_id"] for s in as_json(cli(state, "status", "--json"))]
        assert listed == [SCHOOL]  # the export's scratch school is not one of the schools

        back = cli(state, "rollback", "--school", SCHOOL, "--reason", "parents' evening: back to the browser", "--json")
        assert back.returncode == 0, back.stdout + back.stderr
        assert as_json(back)["transitions"][-1]["to_phase"] == "rolled_back"

        history = as_json(cli(state, "history", "--school", SCHOOL, "--json"))
        commands = [(h["what"], h["actor"], h["reason"], h["outcome"]) for h in history if h["kind"] == "command"]
        assert ("rollback", "head-teacher", "parents' evening: back to the browser") in [c[:3] for c in commands]
        assert any(c[0] == "rollback" and c[3].startswith("refused") for c in commands)
        assert [h["outcome"] for h in history if h["kind"] == "export"][0].startswith("verified as ")
        assert [(h["actor"], h["what"]) for h in history if h["kind"] == "device"] == [
            ("office-pc", "local copy archived and cleared")
        ]
        assert all(h["at"].endswith("Z") and "T" in h["at"] for h in history)  # ISO 8601

        letters = [json.loads(line) for line in cli(state, "deadletters", "--json").stdout.splitlines()]
        assert any(d["topic"].endswith(".commands.operator") and d["stage"] == "coordinator" for d in letters), letters
        assert all("payload_b64" not in d for d in letters)
        assert up.stop() == 0  # every service stopped cleanly (`up` says so, or exits 1)
        assert "exited cleanly" in up.printed()

    with Up(state) as again:  # the same state dir: the same database, the same keys
        assert f"data         {(state / 'postgres').resolve()}" in again.printed()
        # The new broker holds nothing: the coordinator announces every school's mode again at once.
        running = StackInfo.load_running(state)
        assert running is not None
        announced = asyncio.run(mode_announced(running.kafka_bootstrap_servers, "schoolmig.control.modes", SCHOOL))
        assert announced["mode"] == "localStorage" and announced["phase"] == "rolled_back", announced
        after = {s["school_id"]: s for s in as_json(cli(state, "status", "--json"))}
        assert after[SCHOOL]["phase"] == "rolled_back" and after[SCHOOL]["source"] == len(STUDENTS) + 1
        assert as_json(cli(state, "history", "--school", SCHOOL, "--json")) == history
        redriven = cli(state, "set-timezone", "Europe/Skopje", "--school", SCHOOL)
        assert redriven.returncode in (0, 1) and "refused unread" not in redriven.stderr  # the key still signs
        assert again.stop() == 0

"""The coordinator's sync monitor: what the leader does every poll interval, for all schools.

Each round (under the leader's lease): releases whose event was lost are acted on
(``catch_up``); up to :data:`SYNC_CHECKS_PER_ROUND` syncing schools are checked, least
recently checked first; cutovers left running are resumed; and, once a second, change
outcomes are announced. A school whose every source record is loaded or quarantined has
its deleted records marked, its parked records settled (quarantined as orphans, or re-driven
when their parents or values are free), moves to ``synced``, and the validator is asked.
A school whose counts stop moving while records are missing is re-driven from its verified
backup, with the one back-off of ``shared.failures.policy``.

Its memory (when counts last moved, when each school was last checked) only paces the
rounds: a new leader starts with none, which only delays a re-drive.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.coordinator.lag import consumer_groups, consumer_lag, high_waters
from services.coordinator.operations import Operations, gauge_phase, run_id_of
from services.coordinator.phases import IllegalTransition, Phase
from services.coordinator.store import CoordinatorStore
from shared.catalog.domains import Domain
from shared.failures.policy import backoff
from shared.ledger.accounting import DomainCounts, progress, record_counts, record_counts_many
from shared.ledger.schools import is_refusal
from shared.platform.leases import Lease
from shared.service import Wiring

log = logging.getLogger("schoolmig.coordinator")
ACTOR = "coordinator"
MAX_REDRIVES = 5
OUTCOMES_INTERVAL_S = 1.0  # how often clients hear where their changes stand
#: Schools whose counts one sync round reads at most (the least recently checked first):
#: counting reads every ledger line of a school, and with hundreds of schools in dual write
#: at once (ingest far ahead of the loader) reading them all twice a second cost the
#: database more than the loading did.
SYNC_CHECKS_PER_ROUND = 20
BROKER_CHECK_S = 5.0  # how often the leader looks whether the broker lost its data


@dataclass(kw_only=True)
class SyncMonitor(Wiring):
    """The leader's rounds, and the pacing they keep between rounds."""

    store: CoordinatorStore
    operations: Operations
    #: Per (school, snapshot) syncing: its counts when they last moved, when, and re-drives since.
    _progress: dict[tuple[str, str], tuple[tuple[int, ...], float, int]] = field(default_factory=dict)
    _checked_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _lag_total: float = -1.0  # the consumers' total lag when last seen,
    _lag_moved_at: float = 0.0  # and when it last changed
    _next_outcomes: float = 0.0
    _next_broker_check: float = 0.0  # the first round looks at once: a restarted stack's broker may be new

    async def check_sync(self, school_id: str, snapshot_id: str, counts: dict[Domain, DomainCounts] | None) -> bool:
        """Move a school to ``synced`` and ask for validation when every record is accounted for."""
        if counts is None or not all(c.accounted for c in counts.values()):
            if counts is not None:
                await self.redrive_if_stuck(school_id, snapshot_id, counts)
            return False
        # Every other device's newest snapshot too (one replaced while it synced is merged, not
        # dropped): its records are part of what is validated, so they must all stand somewhere.
        others = await self.store.device_snapshots(school_id) - {snapshot_id}
        if others:
            theirs = await record_counts_many(self.store.pool, [(school_id, other) for other in sorted(others)])
            waiting = False
            for other in sorted(others):
                found = theirs.get((school_id, other))
                if found is None or not all(c.accounted for c in found.values()):
                    waiting = True
                    if found is not None:
                        await self.redrive_if_stuck(school_id, other, found)
            if waiting:
                return False
        cut = None
        if await self.store.has_changes(school_id):
            # Live changes: counts prove the snapshot, not the changes; a barrier proves both (and
            # the sweep after it settles what changes still wait for: orphans before validation).
            cut = await self.changes_barrier(school_id, snapshot_id)
            if cut is None:
                return False
        # Deletions first: a record a device no longer holds lets its unique values go, and a
        # write waiting for one is then re-driven by the sweep, not quarantined.
        if marked := await self.store.mark_deleted(school_id, snapshot_id):
            log.info("%s: %d record(s) gone from snapshot %s marked deleted", school_id, marked, snapshot_id)
        sweep = await self.store.sweep_parked(school_id, snapshot_id)
        if sweep.redrive:
            await self.operations.hand_back(sweep.redrive)
            log.warning("%s: %d parked record(s) whose parents or values are free re-driven", school_id, len(sweep.redrive))
        if sweep.redrive or sweep.pending:
            return False  # synced once they are written
        orphans = sweep.orphans
        settled = await record_counts(self.store.pool, school_id, snapshot_id) or counts  # the sweep's orphans quarantined
        loaded = sum(c.loaded for c in settled.values())
        quarantined = sum(c.quarantined for c in settled.values())
        # The move and the validation it asks for, in one transaction (the request through the
        # outbox): a coordinator stopped in between leaves no synced school without its run.
        request = self.operations.validation_request(school_id, snapshot_id, cut)
        await self.store.new_validation_run(run_id_of(request), school_id, snapshot_id)  # shown as requested
        try:
            await self.store.transition(
                school_id,
                snapshot_id,
                Phase.SYNCED,
                actor=ACTOR,
                expect=Phase.DUAL_WRITE,
                reason=f"every source record accounted for: {loaded} loaded, {quarantined} quarantined "
                f"({orphans} of them orphans whose parent never arrived)",
                then=[request],
            )
        except IllegalTransition:
            return False
        await self.operations.drain()  # a failure here is the next round's (the outbox keeps it)
        await self.operations.phase_changed(school_id, Phase.SYNCED, "synced: every record accounted for; validating")
        if (began := await self.store.entered_at(school_id, Phase.DUAL_WRITE)) is not None:
            seconds = (datetime.now(UTC) - began).total_seconds()
            self.metrics.sync_duration.record(seconds, {"school_id": school_id})
            self.metrics.schools.speed[school_id] = round(loaded / max(seconds, 1e-3) * 60, 1)
        log.info("%s: synced; validation %s requested", school_id, run_id_of(request))
        return True

    async def redrive_if_stuck(self, school_id: str, snapshot_id: str, counts: dict[Domain, DomainCounts]) -> None:
        """A school whose counts have not moved for ``SCHOOLMIG_REDRIVE_AFTER_S`` while records are
        missing, with no consumer working through a backlog, lost them in flight (a
        broker lost, topics gone): its snapshot is fanned out again from the verified backup.
        Each further re-drive waits twice as long; after ``MAX_REDRIVES`` it is left to an
        operator (logged, counted as critical)."""
        seen = tuple(n for c in counts.values() for n in (c.loaded, c.quarantined, c.parked))
        now = time.monotonic()
        last = self._progress.get((school_id, snapshot_id))
        if last is None or last[0] != seen:
            self._progress[(school_id, snapshot_id)] = (seen, now, 0 if last is None else last[2])
            return
        _, since, tries = last
        if now - since <= backoff(tries + 1, base=self.settings.redrive_after_s) or self._pipeline_busy(now):
            return
        self._progress[(school_id, snapshot_id)] = (seen, now, tries + 1)
        if tries >= MAX_REDRIVES:
            if tries == MAX_REDRIVES:
                log.error(
                    "%s: still missing records after %d re-drives: an operator must look (schoolmig status)", school_id, tries
                )
                self.metrics.errors.add(1, {"category": "critical", "where": "redrive"})
            return
        await self.operations.redrive(
            school_id,
            snapshot_id,
            ACTOR,
            f"no record accounted for in {now - since:.0f}s, some still missing (re-drive {tries + 1})",
        )

    async def changes_barrier(self, school_id: str, snapshot_id: str) -> datetime | None:
        """When the barrier that proves this sync was sent, once it passed (everything ingest had
        before it, changes included, is written); None while it travels. Sent here the first time,
        and again if it has not passed within ``SCHOOLMIG_BARRIER_TIMEOUT_S`` (a lost copy)."""
        since = await self.store.entered_at(school_id, Phase.DUAL_WRITE)
        sent = await self.store.sync_barrier(school_id, snapshot_id, since)
        if sent is not None and sent.passed:
            return sent.sent_at
        if sent is None or sent.age_s > self.settings.barrier_timeout_s:
            barrier_id, _ = await self.operations.send_barrier(school_id, snapshot_id)
            log.info(
                "%s: every record of %s accounted for; barrier %s sent to prove the changes", school_id, snapshot_id, barrier_id
            )
        return None

    def _pipeline_busy(self, now: float) -> bool:
        """Consumers still working through a backlog (their lag moved within the re-drive delay):
        a school may only be slow. A lag that stays put (a consumer group lost with its broker)
        is no reason to wait."""
        total = float(sum(self.metrics.schools.lag.values()))
        if total != self._lag_total:
            self._lag_total, self._lag_moved_at = total, now
        return total > 0 and now - self._lag_moved_at < self.settings.redrive_after_s

    async def lead(self, leader: Lease) -> None:
        """What one coordinator does for all, whichever holds the lease: the sync checks, and
        taking up cutovers a coordinator left running (it died, or lost its database)."""
        if await leader.held():
            if time.monotonic() >= self._next_broker_check:
                self._next_broker_check = time.monotonic() + BROKER_CHECK_S
                await self.check_broker()
                await self.operations.release_local_copies()
            await self.catch_up()
            await self.check_syncing()
            await self.operations.resume()
            if time.monotonic() >= self._next_outcomes:  # a bounded round of outcome checks: not every poll
                self._next_outcomes = time.monotonic() + OUTCOMES_INTERVAL_S
                await self.operations.announce_outcomes(leader.held)

    async def check_broker(self) -> bool:
        """Whether the broker lost what it held (a high-water mark of the control or events topic
        went back: an in-memory broker restarted, as ``schoolmig up``'s does with the stack).
        If it did, recovered at once rather than after a stall: every school's mode is
        announced again, and every school in dual write is re-driven from its verified backup
        (what was in flight comes again; what arrived is written the same). The loss is kept
        in the database until the recovery is done, so a coordinator stopped half-way leaves
        it to the next round, whichever replica leads."""
        assert self.settings.kafka_bootstrap_servers
        names = [self.topics.control, self.topics.events]
        marks = await high_waters(self.settings.kafka_bootstrap_servers, names)
        if {topic for topic, _ in marks} != set(names):  # made again by the topic keeper soon: looked at then
            return False
        if not await self.store.broker_loss_pending(self.topics.control, marks):
            return False
        log.warning("the broker lost its data (its high-water marks went back): announcing modes, re-driving schools")
        self.metrics.errors.add(1, {"category": "transient", "where": "broker_lost"})
        announced = await self.operations.announce_modes()
        redriven = 0
        for school_id, snapshot_id in await self.store.syncing():
            outcome = await self.operations.redrive(school_id, snapshot_id, ACTOR, "the broker lost what it held in flight")
            redriven += not is_refusal(outcome)
            self._progress.pop((school_id, snapshot_id), None)  # a fresh stall clock after the re-drive
        await self.store.broker_recovered(self.topics.control)
        log.warning("after the broker's loss: %d mode(s) announced again, %d school(s) re-driven", announced, redriven)
        return True

    async def catch_up(
        self,
    ) -> None:
        """Releases whose event never came (lost with a broker) are acted on from the database,
        as the event would have been: the school moves on, and is re-driven if records are missing."""
        for event in await self.store.unheard_releases(max(10.0, self.settings.sync_poll_interval_s * 20)):
            log.warning("%s: snapshot %s was released but its event never came; acting on it", event.school_id, event.snapshot_id)
            await self.operations.advance(event)

    async def observe_if_leader(self, leader: Lease) -> None:
        """The school gauges and lag, sampled by the leader only (one series per school, one
        query load); the others report none."""
        if await leader.held():
            await self.observe()
        else:  # one series per school and phase, from the leader only
            self.metrics.schools.lag.clear()
            self.metrics.schools.progress.clear()
            self.metrics.schools.phase.clear()
            self.metrics.schools.speed.clear()

    async def check_syncing(
        self,
    ) -> None:
        everyone = await self.store.syncing()
        syncing = sorted(everyone, key=lambda pair: self._checked_at.get(pair, 0.0))[:SYNC_CHECKS_PER_ROUND]
        now = time.monotonic()
        for pair in list(self._checked_at):
            if pair not in everyone:
                del self._checked_at[pair]
        schools = {school_id for school_id, _ in everyone}
        for pair in list(self._progress):  # (another device's snapshot of a syncing school is watched too)
            if pair[0] not in schools:
                del self._progress[pair]
        self._checked_at.update(dict.fromkeys(syncing, now))
        counts = await record_counts_many(self.store.pool, syncing)  # these schools in one go
        for school_id, snapshot_id in syncing:
            try:
                await self.check_sync(school_id, snapshot_id, counts.get((school_id, snapshot_id)))
            except Exception:  # one school's trouble never holds up the others; its next round retries
                log.exception("%s: sync check failed; retrying next round", school_id)
                self.metrics.errors.add(1, {"category": "transient", "where": "sync check"})

    async def observe(
        self,
    ) -> None:
        """Refresh what the progress, phase and lag gauges report (their callbacks cannot do
        I/O). Phases are also set on every move (``Operations.moved``)."""
        assert self.settings.kafka_bootstrap_servers
        self.metrics.schools.lag.update(await consumer_lag(self.settings.kafka_bootstrap_servers, consumer_groups(self.topics)))
        schools = await self.store.schools()
        # Only schools still on their way are counted again: a validated or completed school's
        # progress is 1 (counting every school ever, every 5 s, grew with the database).
        settled = {Phase.VALIDATED.value, Phase.CUTOVER.value, Phase.COMPLETED.value, Phase.ROLLED_BACK.value}
        moving = [(s["school_id"], s["snapshot_id"]) for s in schools if s["snapshot_id"] and s["phase"] not in settled]
        all_counts = await record_counts_many(self.store.pool, moving)
        listed = {s["school_id"] for s in schools}
        for key in [k for k in self.metrics.schools.phase if k[0] not in listed]:  # gone, or a scratch school
            del self.metrics.schools.phase[key]
        for school_id in [k for k in self.metrics.schools.progress if k not in listed]:
            del self.metrics.schools.progress[school_id]
        for school in schools:
            school_id = school["school_id"]
            gauge_phase(self.metrics, school_id, Phase(school["phase"]))
            if school["phase"] in settled:  # a rolled-back school keeps the progress it had
                if school["phase"] != Phase.ROLLED_BACK.value:
                    self.metrics.schools.progress[school_id] = 1.0
            elif counts := all_counts.get((school_id, school["snapshot_id"])):
                done, source = progress(counts)
                self.metrics.schools.progress[school_id] = round(done / source, 4) if source else 1.0

"""An in-memory seed table implementing ``SeedTableLike`` and ``JobRegistry`` with the table's commit rules
(docs/table.md, docs/layout.md), for unit tests of the driver's logic and of a job's lifecycle. The Redis
table is tested against the same rules in tests/integration; this one also counts the calls it gets, so a
test can see what the driver asked."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Sequence

from germinator_dist.errors import JobNotFound, SpecError, TableError
from germinator_dist.records import (
    CommitOutcome,
    JobInfo,
    JobState,
    LayerEntry,
    Progress,
    PublishOutcome,
    Snapshot,
    SwapCommit,
)


def _slot_indices(rank: int, n_floats: int, slot: int) -> list[int]:
    """Where slot ``slot``'s floats sit in ``[alpha, beta, g (r), e[0][0] (r), ...]``: g, then each expert."""
    per = (n_floats - 2) // rank
    return [2 + j * rank + slot for j in range(per)]


class MemoryTable:
    """One process's seed table: rows, state, progress, heartbeats and documents per job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[str, list[LayerEntry]] = {}
        self.epoch: dict[str, int] = {}
        self.state: dict[str, JobState] = {}
        self.desired: dict[str, int] = {}
        self.progress_: dict[str, Progress] = {}
        self.docs: dict[tuple[str, str], str] = {}
        self.beats: dict[tuple[str, str, str], dict] = {}
        self.events: dict[str, list[tuple[str, int]]] = {}  # (kind, layer) per accepted change
        self.specs: dict[str, str] = {}
        self.leases: dict[str, str] = {}  # job -> owner
        self.calls: Counter = Counter()

    # ---- set-up (not part of the protocol) ---------------------------------------------------------
    def add_job(self, job: str, rows: Sequence[LayerEntry], desired: int = 1, state=JobState.RUNNING) -> None:
        with self._lock:
            self.rows[job] = [r.model_copy(update={"gens": r.generations}) for r in rows]
            self.epoch[job], self.state[job], self.desired[job] = 0, JobState(state), desired
            self.progress_[job], self.events[job] = Progress(), []

    # ---- the job registry (JobRegistry) -------------------------------------------------------------
    def create_job(
        self, job, spec_json, layers=(), desired_workers=1, *, resume=False, seed_bits=63, lease=None
    ) -> JobInfo:
        """Register a job (PENDING), with rows or without; an existing id raises TableError."""
        self.calls["create_job"] += 1
        if job in self.rows:
            raise TableError(f"job {job} already exists")
        self.add_job(job, layers, desired_workers, state=JobState.PENDING)
        self.specs[job] = spec_json
        if lease is not None:
            self.leases[job] = lease[0]
        return self.job_info(job)

    def init_rows(self, job, owner, spec_json, layers) -> bool:
        """The initial rows and the resolved spec, written only by the lease holder, only once."""
        self.calls["init_rows"] += 1
        with self._lock:
            if self.leases.get(self._job(job)) != owner:
                raise TableError(f"job {job}: {owner!r} does not hold the driver lease")
            if self.rows[job]:
                return False
            self._writable(job)
            self.rows[job] = [r.model_copy(update={"gens": r.generations}) for r in layers]
            self.specs[job] = spec_json
            self.events[job] += [("init", r.layer) for r in layers]
            return True

    def job_info(self, job: str) -> JobInfo:
        return JobInfo(
            job=job, state=self.state[self._job(job)], n_layers=len(self.rows[job]), seed_bits=63,
            epoch=self.epoch[job], desired_workers=self.desired[job], created=0.0,
        )  # fmt: skip

    def get_spec(self, job: str) -> str:
        return self.specs[self._job(job)]

    def claim_lease(self, job: str, owner: str) -> None:
        """Simplified: take the lease when nobody holds it."""
        if self.leases.get(self._job(job), owner) != owner:
            raise TableError(f"job {job}: the lease is held by {self.leases[job]}")
        self.leases[job] = owner

    def delete_job(self, job: str, *, owner: str | None = None, unheld: bool = False) -> bool:
        """Forget the job; with ``owner``, only while the lease is its (or nobody's, when ``unheld``)."""
        if job not in self.rows:
            return False
        holder = self.leases.get(job)
        if owner is not None and holder != owner and not (holder is None and unheld):
            return False
        for d in (self.rows, self.epoch, self.state, self.desired, self.progress_, self.events, self.specs):
            d.pop(job, None)
        self.leases.pop(job, None)
        return True

    def release_lease(self, job: str, owner: str, final=None) -> bool:
        if self.leases.get(self._job(job)) != owner:
            return False
        del self.leases[job]
        if final is not None and self.state[job] == JobState.RUNNING:
            self.state[job] = JobState(final)
        return True

    def set_state(self, job: str, state: JobState) -> None:
        self.state[self._job(job)] = JobState(state)

    def set_desired_workers(self, job: str, n: int) -> None:
        self.desired[self._job(job)] = n

    def _job(self, job: str) -> str:
        if job not in self.rows:
            raise JobNotFound(f"job {job!r} is not in the seed table")
        return job

    def _writable(self, job: str) -> None:
        if self.state[self._job(job)] not in (JobState.PENDING, JobState.RUNNING):
            raise TableError(f"job {job!r} is {self.state[job].value}: the table refuses writes")

    def _write(self, job: str, layer: int, kind: str, **update) -> int:
        row = self.rows[job][layer]
        update |= {"version": row.version + 1, "time": time.time()}
        self.rows[job][layer] = row.model_copy(update=update)
        self.epoch[job] += 1
        self.events[job].append((kind, layer))
        return row.version + 1

    # ---- reads -------------------------------------------------------------------------------------
    def snapshot(self, job: str) -> Snapshot:
        self.calls["snapshot"] += 1
        with self._lock:
            return Snapshot(job=job, epoch=self.epoch[self._job(job)], layers=tuple(self.rows[job]))

    def get_state(self, job: str) -> JobState:
        return self.state[self._job(job)]

    def desired_workers(self, job: str) -> int:
        return self.desired[self._job(job)]

    def progress(self, job: str) -> Progress:
        return self.progress_[self._job(job)]

    def get_doc(self, job: str, name: str) -> str | None:
        return self.docs.get((self._job(job), name))

    # ---- writes ------------------------------------------------------------------------------------
    def put_doc(self, job: str, name: str, text: str) -> None:
        self.docs[(self._job(job), name)] = text

    def heartbeat(self, job, role, member, *, ttl: float = 10.0, payload: dict | None = None) -> None:
        self.beats[(self._job(job), role, member)] = dict(payload or {})

    def update_progress(
        self, job, *, evaluations=0, accepted=0, stale=0, not_better=0, evals_per_s=None, workers_live=None
    ) -> None:
        with self._lock:
            p = self.progress_[self._job(job)]
            upd = {
                "evaluations": p.evaluations + evaluations,
                "accepted": p.accepted + accepted,
                "stale": p.stale + stale,
                "not_better": p.not_better + not_better,
            }
            if evals_per_s is not None:
                upd["evals_per_s"] = evals_per_s
            if workers_live is not None:
                upd["workers_live"] = workers_live
            self.progress_[job] = p.model_copy(update=upd)

    def commit_seeds(
        self, job, layer, expected_version, seeds, floats, loss, evaluator_id=""
    ) -> CommitOutcome:
        """Whole-vector commit: accepted iff the row is at ``expected_version`` and ``loss`` is lower."""
        self.calls["commit_seeds"] += 1
        with self._lock:
            self._writable(job)
            row = self.rows[job][layer]
            seeds, floats = tuple(int(s) for s in seeds), tuple(float(f) for f in floats)
            if len(seeds) != len(row.seeds) or len(floats) != len(row.floats):
                raise SpecError(
                    f"seeds: layer {layer} holds {len(row.seeds)} seeds, {len(row.floats)} floats"
                )
            if len(set(seeds[: row.rank])) != row.rank:
                raise SpecError(f"seeds: a component seed is repeated in {seeds[: row.rank]}")
            if row.version != expected_version:
                return CommitOutcome.STALE
            if not (math.isfinite(loss) and loss < row.loss):
                return CommitOutcome.NOT_BETTER
            gens = tuple(g + (a != b) for g, a, b in zip(row.generations, row.seeds, seeds))
            self._write(job, layer, "seeds", seeds=seeds, floats=floats, loss=float(loss), gens=gens)
            return CommitOutcome.ACCEPTED

    def commit_swaps_many(self, job: str, swaps: Sequence[SwapCommit]) -> list[CommitOutcome]:
        """Slot-level commits in order: each judged against its own slot's generation alone."""
        self.calls["commit_swaps_many"] += 1
        out = []
        with self._lock:
            self._writable(job)
            for s in swaps:
                row = self.rows[job][s.layer]
                if not 0 <= s.slot < row.rank:
                    raise SpecError(f"slot: {s.slot} is not a component slot of layer {s.layer}")
                idx = _slot_indices(row.rank, len(row.floats), s.slot)
                if len(s.slot_floats) != len(idx):
                    raise SpecError(f"slot_floats: got {len(s.slot_floats)} values, a slot has {len(idx)}")
                others = row.seeds[: s.slot] + row.seeds[s.slot + 1 : row.rank]
                if row.generations[s.slot] != s.expected_gen:
                    out.append(CommitOutcome.STALE)
                elif not (math.isfinite(s.loss) and s.loss < s.incumbent_loss):
                    out.append(CommitOutcome.NOT_BETTER)
                elif s.seed in others:
                    out.append(CommitOutcome.DUPLICATE)
                else:
                    seeds, floats, gens = list(row.seeds), list(row.floats), list(row.generations)
                    seeds[s.slot] = s.seed
                    gens[s.slot] += 1
                    for i, v in zip(idx, s.slot_floats):
                        floats[i] = float(v)
                    self._write(
                        job, s.layer, "swap", seeds=tuple(seeds), floats=tuple(floats), gens=tuple(gens),
                        loss=float(s.loss),
                    )  # fmt: skip
                    out.append(CommitOutcome.ACCEPTED)
        return out

    def publish_floats(
        self, job, layer, floats, loss, gens, *, writer: str = "trainer", expected_version: int | None = None
    ) -> PublishOutcome:
        """Slot-merging publish: slots swapped since ``gens`` keep the table's floats (listed in ``kept``)."""
        self.calls["publish_floats"] += 1
        with self._lock:
            self._writable(job)
            row = self.rows[job][layer]
            gens = tuple(gens) or (0,) * len(row.seeds)
            stale = gens[row.rank :] != row.generations[row.rank :]
            if stale or (expected_version is not None and expected_version != row.version):
                return PublishOutcome(outcome=CommitOutcome.STALE, version=row.version)
            merged, kept = [float(f) for f in floats], []
            for k in range(row.rank):
                if gens[k] != row.generations[k]:
                    kept.append(k)
                    for i in _slot_indices(row.rank, len(row.floats), k):
                        merged[i] = row.floats[i]
            version = self._write(job, layer, "floats", floats=tuple(merged), loss=float(loss))
            return PublishOutcome(outcome=CommitOutcome.ACCEPTED, kept=tuple(kept), version=version)

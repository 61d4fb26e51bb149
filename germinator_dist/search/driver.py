"""The seed-search driver: keeps every worker busy, tells the proposers, commits fair improvements.

No global barrier: each worker has up to ``in_flight_per_worker`` batches in flight; as each one finishes
the driver checks it was computed against the table's current snapshot (else: dropped, counted stale),
tells the layer's proposer, and offers the best candidate that beat the incumbent *in the same
evaluation* to the table with compare-and-set on the layer's version (docs/layout.md). A lost batch
(dead worker or node) is re-dispatched to another worker; the pool replaces the dead worker when it can.

With ``search.swap`` the driver plans swap calls instead (``search/swap_proposer.py``): each result carries
per slot the best verified swap and the slot's generation it was measured against; the table judges each swap
against its own slot alone (``commit_swaps_many``), so a trainer publish or a swap of another slot does not
make it stale.

The driver talks to an EvaluatorPool (pool.py) and a ``SeedTableLike`` (table_protocol.py: the Redis
``SeedTable``, or the in-memory table of the unit tests), so it imports neither Ray nor Redis.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable

from germinator_dist.config import JobSpec
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState, Snapshot, SwapCommit
from germinator_dist.search.pool import Completion, EvaluatorPool, Task
from germinator_dist.search.progress_report import DriverStats, ProgressReporter, ReportFigures
from germinator_dist.search.proposers import make_proposer, proposer_fields
from germinator_dist.search.swap_proposer import SwapProposer, component_norms
from germinator_dist.table_protocol import SeedTableLike

log = logging.getLogger("germinator.driver")
MAX_ATTEMPTS = 3  # a batch lost this many times is dropped (its candidates are discarded)
AUTO_FIRST_CALL = 8  # candidates_per_call "auto": the size of a worker's calls until one has come back


class SearchDriver:
    """Runs one job's seed search until its budget ends or the job is cancelled."""

    def __init__(
        self,
        table: SeedTableLike,
        job: str,
        spec: JobSpec,
        pool: EvaluatorPool,
        driver_id: str | None = None,
        progress_interval: float = 0.5,
        on_report: Callable[[ReportFigures], None] | None = None,
    ) -> None:
        self.table, self.job, self.spec, self.pool = table, job, spec, pool
        self.id = driver_id or f"driver-{socket.gethostname()}-{os.getpid()}"
        self.progress_interval = progress_interval
        self._task_ids = itertools.count()
        self._redispatch: deque[Task] = deque()
        self._lost_ids: set[str] = set()
        self._call_size: dict[str, int] = {}  # worker -> candidates in its next call ("auto" sizing)
        self._outstanding = 0  # candidates dispatched (or queued for re-dispatch) and not yet evaluated
        snap = table.snapshot(job)
        self._snap, self._desired = snap, 0  # the latest snapshot and desired count, for reports
        n = len(snap.layers)
        self.layers = list(spec.search.layers) if spec.search.layers is not None else list(range(n))
        self.proposers = {k: self._make_proposer(k, snap) for k in self.layers}
        self.swappers = self._make_swappers(snap) if spec.search.swap is not None else {}
        # counters, progress and heartbeats (called with ReportFigures at every report: ``on_report``)
        self.reporter = ProgressReporter(
            table, job, pool, driver_id=self.id, interval=progress_interval, call_size=self.call_size,
            swap_figures=bool(self.swappers), on_report=on_report,
        )  # fmt: skip
        self.stats = self.reporter.stats  # this run's counters
        self._busy_slots: dict[int, set[int]] = {k: set() for k in self.swappers}  # slots with a call out
        self._rr = itertools.cycle(self.layers)
        self._layer = next(self._rr)
        self._calls_on_layer = 0

    # ---- proposers ----------------------------------------------------------------------------------
    def _make_proposer(self, k: int, snap: Snapshot):
        entry = snap.layers[k]
        fields = proposer_fields(self.spec, entry.seeds)
        prop = make_proposer(self.spec.search.proposer, incumbent_loss=entry.loss, **fields)
        saved = self._load_state(k)
        if saved is not None:
            try:
                prop.load_state_dict(saved)
            except Exception as exc:  # noqa: BLE001 - a stale/foreign state: rebuild from the table
                log.warning("layer %d: proposer state not restored (%s); rebuilt from the table", k, exc)
        prop.set_incumbent(entry.seeds, entry.loss)
        return prop

    def _make_swappers(self, snap: Snapshot) -> dict[int, SwapProposer]:
        """One swap proposer per searched layer, restored from its saved state where one fits."""
        model = build_model(self.spec.model)  # the resolved spec: only to generate component norms
        out = {}
        for k in self.layers:
            layer = model.layers[k]
            sw = SwapProposer(
                self.spec.search.swap, k, layer.rank, layer.seed_bits, self.spec.search.rng_seed,
                norm=component_norms(layer),
            )  # fmt: skip
            saved = self._load_state(k, "swap")
            if saved is not None:
                try:
                    sw.load_state_dict(saved)
                except SpecError as exc:
                    log.warning("layer %d: swap proposer state not restored (%s)", k, exc)
            out[k] = sw
        return out

    def _load_state(self, k: int, kind: str = "proposer"):
        raw = self.table.get_doc(self.job, f"{kind}:{k}")
        return None if raw is None else json.loads(raw)

    def save_proposer_states(self) -> None:
        for k, prop in self.proposers.items():
            self.table.put_doc(self.job, f"proposer:{k}", json.dumps(prop.state_dict()))
        for k, sw in self.swappers.items():
            self.table.put_doc(self.job, f"swap:{k}", json.dumps(sw.state_dict()))

    # ---- scheduling ---------------------------------------------------------------------------------
    def _next_layer(self) -> int:
        s = self.spec.search
        if s.schedule == "all":
            return next(self._rr)
        if self._calls_on_layer >= s.calls_per_layer:
            self._layer, self._calls_on_layer = next(self._rr), 0
        self._calls_on_layer += 1
        return self._layer

    def call_size(self, worker: str) -> int:
        """Candidates in ``worker``'s next call: the spec's number, or with "auto" the worker's own size."""
        n = self.spec.search.candidates_per_call
        return self._call_size.get(worker, AUTO_FIRST_CALL) if n == "auto" else n

    def _resize_calls(self, worker: str, n: int, seconds: float) -> None:
        """After ``worker`` took ``seconds`` for a call of ``n`` candidates: size its next calls to take about
        ``call_seconds``, at most halving or doubling per result (one slow call, e.g. a first compile, does
        not shrink it to nothing), within [1, max_candidates_per_call]."""
        s = self.spec.search
        if s.candidates_per_call != "auto" or n < 1:
            return
        size = self._call_size.get(worker, AUTO_FIRST_CALL)
        want = n * s.call_seconds / max(seconds, 1e-6)
        size = min(max(want, size / 2), size * 2)
        self._call_size[worker] = int(max(1, min(s.max_candidates_per_call, round(size))))

    def _new_task(self, snap: Snapshot, size: int) -> Task | None:
        for _ in range(len(self.layers)):
            k = self._next_layer()
            cands = self.proposers[k].ask(size)
            if cands:
                s = self.spec.search
                return Task(next(self._task_ids), k, tuple(cands), snap, s.refit_steps, s.refit_lr)
        return None  # every proposer is exhausted

    def _new_swap_tasks(self, snap: Snapshot, sizes: list[int]) -> list[Task | None]:
        """A swap call per requested size (candidates it may consider), layer by layer in schedule order
        (None where every layer's slots are exhausted)."""
        tasks: list[Task | None] = []
        for size in sizes:
            task = None
            for _ in range(len(self.layers)):
                k = self._next_layer()
                swap = self.swappers[k].ask(snap.layers[k], limit=size, busy=self._busy_slots[k])
                if swap is not None:
                    self._busy_slots[k].update(st.slot for st in swap.slots)
                    bits = self.spec.model.seed_bits
                    task = Task(next(self._task_ids), k, (), snap, swap=swap, seed_bits=bits)
                    break
            tasks.append(task)
        return tasks

    def _new_tasks(self, snap: Snapshot, sizes: list[int]) -> list[Task | None]:
        """A task per requested size, in schedule order (None where proposers ran dry), asking each layer's
        proposer once for all of its tasks (one ask of many candidates costs far less than many asks of a
        few). All None when every proposer is exhausted."""
        s = self.spec.search
        per_layer: dict[int, list[int]] = {}  # layer -> the slots (indices into sizes) it serves
        for i in range(len(sizes)):
            per_layer.setdefault(self._next_layer(), []).append(i)
        tasks: list[Task | None] = [None] * len(sizes)
        for k, slots in per_layer.items():
            cands = self.proposers[k].ask(sum(sizes[i] for i in slots))
            pos = 0
            for i in slots:
                batch = tuple(cands[pos : pos + sizes[i]])
                pos += sizes[i]
                if batch:
                    tasks[i] = Task(next(self._task_ids), k, batch, snap, s.refit_steps, s.refit_lr)
        if sizes and not any(tasks):  # the scheduled layers are exhausted: try every layer
            tasks[0] = self._new_task(snap, sizes[0])
        return tasks

    def _dispatch(self, live: list[str], snap: Snapshot, searching: bool, budget: int | None = None) -> bool:
        """Fill every live worker up to ``in_flight_per_worker``: lost batches first, then new tasks of at
        most ``budget`` candidates in all (what budget_evals leaves after the work done and outstanding,
        so that big calls do not overshoot it). Returns False when new tasks were wanted and every
        proposer is exhausted."""
        free = []  # one entry per free slot, worker by worker
        for w in live:
            free += [w] * max(0, self.spec.search.in_flight_per_worker - self.pool.in_flight(w))
        while free and self._redispatch:
            self.pool.submit(free.pop(0), self._redispatch.popleft())
        if not searching or not free:
            return True
        sizes = []
        for w in free:
            want = next(iter(self.swappers.values())).call_size() if self.swappers else self.call_size(w)
            n = want if budget is None else min(want, budget)
            if n < 1:
                break
            sizes.append(n)
            budget = None if budget is None else budget - n
        if not sizes:
            return True
        tasks = self._new_swap_tasks(snap, sizes) if self.swappers else self._new_tasks(snap, sizes)
        for w, task in zip(free, tasks):
            if task is not None:
                self.pool.submit(w, task)
                self._outstanding += task.size
        return any(tasks)

    # ---- results ------------------------------------------------------------------------------------
    def _handle(self, done: Completion, snap: Snapshot) -> Snapshot:
        task = done.task
        if done.result is None:  # lost with its worker: re-dispatch the same candidates
            if done.worker_lost and done.worker not in self._lost_ids:
                self._lost_ids.add(done.worker)
                self.stats.lost_workers += 1
            if task.attempts + 1 < MAX_ATTEMPTS:
                task.attempts += 1
                self._redispatch.append(task)
                self.stats.redispatched += 1
            else:
                self._outstanding -= task.size
                for c in task.candidates:
                    self.proposers[task.layer].discard(c)
                if task.swap is not None:  # its ranges were never screened: hand them out again
                    self.swappers[task.layer].give_back(task.swap)
                    self._busy_slots[task.layer].difference_update(st.slot for st in task.swap.slots)
            log.warning("batch %d on %s failed: %s", task.id, done.worker, done.error)
            return snap
        if task.swap is not None:
            return self._handle_swaps(done, snap)
        res = done.result
        n = len(res.losses)
        self._outstanding -= len(task.candidates)
        self.reporter.count(evaluations=n)
        self._resize_calls(done.worker, n, res.seconds)
        prop = self.proposers[task.layer]
        versions = tuple(res.versions)
        # Versions only grow: a result older than the snapshot in hand is stale without asking the table;
        # only one that may be newer (another driver or the trainer moved the table) needs a fresh read.
        if versions != snap.versions and not any(r < s for r, s in zip(versions, snap.versions)):
            snap = self.table.snapshot(self.job)
        if versions != snap.versions:  # computed against a stale snapshot: drop and count
            self.reporter.count(stale=1)
            for c in task.candidates:
                prop.discard(c)
            self._sync_incumbents(snap)
            return snap
        entry = snap.layers[task.layer]
        # Losses of different evaluations are comparable only as differences to their incumbent; tell
        # the proposer each candidate's margin over the incumbent, on the table's loss scale.
        offset = entry.loss - res.incumbent_loss if math.isfinite(entry.loss) else 0.0
        if tuple(prop.incumbent[0]) != tuple(entry.seeds):
            prop.set_incumbent(entry.seeds, entry.loss)
        prop.tell_many((c, loss + offset) for c, loss in zip(task.candidates, res.losses))
        best = min(range(n), key=lambda i: res.losses[i])
        if not res.losses[best] < res.incumbent_loss:
            return snap
        try:
            outcome = self.table.commit_seeds(
                self.job,
                task.layer,
                entry.version,
                task.candidates[best].seeds,
                res.floats[best],
                res.losses[best],
                f"{self.id}/{res.worker}",
            )
        except TableError:
            if self.table.get_state(self.job) == JobState.RUNNING:
                raise
            return snap  # the job was cancelled meanwhile: the table refuses writes; the loop stops

        if outcome == CommitOutcome.ACCEPTED:
            self.stats.accepted += 1
            self.table.update_progress(self.job, accepted=1)  # at once: the stream is the truth, keep close
            snap = self.table.snapshot(self.job)
            prop.set_incumbent(snap.layers[task.layer].seeds, snap.layers[task.layer].loss)
            return snap
        self.reporter.count(
            stale=int(outcome == CommitOutcome.STALE), not_better=int(outcome == CommitOutcome.NOT_BETTER)
        )
        return self.table.snapshot(self.job)

    def _handle_swaps(self, done: Completion, snap: Snapshot) -> Snapshot:
        """Commit every slot's verified swap (each judged by the table against its own slot's generation),
        tell the layer's swap proposer what was accepted."""
        task, res = done.task, done.result
        self._busy_slots[task.layer].difference_update(st.slot for st in task.swap.slots)
        self._outstanding -= task.size
        self.reporter.count(evaluations=task.size)  # the candidates the call considered (the budget's unit)
        self.stats.screened += sum(sw.screened for sw in res.swaps)
        found = [sw for sw in res.swaps if sw.seed is not None and sw.loss < res.incumbent_loss]
        # A swap's rank scalar was fitted with the layer's other components as its snapshot held them. Once
        # another swap of the layer is accepted (calls on one layer run side by side), both steps together
        # overshoot: calls against one snapshot screen by the same gradient and pick aligned components,
        # and with several workers the loss diverged. So a result is dropped here, and counted stale, when
        # any seed of its layer changed since its snapshot, though the table, which judges a swap by its
        # own slot alone, would take it. The driver is the job's only swap writer (the lease), so its
        # latest snapshot holds every swap accepted since; the trainer's publishes change no seed.
        stale_layer = task.snapshot.layers[task.layer].generations != snap.layers[task.layer].generations
        if stale_layer and found:
            self.reporter.count(stale=len(found))
            self.swappers[task.layer].tell(res, [False] * len(res.swaps), stale=True)
            return snap
        commits = [
            SwapCommit(
                layer=task.layer,
                slot=sw.slot,
                expected_gen=sw.slot_gen,
                seed=sw.seed,
                slot_floats=sw.slot_floats,
                loss=sw.loss,
                incumbent_loss=res.incumbent_loss,
                evaluator_id=f"{self.id}/{res.worker}",
            )
            for sw in found
        ]
        outcomes: dict[int, CommitOutcome] = {}
        if commits:
            try:
                got = self.table.commit_swaps_many(self.job, commits)
            except (TableError, SpecError):
                if self.table.get_state(self.job) == JobState.RUNNING:
                    raise
                return snap  # the job was cancelled meanwhile: the table refuses writes; the loop stops
            outcomes = {c.slot: CommitOutcome(o) for c, o in zip(commits, got)}
        accepted = [outcomes.get(sw.slot) == CommitOutcome.ACCEPTED for sw in res.swaps]
        self.swappers[task.layer].tell(res, accepted)
        n_ok = sum(accepted)
        if n_ok:
            self.stats.accepted += n_ok
            self.stats.swaps += n_ok
            self.stats.swap_gain += sum(
                res.incumbent_loss - sw.loss for sw, ok in zip(res.swaps, accepted) if ok
            )
            self.table.update_progress(self.job, accepted=n_ok)
        stale = sum(o == CommitOutcome.STALE for o in outcomes.values())
        self.reporter.count(stale=stale, not_better=len(outcomes) - n_ok - stale)
        # the next calls are planned on the table as it is now: the trainer moves the floats all the time,
        # and a call's gradient and line search should see them
        return self.table.snapshot(self.job)

    def _sync_incumbents(self, snap: Snapshot) -> None:
        for k, prop in self.proposers.items():
            e = snap.layers[k]
            if tuple(prop.incumbent[0]) != tuple(e.seeds):
                prop.set_incumbent(e.seeds, e.loss)

    # ---- main loop ----------------------------------------------------------------------------------
    def _budget_left(self, base_evals: int, t0: float) -> bool:
        s = self.spec.search
        if s.budget_evals is not None and base_evals + self.stats.evaluations >= s.budget_evals:
            return False
        return s.budget_seconds is None or time.monotonic() - t0 < s.budget_seconds

    def _report(self, *, final: bool = False) -> None:
        self.reporter.report(desired=self._desired, best_loss=best_loss(self._snap), final=final)

    def run(self) -> DriverStats:
        """Search until the budget ends or the job leaves RUNNING. Returns the run's counters."""
        t0 = time.monotonic()
        base_evals = self.table.progress(self.job).evaluations  # resume: the budget counts earlier work
        last_report = last_save = last_check = 0.0
        snap = self.table.snapshot(self.job)
        desired = self._desired = self.table.desired_workers(self.job)
        exhausted = False
        self.reporter.start()
        try:
            while True:
                now = time.monotonic()
                if now - last_check > 0.5:
                    last_check = now
                    if self.table.get_state(self.job) != JobState.RUNNING:
                        break
                    desired = self._desired = self.table.desired_workers(self.job)
                    self.pool.resize(desired)
                searching = self._budget_left(base_evals, t0) and not exhausted
                status = self.pool.status()
                cap = self.spec.search.budget_evals
                left = None if cap is None else cap - base_evals - self.stats.evaluations - self._outstanding
                if not self._dispatch(status.live, snap, searching, left):
                    # swap mode: an accepted swap in flight reopens its slot, so only an idle search ends
                    in_flight = any(self.pool.in_flight(w) for w in status.live) or self._redispatch
                    exhausted = not (self.swappers and in_flight)
                busy = any(self.pool.in_flight(w) for w in status.live) or self._redispatch
                if not searching and not busy:
                    break
                for done in self.pool.poll(timeout=0.2):
                    snap = self._handle(done, snap)
                self._snap = snap
                if time.monotonic() - last_report > self.progress_interval:
                    last_report = time.monotonic()
                    self._report()
                if time.monotonic() - last_save > 5.0:
                    last_save = time.monotonic()
                    self.save_proposer_states()
        finally:
            self.stats.seconds = time.monotonic() - t0
            try:
                self._report(final=True)
                self.save_proposer_states()
            except Exception as exc:  # noqa: BLE001 - the table may be the thing that failed
                log.warning("final progress report failed: %s", exc)
            finally:
                self.reporter.close()
        return self.stats


def best_loss(snap: Snapshot) -> float:
    return min((e.loss for e in snap.layers), default=math.inf)

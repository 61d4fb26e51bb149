"""The search driver's own logic on an in-memory table (memory_table.py) and evaluators on threads of this
process: stale results dropped and counted, the budget never overshot, a lost batch re-dispatched, the
worker count following the desired count, proposer state saved and restored. The Redis-backed runs of the
same driver are in tests/integration."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
from memory_table import MemoryTable

from germinator_dist.config import parse_job_spec
from germinator_dist.core.model import build_model
from germinator_dist.records import CommitOutcome, JobState, LayerEntry
from germinator_dist.search.driver import SearchDriver
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.job_setup import fitness_batch, resolve_job
from germinator_dist.search.pool import Completion, LocalPool

JOB = "unit-job"


def make_job(table: MemoryTable, *, budget: int, swap: bool = False, workers: int = 1, **search):
    """A tiny digits MLP job in ``table`` at its initial model; returns the resolved spec and the batch."""
    spec = parse_job_spec(
        {
            "job": JOB,
            "mode": "search",
            "model": {"hidden": [16], "rank": 4, "seed_bits": 16},
            "fitness": {"batch_size": 128},
            "search": {
                "budget_evals": budget,
                "swap": {"candidates": 256, "top_k": 2} if swap else None,
                "calls_per_layer": 1,
                **({} if swap else {"candidates_per_call": 8}),
                **search,
            },
            "workers": {"count": workers, "min": 0, "max": 4},
        }
    )
    spec, dataset = resolve_job(spec)
    batch = fitness_batch(spec, dataset)
    model = build_model(spec.model)
    ev = LayerEvaluator(spec.model, batch)
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(0,) * len(model.layers))
    loss = ev.full_loss()
    rows = [
        LayerEntry(layer=k, seeds=s, floats=f, loss=loss, writer="init")
        for k, (s, f) in enumerate(zip(model.get_seeds(), model.get_floats()))
    ]
    table.add_job(JOB, rows, desired=workers)
    return spec, batch


class RecordingPool(LocalPool):
    """A LocalPool that records the sizes it was resized to, and can lose the first ``lose`` results (as
    if their worker died: the completion carries no result and the worker is gone)."""

    def __init__(self, make_evaluator, lose: int = 0, on_submit=None) -> None:
        super().__init__(make_evaluator)
        self.sizes: list[int] = []
        self.live_seen: list[int] = []
        self.lose, self.on_submit = lose, on_submit
        self.served: set[str] = set()  # workers whose results reached the driver

    def resize(self, n: int) -> None:
        self.sizes.append(n)
        super().resize(n)
        self.live_seen.append(len(self.status().live))

    def submit(self, worker, task) -> None:
        if self.on_submit is not None:
            self.on_submit(task)
        super().submit(worker, task)

    def poll(self, timeout: float) -> list[Completion]:
        out = []
        for c in super().poll(timeout):
            if self.lose > 0 and c.result is not None:
                self.lose -= 1
                if c.worker in self._workers:  # the worker is gone; the driver's resize starts another
                    self._retiring.add(c.worker)
                    self._reap()
                c = Completion(c.task, c.worker, error="ActorDiedError: node lost", worker_lost=True)
            elif c.result is not None:
                self.served.add(c.worker)
            out.append(c)
        return out


def run(table, spec, batch, pool_factory=RecordingPool, **pool_kw):
    pool = pool_factory(lambda wid: LayerEvaluator(spec.model, batch, worker_id=wid), **pool_kw)
    driver = SearchDriver(table, JOB, spec, pool, driver_id="unit", progress_interval=0.05)
    try:
        return driver.run(), driver, pool
    finally:
        pool.shutdown()


def test_budget_is_never_overshot_and_the_table_counts_every_evaluation():
    table = MemoryTable()
    spec, batch = make_job(table, budget=200, workers=2)
    stats, _, _ = run(table, spec, batch)
    assert stats.evaluations == 200  # calls are cut to the budget left, in-flight calls included
    assert table.progress(JOB).evaluations == 200
    assert table.progress(JOB).accepted == stats.accepted == sum(k == "seeds" for k, _ in table.events[JOB])


def test_stale_results_are_dropped_counted_and_never_committed():
    table = MemoryTable()
    spec, batch = make_job(table, budget=120)
    bumps = {"n": 0}

    def trainer_publishes(task):  # the trainer moves the task's layer before its result comes back
        if bumps["n"] < 5:
            bumps["n"] += 1
            row = table.snapshot(JOB).layers[task.layer]
            out = table.publish_floats(JOB, task.layer, row.floats, row.loss, row.generations)
            assert out.outcome == CommitOutcome.ACCEPTED

    stats, _, _ = run(table, spec, batch, on_submit=trainer_publishes)
    assert stats.stale >= 5
    assert table.progress(JOB).stale == stats.stale
    # a stale result never reaches the table: only fresh ones were offered for commit
    assert table.calls["commit_seeds"] <= stats.evaluations / spec.search.candidates_per_call - 5


def test_a_lost_batch_is_redispatched_and_its_candidates_still_count():
    table = MemoryTable()
    spec, batch = make_job(table, budget=80)
    stats, _, pool = run(table, spec, batch, lose=2)
    assert stats.redispatched == 2 and 1 <= stats.lost_workers <= 2
    assert stats.evaluations == 80  # the lost calls ran again elsewhere: the budget is still spent
    assert "local-0" not in pool.served and pool.served  # a replacement worker did the work


def test_the_worker_count_follows_the_desired_count():
    table = MemoryTable()
    spec, batch = make_job(table, budget=10**6, workers=1)
    changes = [(0.6, 3), (1.6, 1), (2.6, None)]  # (seconds, desired count or None: cancel)

    def scripted():
        t0 = time.monotonic()
        for at, n in changes:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            if n is None:
                table.set_state(JOB, JobState.CANCELLED)
            else:
                table.set_desired_workers(JOB, n)

    th = threading.Thread(target=scripted, daemon=True)
    th.start()
    stats, _, pool = run(table, spec, batch)
    th.join(5)
    assert 3 in pool.sizes and pool.sizes.index(3) < len(pool.sizes) - 1
    assert max(pool.live_seen) == 3  # three workers ran at once
    after = pool.sizes[pool.sizes.index(3) :]
    assert 1 in after and pool.live_seen[-1] == 1  # and the count went back down to one
    assert stats.evaluations > 0 and table.get_state(JOB) == JobState.CANCELLED


@pytest.mark.parametrize("swap", [False, True])
def test_proposer_state_is_saved_and_restored(swap):
    table = MemoryTable()
    spec, batch = make_job(table, budget=600 if swap else 120, swap=swap)
    _, first, _ = run(table, spec, batch)
    kind = "swap" if swap else "proposer"
    saved = {k: json.loads(table.get_doc(JOB, f"{kind}:{k}")) for k in first.layers}
    pool = RecordingPool(lambda wid: LayerEvaluator(spec.model, batch, worker_id=wid))
    again = SearchDriver(table, JOB, spec, pool, driver_id="unit-2")
    pool.shutdown()
    for k in first.layers:
        restored = (again.swappers if swap else again.proposers)[k].state_dict()
        if swap:
            assert restored == saved[k]  # the slot cursors: no range is screened twice
            continue
        # the population and the proposer's counters; re-registering the table's incumbent may renumber it
        skip = {"members": None, "next_seq": None}
        assert {**restored, **skip} == {**saved[k], **skip}
        assert [m[:2] for m in restored["members"]] == [m[:2] for m in saved[k]["members"]]
        assert saved[k]["next_seq"] <= restored["next_seq"] <= saved[k]["next_seq"] + 1
    if swap:
        assert sum(s["screened"] for s in saved.values()) > 0
        assert all(math.isfinite(e.loss) for e in table.snapshot(JOB).layers)


def test_side_by_side_swaps_of_one_layer_never_overshoot():
    """Calls on one layer against one snapshot screen by the same gradient; if each accepted swap kept its
    own full step the loss would diverge. Only a result whose layer is unchanged since its snapshot is
    committed, so every accepted swap was verified against the seeds it joined."""
    table = MemoryTable()
    spec, batch = make_job(table, budget=40 * 256, swap=True, workers=2, in_flight_per_worker=2)
    start = table.snapshot(JOB)
    stats, _, _ = run(table, spec, batch)
    end = table.snapshot(JOB)
    ev = LayerEvaluator(spec.model, batch)
    ev.load_snapshot(start.seeds(), start.floats(), start.versions)
    loss0 = ev.full_loss()
    ev.load_snapshot(end.seeds(), end.floats(), end.versions)
    assert stats.swaps >= 3
    assert ev.full_loss() < loss0  # the swaps together lowered the true loss
    # every accepted swap changed one slot's generation by one, from a state its call was planned on
    per_layer = [sum(e.generations) - sum(s.generations) for s, e in zip(start.layers, end.layers)]
    assert sum(per_layer) == stats.swaps
    assert stats.stale > 0  # side-by-side calls on a layer did happen and were dropped

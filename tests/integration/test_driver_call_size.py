"""The driver's call sizing against a real Redis table and real evaluators (threads of this process):
``candidates_per_call: auto`` sizes each worker's calls from its measured seconds per candidate, a number
keeps every call at that size, and no call takes more than budget_evals leaves."""

from __future__ import annotations

import pytest

from germinator_dist.config import parse_job_spec
from germinator_dist.records import JobState
from germinator_dist.search.driver import AUTO_FIRST_CALL, SearchDriver
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.job_setup import create_job, fitness_batch
from germinator_dist.search.pool import LocalPool


class RecordingPool:
    """A LocalPool that remembers the size of every call it was given (the real evaluation runs)."""

    def __init__(self, pool: LocalPool) -> None:
        self.pool, self.sizes = pool, []

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def submit(self, worker, task) -> None:
        self.sizes.append(len(task.candidates))
        self.pool.submit(worker, task)


def run_search(table, job_id, **search) -> tuple[list[int], object, SearchDriver]:
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "search",
            "model": {"hidden": [32], "rank": 4, "seed_bits": 16},
            "fitness": {"batch_size": 256},
            "search": {"refit_steps": 0, "layers": [0], "swap": None, **search},
            "workers": {"count": 1, "min": 0, "max": 2},
        }
    )
    spec, dataset = create_job(table, spec)
    batch = fitness_batch(spec, dataset)
    pool = RecordingPool(LocalPool(lambda wid: LayerEvaluator(spec.model, batch, worker_id=wid)))
    table.set_state(job_id, JobState.RUNNING)
    driver = SearchDriver(table, job_id, spec, pool, driver_id="test")
    try:
        stats = driver.run()
    finally:
        pool.shutdown()
    return pool.sizes, stats, driver


def test_auto_grows_a_fast_workers_calls_up_to_the_cap(table, job_id):
    # a candidate of this small model takes well under a millisecond: 0.05 s calls would be ~100 or more
    sizes, stats, _ = run_search(
        table, job_id, budget_evals=1500, call_seconds=0.05, max_candidates_per_call=48
    )
    assert sizes[0] == AUTO_FIRST_CALL
    assert max(sizes) == 48 and sizes.count(48) >= 3  # grew to the cap and stayed there
    assert all(1 <= n <= 48 for n in sizes)
    assert stats.evaluations == 1500 == table.progress(job_id).evaluations  # calls are cut to the budget


def test_auto_shrinks_calls_that_take_longer_than_the_target(table, job_id):
    sizes, stats, driver = run_search(table, job_id, budget_evals=120, call_seconds=1e-5)
    assert sizes[0] == AUTO_FIRST_CALL
    assert sizes[-4:] == [1, 1, 1, 1]  # a candidate takes far more than 10 us: one per call
    assert all(b <= a for a, b in zip(sizes[2:], sizes[3:]))  # only ever shrinks (halving per result)
    assert driver.call_size(next(iter(driver._call_size))) == 1


@pytest.mark.parametrize("fixed", [1, 5])
def test_a_number_keeps_every_call_at_that_size(table, job_id, fixed):
    sizes, stats, _ = run_search(table, job_id, budget_evals=60, candidates_per_call=fixed, call_seconds=1e-5)
    assert sizes and set(sizes) == {fixed}
    assert stats.evaluations == 60


def test_big_calls_are_cut_to_what_the_budget_leaves(table, job_id):
    # with a long target the calls would grow past the whole budget: the driver dispatches only what
    # budget_evals leaves after the work done and in flight, so the search stops at the budget exactly
    sizes, stats, _ = run_search(table, job_id, budget_evals=100, call_seconds=10.0)
    assert stats.evaluations == 100 == sum(sizes)
    assert sizes[:2] == [AUTO_FIRST_CALL, AUTO_FIRST_CALL] and max(sizes) > AUTO_FIRST_CALL

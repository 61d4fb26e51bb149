"""The driver in swap mode against a real Redis table and real evaluators (threads of this process): swaps
of component slots are screened, verified and committed slot by slot; the table's generations, stream and
saved proposer state follow, and a resumed driver does not screen a range again."""

from __future__ import annotations

import json

from germinator_dist.config import parse_job_spec
from germinator_dist.records import JobState
from germinator_dist.search.driver import SearchDriver
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.job_setup import create_job, fitness_batch
from germinator_dist.search.pool import LocalPool


def make(table, job_id, budget):
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "search",
            "model": {"hidden": [32], "rank": 6, "seed_bits": 16},
            "fitness": {"batch_size": 256},
            "search": {
                "budget_evals": budget,
                "swap": {"candidates": 512, "top_k": 2},
                "calls_per_layer": 1,
            },
            "workers": {"count": 1, "min": 0, "max": 2},
        }
    )
    return create_job(table, spec)


def run(table, job_id, spec, dataset):
    batch = fitness_batch(spec, dataset)
    pool = LocalPool(lambda wid: LayerEvaluator(spec.model, batch, worker_id=wid))
    driver = SearchDriver(table, job_id, spec, pool, driver_id="test")
    try:
        return driver.run(), driver
    finally:
        pool.shutdown()


def test_swaps_are_committed_slot_by_slot_and_resume_continues(table, job_id):
    spec, dataset = make(table, job_id, budget=6000)
    before = table.snapshot(job_id)
    table.set_state(job_id, JobState.RUNNING)
    stats, driver = run(table, job_id, spec, dataset)
    after = table.snapshot(job_id)
    assert stats.swaps >= 1 and stats.screened > 0 and stats.swap_gain > 0
    assert stats.evaluations >= 6000 * 0.9
    swaps = [e for e in table.events(job_id) if e.kind == "swap"]
    assert len(swaps) == stats.swaps == after.epoch - before.epoch
    for b, a in zip(before.layers, after.layers):
        changed = [k for k in range(a.rank) if a.seeds[k] != b.seeds[k]]
        assert all(a.generations[k] >= 1 for k in changed)
        assert a.seeds[a.rank :] == b.seeds[b.rank :]  # the layer seeds are never swapped
        assert len(set(a.seeds[: a.rank])) == a.rank  # no duplicate component
        assert a.floats[:2] == b.floats[:2]  # alpha and beta stay as they were
    assert after.layers[0].loss < before.layers[0].loss or after.layers[1].loss < before.layers[1].loss
    saved = json.loads(table.get_doc(job_id, "swap:0"))
    assert saved["screened"] > 0
    # a resumed driver restores the swap proposer: its cursors continue, nothing is handed out twice
    _, again = run(table, job_id, spec.model_copy(), dataset)
    assert again.swappers[0].screened >= saved["screened"]

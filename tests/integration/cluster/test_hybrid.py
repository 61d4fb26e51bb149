"""Hybrid mode on real Ray and Redis: the seed search and the scale trainer run at once and meet only in
the table; neither side's accepted work is silently overwritten by the other."""

from __future__ import annotations

import threading

from germinator_dist.config import parse_job_spec
from germinator_dist.distributed.runner import run_job
from germinator_dist.records import JobState
from germinator_dist.search.job_setup import create_job


def test_hybrid_search_and_trainer_share_the_table(ray_cluster, table, job_id):
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "hybrid",
            # a small rank and a slow trainer keep seed choice decisive for the whole run, so both sides
            # keep finding improvements (with a fast trainer the search stops winning once the floats
            # co-adapt to the seeds: see docs/learning.md)
            "model": {"hidden": [64], "rank": 4, "seed_bits": 8},
            "fitness": {"batch_size": 512},
            "search": {"budget_evals": 600, "candidates_per_call": 8, "refit_steps": 0, "swap": None},
            "trainer": {"optimizer": "adopt", "lr": 0.001, "steps_per_publish": 10},
            "workers": {"count": 1},
        }
    )
    create_job(table, spec)
    initial = table.snapshot(job_id)
    out = {}
    th = threading.Thread(target=lambda: out.update(state=run_job(table, job_id, progress_interval=0.2)))
    th.start()
    th.join(300)
    assert not th.is_alive() and out.get("state") == JobState.SUCCEEDED, out
    events = [e for e in table.events(job_id) if e.kind in ("seeds", "floats")]
    kinds = {e.kind for e in events}
    assert kinds == {"seeds", "floats"}, f"both sides must have written: {kinds}"
    # Every write was a compare-and-set on the version its writer read: per layer the versions are
    # consecutive, so no write replaced another one it had not seen.
    last = {k: (0, e.loss) for k, e in enumerate(initial.layers)}
    for e in events:
        version, loss = last[e.layer]
        assert e.version == version + 1
        if e.kind == "seeds":  # a seed commit must beat what the table held, whoever wrote it
            assert e.loss < loss
        last[e.layer] = (e.version, e.loss)
    snap = table.snapshot(job_id)
    assert [e.version for e in snap.layers] == [last[k][0] for k in range(len(snap.layers))]
    assert max(e.loss for e in snap.layers) < min(e.loss for e in initial.layers)
    progress = table.progress(job_id)
    assert progress.accepted == sum(1 for e in events if e.kind == "seeds")


def test_a_hybrid_trainer_with_a_budget_of_its_own_runs_it_out():
    from germinator_dist.distributed.runner import stop_trainer_with_search

    assert stop_trainer_with_search(parse_job_spec({"mode": "hybrid"}))  # no budget: ends with the search
    assert not stop_trainer_with_search(parse_job_spec({"mode": "hybrid", "trainer": {"budget_s": 5}}))
    assert not stop_trainer_with_search(parse_job_spec({"mode": "hybrid", "trainer": {"total_steps": 5}}))
    assert not stop_trainer_with_search(parse_job_spec({"mode": "train", "trainer": {"budget_s": 5}}))


def test_hybrid_swaps_and_trainer_merge_slot_by_slot(ray_cluster, table, job_id):
    """The swap search beside the trainer: swaps and float publishes both land, each accepted change is in
    the stream once, the table equals its stream replayed, and the layer seeds are never swapped."""
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "hybrid",
            "model": {"hidden": [64], "rank": 8, "seed_bits": 16},
            "fitness": {"batch_size": 512, "split": "validation"},
            "search": {"budget_evals": 30000, "swap": {"candidates": 512, "top_k": 2}},
            "trainer": {"optimizer": "adam", "lr": 0.01, "steps_per_publish": 10},
            "workers": {"count": 1},
        }
    )
    create_job(table, spec)
    initial = table.snapshot(job_id)
    out = {}
    th = threading.Thread(target=lambda: out.update(state=run_job(table, job_id, progress_interval=0.2)))
    th.start()
    th.join(300)
    assert not th.is_alive() and out.get("state") == JobState.SUCCEEDED, out
    events = table.events(job_id)
    swaps = [e for e in events if e.kind == "swap"]
    publishes = [e for e in events if e.kind == "floats"]
    assert swaps and publishes, {e.kind for e in events}
    snap = table.snapshot(job_id)
    assert snap.epoch == len(events) - len(initial.layers)  # every accepted change is one stream entry
    rebuilt = table.rebuild_from_stream(job_id)  # raises naming the first difference, if any
    assert [(e.seeds, e.floats, e.generations) for e in rebuilt.layers] == [
        (e.seeds, e.floats, e.generations) for e in snap.layers
    ]
    assert table.progress(job_id).accepted == len(swaps)
    for a, b in zip(initial.layers, snap.layers):
        assert a.seeds[a.rank :] == b.seeds[b.rank :]  # mask, scale, shift, bias: never swapped
        assert sum(b.generations[: b.rank]) == sum(1 for e in swaps if e.layer == b.layer)
    assert max(e.loss for e in snap.layers) < min(e.loss for e in initial.layers)

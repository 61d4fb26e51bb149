"""The seed search on a real multi-node Ray cluster against a real Redis: elastic, fault tolerant, fair."""

from __future__ import annotations

import json
import threading
import time

import pytest

from germinator_dist.config import parse_job_spec
from germinator_dist.distributed.runner import run_job
from germinator_dist.records import JobState
from germinator_dist.search.job_setup import create_job

SMALL = {"hidden": [64], "rank": 8, "seed_bits": 8}


def make_job(table, job_id, budget_evals=400, count=2, **search):
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "search",
            "model": SMALL,
            "fitness": {"batch_size": 512},
            "search": {
                "budget_evals": budget_evals,
                "candidates_per_call": 8,
                "refit_steps": 2,
                "swap": None,
                **search,
            },
            "workers": {"count": count, "min": 0, "max": 8},
        }
    )
    create_job(table, spec)
    return spec


def start(table, job_id):
    out: dict = {}

    def target():
        try:
            out["state"] = run_job(table, job_id, progress_interval=0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_table_consistent(table, job_id):
    """Accepted commits are all in the stream, in order, and no layer's loss ever went up."""
    progress = table.progress(job_id)
    events = [e for e in table.events(job_id) if e.kind == "seeds"]
    assert len(events) == progress.accepted
    snap = table.snapshot(job_id)
    last = {}
    for e in events:
        assert e.loss < last.get(e.layer, float("inf")), "a layer's committed loss went up"
        last[e.layer] = e.loss
    for k, entry in enumerate(snap.layers):
        if k in last:
            assert entry.loss == pytest.approx(last[k], rel=1e-6) or entry.loss <= last[k]
    return progress, snap


def test_search_runs_to_budget_and_commits_fairly(ray_cluster, table, job_id):
    make_job(table, job_id, budget_evals=300)
    before = table.snapshot(job_id)
    th, out = start(table, job_id)
    th.join(240)
    assert not th.is_alive() and "error" not in out, out
    assert out["state"] == JobState.SUCCEEDED
    progress, snap = assert_table_consistent(table, job_id)
    assert progress.evaluations >= 300
    assert progress.accepted >= 1
    assert min(e.loss for e in snap.layers) < min(e.loss for e in before.layers)
    assert progress.stale + progress.not_better + progress.accepted <= progress.evaluations


def test_scale_up_onto_a_new_node_then_down(ray_cluster, table, job_id):
    make_job(table, job_id, budget_evals=100_000, count=2)
    th, out = start(table, job_id)
    try:
        wait_for(lambda: len(table.live(job_id, "worker")) == 2, 120, "2 live workers")
        node = ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray_cluster.wait_for_nodes(timeout=60)
        table.set_desired_workers(job_id, 3)
        wait_for(lambda: table.progress(job_id).workers_live == 3, 120, "3 live workers")
        nodes = {hb.payload.get("node") for hb in table.live(job_id, "worker")}
        assert node.node_id in nodes, "the new worker did not land on the new node"
        assert len(nodes) == 2
        table.set_desired_workers(job_id, 1)
        wait_for(lambda: table.progress(job_id).workers_live == 1, 60, "scale down to 1 worker")
        evals = table.progress(job_id).evaluations
        wait_for(lambda: table.progress(job_id).evaluations > evals, 60, "progress with 1 worker")
    finally:
        table.set_state(job_id, JobState.CANCELLED)
        th.join(60)
    assert not th.is_alive() and "error" not in out, out
    assert out["state"] == JobState.CANCELLED
    assert_table_consistent(table, job_id)
    ray_cluster.remove_node(node)


@pytest.mark.parametrize("graceful", [True, False])
def test_node_loss_costs_at_most_its_batches(ray_cluster, table, job_id, graceful):
    make_job(table, job_id, budget_evals=500, count=3, in_flight_per_worker=2)
    node = ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray_cluster.wait_for_nodes(timeout=60)
    th, out = start(table, job_id)
    wait_for(lambda: table.progress(job_id).workers_live == 3, 120, "3 live workers")
    best_before = min(e.loss for e in table.snapshot(job_id).layers)
    ray_cluster.remove_node(node, allow_graceful=graceful)
    th.join(240)
    assert not th.is_alive() and "error" not in out, out
    assert out["state"] == JobState.SUCCEEDED
    progress, snap = assert_table_consistent(table, job_id)
    assert progress.evaluations >= 500
    assert min(e.loss for e in snap.layers) <= best_before  # never worse because of a failure
    driver = table.live(job_id, "driver")
    assert driver and int(driver[0].payload["lost_workers"]) >= 1


def test_the_runner_measures_the_rows_and_keeps_why_it_failed(ray_cluster, table, job_id, tmp_path):
    """A registered job has no rows until its runner loads the data; a runner whose data is missing ends
    the job FAILED with the reason that `status` shows, and the next runner (a resume, the data now in
    place) measures and writes the rows and clears the error."""
    import numpy as np

    from germinator_dist.errors import SpecError
    from germinator_dist.search.job_setup import register_job
    from germinator_dist.service import operations as service

    path = tmp_path / "later.npz"
    spec = parse_job_spec(
        {
            "job": job_id,
            "mode": "search",
            "data": {"kind": "arrays", "path": str(path)},
            "model": SMALL,
            "fitness": {"batch_size": 64},
            "search": {"budget_evals": 64, "candidates_per_call": 8, "refit_steps": 1, "swap": None},
            "workers": {"count": 1},
        }
    )
    register_job(table, spec)
    with pytest.raises(SpecError, match="data.path"):
        run_job(table, job_id)
    doc = service.status(table, job_id)
    assert doc["state"] == "FAILED" and doc["layers"] == []
    assert doc["error"].startswith("data.path") and str(path) in doc["error"]
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.normal(size=(200, 12)).astype(np.float32), y=rng.integers(0, 4, 200))
    # what `resume` does before it starts a runner: claim the lease, FAILED -> RUNNING
    table.claim_lease(job_id, "resumed", 60.0, states=(JobState.FAILED,), to_state=JobState.RUNNING)
    assert run_job(table, job_id, owner="resumed", progress_interval=0.2) == JobState.SUCCEEDED
    doc = service.status(table, job_id)
    assert doc["error"] is None and len(doc["layers"]) == 2 and doc["evaluations"] >= 64
    stored = parse_job_spec(json.loads(table.get_spec(job_id)))
    assert (stored.model.input_dim, stored.model.num_classes) == (12, 4)

"""Ray metrics and the job plot, on one real short hybrid job.

The job runs on a Ray of its own that exports metrics (metrics_job.py, a subprocess: the session's Ray is
shared); the tests read the job's series from Ray's Prometheus endpoint and plot the job with the CLI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from germinator_dist.table import SeedTable

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
SPEC = {
    "mode": "hybrid",
    "model": {"hidden": [64], "rank": 8, "seed_bits": 16},
    "fitness": {"batch_size": 256},
    # a budget of work, not of time: the job makes several calls however slow the machine is
    "search": {"budget_evals": 6000, "swap": {"candidates": 512, "top_k": 2}},
    "trainer": {"optimizer": "adam", "lr": 0.01, "steps_per_publish": 10},
    "workers": {"count": "auto"},  # 2 CPUs: the trainer and one worker
}


@pytest.fixture(scope="module")
def metrics_job(redis_server, tmp_path_factory):
    """Runs the job once for the module; yields (job id, what metrics_job.py read)."""
    job = "t-metrics-plot"
    out = tmp_path_factory.mktemp("metrics") / "read.json"
    with SeedTable(redis_server.url) as t:
        t.delete_job(job)
    spec = json.dumps({**SPEC, "job": job})
    proc = subprocess.run(
        [sys.executable, str(HERE / "metrics_job.py"), redis_server.url, job, spec, str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    yield job, json.loads(out.read_text())
    with SeedTable(redis_server.url) as t:
        t.delete_job(job)


def test_the_jobs_figures_reach_rays_metrics_endpoint(metrics_job, redis_server):
    job, read = metrics_job
    assert read["state"] == "SUCCEEDED", read
    running = read["running"]
    from metrics_job import EXPECTED

    final = read["final"]
    assert running, "no series of the job was read while it ran"
    # a fast machine may end the job before every series' first flush: those must be there once it ended
    missing = [n for n in EXPECTED if n not in running and n not in final]
    assert not missing, f"series missing: {missing}; read running {sorted(running)}, after {sorted(final)}"
    seen = {**final, **running}
    assert seen["ray_germinator_workers_desired"] == 1  # auto on 2 CPUs: one worker beside the trainer
    assert seen["ray_germinator_trainer_steps_total"] > 0
    with SeedTable(redis_server.url) as t:
        events = t.events(job)
    # the table's best layer loss after each stream entry: the best-loss gauge shows one of them
    rows: dict[int, float] = {}
    bests = []
    for e in events:
        rows[e.layer] = e.loss
        bests.append(min(rows.values()))
    # after the job: the driver's counters equal the table's, the gauges what the table holds
    assert final["ray_germinator_evaluations_total"] == read["table_evaluations"] > 0
    swaps = sum(e.kind == "swap" for e in events)
    assert final.get("ray_germinator_swaps_accepted_total", 0) == swaps
    publishes = sum(e.kind == "floats" for e in events)
    assert 0 < final["ray_germinator_trainer_publishes_total"] <= publishes
    assert any(math.isclose(final["ray_germinator_best_loss"], b, rel_tol=1e-6) for b in bests)
    assert final["ray_germinator_worker_candidates_total"] == final["ray_germinator_evaluations_total"]


def test_plot_draws_the_job_and_its_series_equal_the_stream(metrics_job, redis_server, tmp_path):
    job, _ = metrics_job
    png = tmp_path / "job.png"
    cmd = [sys.executable, "-m", "germinator_dist.cli", "plot", job, "-o", str(png), "--json"]
    proc = subprocess.run([*cmd, "--redis", redis_server.url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    series = json.loads(proc.stdout)
    with SeedTable(redis_server.url) as t:
        events = t.events(job)
        curve = json.loads(t.get_doc(job, "trainer_curve"))
    t0 = min(e.time for e in events)
    assert series["state"] == "SUCCEEDED" and series["t0"] == t0
    for k in {e.layer for e in events}:
        mine = [e for e in events if e.layer == k]
        row = series["layers"][str(k)]
        assert row["kind"] == [e.kind for e in mine]
        assert row["loss"] == [e.loss if math.isfinite(e.loss) else None for e in mine]
        assert row["time"] == [round(e.time - t0, 3) for e in mine]
    for name, kind in (("swaps", "swap"), ("commits", "seeds"), ("publishes", "floats")):
        assert [(m["time"], m["layer"]) for m in series[name]] == [
            (round(e.time - t0, 3), e.layer) for e in events if e.kind == kind
        ]
    assert series["swaps"] and series["publishes"]
    assert [m["slot"] for m in series["swaps"]] == [e.slot for e in events if e.kind == "swap"]
    trainer = series["trainer"]
    assert trainer["fitness_loss"] == curve["fitness_loss"] and len(trainer["fitness_loss"]) > 0
    assert trainer["time"] == [round(t - t0, 3) for t in curve["time"]]
    assert any(v is not None for v in trainer["validation_loss"])

"""A desired worker that no node can place: status says why, naming the resources (workers.count auto)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from germinator_dist.config import parse_job_spec
from germinator_dist.distributed.runner import run_job
from germinator_dist.records import JobState
from germinator_dist.search.job_setup import create_job
from germinator_dist.service import operations as service


def test_status_names_the_resources_no_node_can_place(ray_cluster, redis_server, table, job_id):
    spec = parse_job_spec({
        "job": job_id, "mode": "search", "model": {"hidden": [32], "rank": 4, "seed_bits": 16},
        "search": {"budget_seconds": 60, "budget_evals": None},
        "workers": {"count": "auto", "cpus": 1, "gpus": 1},  # the test cluster has no GPU
    })  # fmt: skip
    create_job(table, spec)
    out = {}
    th = threading.Thread(target=lambda: out.update(state=run_job(table, job_id, progress_interval=0.2)))
    th.start()
    try:
        deadline = time.monotonic() + 60
        doc = service.status(table, job_id)
        while not doc["workers_waiting"] and time.monotonic() < deadline:
            time.sleep(0.3)
            doc = service.status(table, job_id)
        # auto: no node places a worker, so the count is min (at least 1), and status says why it waits
        assert doc["workers_desired"] == 1 and doc["workers_live"] == 0
        why = doc["workers_waiting"]
        assert why.startswith("1 worker not running: no node can place {CPU 1, GPU 1} at all"), why
        assert "the largest node has CPU 2, GPU 0" in doc["workers_waiting"]
        text = subprocess.run(
            [sys.executable, "-m", "germinator_dist.cli", "status", job_id, "--redis", redis_server.url],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        assert "workers 0/1" in text and "  workers: 1 worker not running: no node can place" in text
    finally:
        table.set_state(job_id, JobState.CANCELLED)
        th.join(60)
    assert out.get("state") == JobState.CANCELLED

"""``submit`` against the real Ray cluster: a worker that no node can place is refused before anything is
written, naming the field; a Ray address with credentials reaches the cluster but is shown and stored only
redacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from germinator_dist.table import SeedTable

ROOT = Path(__file__).resolve().parents[3]


def spec_file(tmp_path, **workers):
    spec = {
        "mode": "search",
        "model": {"hidden": [16], "rank": 4, "seed_bits": 8},
        "fitness": {"batch_size": 128},
        "search": {"budget_evals": 1_000_000, "candidates_per_call": 8, "swap": None},
        "workers": {"count": 1, **workers},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def with_credentials(url: str) -> str:
    return url.replace("http://", "http://ray:Pa55word@")


def submit(*args):
    return subprocess.run(
        [sys.executable, "-m", "germinator_dist.cli", "submit", *args],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip


def test_a_gpu_worker_on_a_cluster_without_gpus_is_refused(tmp_path, ray_cluster, redis_server):
    with SeedTable(redis_server.url) as t:
        before = {j.job for j in t.list_jobs()}
    address = with_credentials(ray_cluster.dashboard_url)
    out = submit(str(spec_file(tmp_path, gpus=1)), "--redis", redis_server.url, "--address", address)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: workers.gpus: no node of the cluster can place"), (
        out
    )
    assert "GPU 0" in lines[0] and "Pa55" not in out.stderr + out.stdout
    with SeedTable(redis_server.url) as t:
        assert {j.job for j in t.list_jobs()} == before  # nothing half-written


def test_the_submission_document_holds_the_redacted_address(tmp_path, ray_cluster, redis_server):
    from ray.job_submission import JobSubmissionClient

    address = with_credentials(ray_cluster.dashboard_url)
    out = submit(str(spec_file(tmp_path)), "--redis", redis_server.url, "--address", address)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip()
    with SeedTable(redis_server.url) as t:
        try:
            doc = json.loads(t.get_doc(job, "submission"))
            host = ray_cluster.dashboard_url.removeprefix("http://")
            assert doc["address"] == f"http://***@{host}"
            assert "Pa55" not in json.dumps(doc) and "Pa55" not in t.get_spec(job)
        finally:
            JobSubmissionClient(ray_cluster.dashboard_url).stop_job(doc["id"])
            t.delete_job(job)

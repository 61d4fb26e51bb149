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


def test_a_runner_that_dies_before_it_records_an_error_is_reported_with_its_log(ray_cluster, redis_server):
    """submit's wait for the initial rows also asks Ray: a runner process that ended before it could write
    anything to the table (here: one that exits at once, as a node without the package would) becomes one
    error quoting the last line of its Ray log, well before the wait runs out."""
    import time

    from ray.job_submission import JobSubmissionClient

    from germinator_dist.config import parse_job_spec
    from germinator_dist.errors import GerminatorError
    from germinator_dist.search.job_setup import register_job
    from germinator_dist.service import operations as service

    ep = service.resolve(redis_server.url, ray_cluster.dashboard_url, need_ray=True)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    job, owner = "t-runner-dies", "t-runner-dies-sub"
    LAST_LINE = "ModuleNotFoundError: no germinator here"  # noqa: N806
    with SeedTable(redis_server.url) as t:
        register_job(t, parse_job_spec({"job": job, "mode": "search"}), lease=(owner, 60.0))
        try:
            client.submit_job(
                entrypoint=f"{sys.executable} -c \"print('{LAST_LINE}'); exit(1)\"",
                submission_id=owner,
            )
            t0 = time.monotonic()
            try:
                service._await_rows(t, client, ep, job, owner, wait_s=120.0)
            except GerminatorError as exc:
                said = str(exc)
            else:
                raise AssertionError("the wait returned although the runner died")
            assert time.monotonic() - t0 < 60
            assert said.startswith(f"job {job}: its runner ended on the cluster (FAILED)"), said
            assert said.endswith(LAST_LINE), said
            assert "\n" not in said
        finally:
            t.delete_job(job)

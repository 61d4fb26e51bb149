"""The CLI's ``jobs`` and ``scale`` against a real redis-server (no Ray needed): one malformed job does not
hide the others, and scaling respects the spec's ``workers.min``/``max`` and the job's state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from germinator_dist.config import parse_job_spec
from germinator_dist.records import JobState
from germinator_dist.search.job_setup import create_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "mode": "search",
    "model": {"hidden": [16], "rank": 4, "seed_bits": 8},
    "search": {"budget_evals": 10, "swap": None},
    "workers": {"count": 2, "min": 1, "max": 4},
}


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GERMINATOR_REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "germinator_dist.cli", *args, "--redis", url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def one_error_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode != 0, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_jobs_lists_the_others_and_marks_a_malformed_one(table, job_id, redis_server) -> None:
    bad = job_id + "-bad"
    for j in (job_id, bad):
        create_job(table, parse_job_spec({**SPEC, "job": j}))
    try:
        redis_server.client().hset(f"germ:{{{bad}}}:layer:0", "seeds", b"\x01\x02\x03")  # wrong length
        out = cli("jobs", "--json", url=redis_server.url)
        one_error_line(out, bad, "MALFORMED")
        rows = {r["job_id"]: r for r in json.loads(out.stdout)}
        assert rows[job_id]["state"] == "PENDING" and rows[job_id]["best_loss"] > 0
        assert rows[bad]["state"] == "MALFORMED" and "seeds" in rows[bad]["error"]
        text = cli("jobs", url=redis_server.url)
        one_error_line(text, bad)
        assert job_id in text.stdout and f"{bad} " in text.stdout and "MALFORMED" in text.stdout
    finally:
        table.delete_job(bad)


def test_scale_respects_the_spec_bounds_and_the_job_state(table, job_id, redis_server) -> None:
    create_job(table, parse_job_spec({**SPEC, "job": job_id}))
    url = redis_server.url
    assert cli("scale", job_id, "--workers", "4", url=url).returncode == 0
    one_error_line(cli("scale", job_id, "--workers", "70", url=url), "70", "workers.max", "[1, 4]")
    assert table.desired_workers(job_id) == 4
    table.set_state(job_id, JobState.RUNNING)
    table.set_state(job_id, JobState.SUCCEEDED)
    one_error_line(cli("scale", job_id, "--workers", "2", url=url), job_id, "SUCCEEDED")
    assert table.desired_workers(job_id) == 4

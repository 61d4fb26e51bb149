"""The CLI against real Redis and Ray: submit, status, scale, cancel, resume after kill -9, Redis restart,
two jobs at once, bad input. Jobs run as Ray jobs through the Job Submission API, as users run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from germinator_dist.service import operations as service
from germinator_dist.table import SeedTable

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "germinator_dist.cli"]


def run_cli(*args, env=None, timeout=120, check=True):
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT
    )
    if check and out.returncode != 0:
        raise AssertionError(f"germinator-dist {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def write_spec(tmp_path, name="job.yaml", **overrides):
    spec = {
        "mode": "search",
        "model": {"hidden": [64], "rank": 8, "seed_bits": 8},
        "fitness": {"batch_size": 512},
        "search": {"budget_evals": 400, "candidates_per_call": 8, "refit_steps": 2, "swap": None},
        "workers": {"count": 1},
    }
    for k, v in overrides.items():
        spec[k] = {**spec.get(k, {}), **v} if isinstance(v, dict) else v
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def conn(ray_cluster, redis_server):
    return ["--redis", redis_server.url, "--address", ray_cluster.dashboard_url]


def status(job, redis_url):
    return json.loads(run_cli("status", job, "--json", "--redis", redis_url).stdout)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cleanup(url, *jobs):
    with SeedTable(url) as t:
        for j in jobs:
            t.delete_job(j)


def test_submit_status_scale_cancel_resume(tmp_path, conn, redis_server):
    spec = write_spec(tmp_path, search={"budget_evals": 100_000})
    job = run_cli("submit", str(spec), *conn).stdout.strip()
    try:
        doc = wait_for(
            lambda: (d := status(job, redis_server.url))["evaluations"] > 0 and d, 120, "evaluations"
        )
        for key in (
            "job_id",
            "state",
            "evaluations",
            "accepted",
            "stale",
            "evals_per_s",
            "workers_live",
            "workers_desired",
            "best_loss",
            "driver_pid",
            "layers",
        ):
            assert key in doc
        assert doc["state"] == "RUNNING" and doc["driver_pid"] > 0
        wait_for(lambda: status(job, redis_server.url)["candidates_per_call"] == 8, 30, "a worker heartbeat")
        assert [layer["version"] >= 0 and layer["loss"] > 0 for layer in doc["layers"]] == [True] * 2
        run_cli("scale", job, "--workers", "2", "--redis", redis_server.url)
        wait_for(lambda: status(job, redis_server.url)["workers_live"] == 2, 90, "2 live workers")
        assert "RUNNING" in run_cli("jobs", "--redis", redis_server.url).stdout
        run_cli("cancel", job, *conn)
        doc = status(job, redis_server.url)
        assert doc["state"] == "CANCELLED"
        wait_for(lambda: status(job, redis_server.url)["driver_pid"] is None, 30, "the driver to stop")
        evals = status(job, redis_server.url)["evaluations"]
        run_cli("resume", job, *conn)
        wait_for(lambda: status(job, redis_server.url)["evaluations"] > evals, 120, "progress after resume")
        run_cli("cancel", job, *conn)
        out = tmp_path / "model.json"
        run_cli("export", job, "-o", str(out), "--redis", redis_server.url)
        metrics = json.loads(run_cli("evaluate", str(out), "--json").stdout)
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["checkpoint_bytes"] == out.stat().st_size
    finally:
        cleanup(redis_server.url, job)


def test_resume_after_driver_kill_9(tmp_path, conn, redis_server):
    # a budget that cannot run out between the first accepted commit and the kill (the job must still be
    # RUNNING when the driver dies)
    spec = write_spec(tmp_path, search={"budget_evals": 4000})
    job = run_cli("submit", str(spec), *conn).stdout.strip()
    try:
        wait_for(lambda: status(job, redis_server.url)["accepted"] >= 1, 180, "an accepted commit")
        doc = status(job, redis_server.url)
        os.kill(doc["driver_pid"], signal.SIGKILL)  # not a polite cancel
        killed = time.monotonic()
        with SeedTable(redis_server.url) as t:
            before = [e for e in t.events(job) if e.kind == "seeds"]
            evals_before = t.progress(job).evaluations
        # Ray knows at once that the driver's process ended: resume right away is not refused
        resumed = subprocess.Popen([*CLI, "resume", job, *conn], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert time.monotonic() - killed < 1.0
        # while that command starts up: status (in this process, it answers in milliseconds) says the job is
        # RUNNING but its driver is gone, and since when
        ep = service.resolve(redis_server.url, conn[3])
        with SeedTable(redis_server.url) as t:
            gone = wait_for(lambda: (d := service.status(t, job, ep))["driver"] == "gone" and d, 4, "gone")
        assert gone["state"] == "RUNNING" and gone["driver_pid"] is None and gone["trainer"] is False
        assert time.time() - 10 < gone["driver_gone_since"] <= time.time() and "FAILED" in gone["driver_note"]
        assert resumed.wait(120) == 0, resumed.stderr.read()
        final = wait_for(
            lambda: (d := status(job, redis_server.url))["state"] in ("SUCCEEDED", "FAILED") and d,
            240,
            "the end",
        )
        assert final["state"] == "SUCCEEDED"
        assert final["evaluations"] >= max(4000, evals_before)
        with SeedTable(redis_server.url) as t:
            after = [e for e in t.events(job) if e.kind == "seeds"]
        assert [e.id for e in after[: len(before)]] == [e.id for e in before]  # nothing accepted was lost
        # the counters are reported right after each commit; a kill -9 between the two loses the count,
        # never the commit
        assert len(before) <= len(after) and final["accepted"] <= len(after) <= final["accepted"] + 1
    finally:
        cleanup(redis_server.url, job)


def test_job_survives_a_redis_restart(tmp_path, ray_cluster, redis_factory):
    server = redis_factory(appendonly=True, appendfsync="always")
    conn = ["--redis", server.url, "--address", ray_cluster.dashboard_url]
    spec = write_spec(tmp_path, search={"budget_evals": 800})
    job = run_cli("submit", str(spec), *conn).stdout.strip()
    wait_for(lambda: status(job, server.url)["accepted"] >= 1, 180, "an accepted commit")
    with SeedTable(server.url) as t:
        accepted_before = [e.id for e in t.events(job) if e.kind == "seeds"]
    server.kill()  # kill -9
    time.sleep(0.5)
    server.start()
    final = wait_for(
        lambda: (d := status(job, server.url))["state"] in ("SUCCEEDED", "FAILED") and d, 240, "end"
    )
    assert final["state"] == "SUCCEEDED"
    with SeedTable(server.url) as t:
        after = [e.id for e in t.events(job) if e.kind == "seeds"]
    assert after[: len(accepted_before)] == accepted_before
    assert final["evaluations"] >= 800


def test_two_jobs_at_once_share_workers_and_tables(tmp_path, conn, redis_server):
    a = run_cli("submit", str(write_spec(tmp_path, "a.yaml")), *conn).stdout.strip()
    b = run_cli("submit", str(write_spec(tmp_path, "b.yaml", model={"init_seed": 3})), *conn).stdout.strip()
    try:
        assert a != b
        wait_for(
            lambda: (
                status(a, redis_server.url)["workers_live"] == 1
                and status(b, redis_server.url)["workers_live"] == 1
            ),
            120,
            "both jobs to get their worker",
        )
        for j in (a, b):
            final = wait_for(
                lambda j=j: (d := status(j, redis_server.url))["state"] != "RUNNING" and d, 240, j
            )
            assert final["state"] == "SUCCEEDED"
        with SeedTable(redis_server.url) as t:
            for j in (a, b):
                writers = {e.writer for e in t.events(j) if e.kind == "seeds"}
                assert all(w.split("/")[1].startswith(f"{j}-w") for w in writers), writers
    finally:
        cleanup(redis_server.url, a, b)


def test_bad_input_one_line_errors_and_nothing_written(tmp_path, conn, redis_server):
    with SeedTable(redis_server.url) as t:
        jobs_before = {j.job for j in t.list_jobs()}
    bad_spec = write_spec(tmp_path, "bad.yaml", search={"proposer": "nope"}, model={"rank": -1})
    np.savez(tmp_path / "wrong.npz", X=np.zeros((10, 3)), y=np.zeros(9, dtype=int))
    cases = [
        (["validate", str(bad_spec)], "model.rank"),
        (["submit", str(bad_spec), *conn], "model.rank"),
        (["submit", str(tmp_path / "missing.yaml"), *conn], "cannot read"),
        (
            [
                "submit",
                str(write_spec(tmp_path, "d.yaml", data={"kind": "arrays", "path": "nope.npz"})),
                *conn,
            ],
            "data.path",
        ),
        (
            [
                "submit",
                str(write_spec(tmp_path, "w.yaml", data={"kind": "arrays", "path": "wrong.npz"})),
                *conn,
            ],
            "data.y",
        ),
        (["status", "no-such-job", "--redis", redis_server.url], "no-such-job"),
        (["scale", "no-such-job", "--workers", "2", "--redis", redis_server.url], "no-such-job"),
        (["status", "--redis", "redis://127.0.0.1:1/0"], "127.0.0.1:1"),
        (
            [
                "submit",
                str(write_spec(tmp_path)),
                "--redis",
                redis_server.url,
                "--address",
                "http://127.0.0.1:1",
            ],
            "127.0.0.1:1",
        ),
        (["evaluate", str(tmp_path / "wrong.npz")], "wrong.npz"),
    ]
    for args, needle in cases:
        out = run_cli(*args, check=False)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, out.stderr)
        assert "Traceback" not in out.stderr
    with SeedTable(redis_server.url) as t:
        assert {j.job for j in t.list_jobs()} == jobs_before  # nothing half-written

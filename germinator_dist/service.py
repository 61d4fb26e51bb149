"""Seed-search jobs as a service: submit, status, resume, scale, cancel, export (what the CLI calls).

Connection settings come from arguments, then the environment (``RAY_ADDRESS``, ``GERMINATOR_REDIS_URL``),
then the local stack recorded by ``germinator-dist up``; errors say which one was tried.
Jobs run on the cluster through Ray's Job Submission API (``job_runner`` is the entrypoint).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from germinator_dist import local_stack
from germinator_dist.errors import ConnectionFailed, GerminatorError, JobNotFound, SpecError
from germinator_dist.jobspec import JobSpec
from germinator_dist.records import JobState


@dataclass
class Endpoints:
    redis_url: str
    redis_source: str
    dashboard: str | None
    ray_source: str


def resolve(redis: str | None = None, address: str | None = None, need_ray: bool = False) -> Endpoints:
    """Pick the Redis URL and Ray address: flag, then environment, then the recorded local stack."""
    state = local_stack.read_state()
    if redis:
        r, rs = redis, "--redis"
    elif os.environ.get("GERMINATOR_REDIS_URL"):
        r, rs = os.environ["GERMINATOR_REDIS_URL"], "GERMINATOR_REDIS_URL"
    elif state:
        r, rs = state["redis_url"], f"the local stack ({local_stack.home() / local_stack.STATE_FILE})"
    else:
        raise ConnectionFailed(
            "redis: no seed table configured: pass --redis URL, set GERMINATOR_REDIS_URL, "
            "or run `germinator-dist up`"
        )
    if address:
        a, as_ = address, "--address"
    elif os.environ.get("RAY_ADDRESS"):
        a, as_ = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    elif state:
        a, as_ = state["dashboard_url"], "the local stack"
    elif need_ray:
        raise ConnectionFailed(
            "ray: no cluster configured: pass --address, set RAY_ADDRESS, or run `germinator-dist up`"
        )
    else:
        a, as_ = None, ""
    if a and not a.startswith("http"):
        a = f"http://{a}" if ":" in a else a
    return Endpoints(r, rs, a, as_)


def open_table(ep: Endpoints):
    from germinator_dist.table import SeedTable

    table = SeedTable(ep.redis_url, retries=3, backoff=0.1)
    try:
        table.ping()
    except GerminatorError as exc:
        raise ConnectionFailed(f"redis (from {ep.redis_source}): {exc}") from None
    return table


def _job_client(ep: Endpoints):
    from ray.job_submission import JobSubmissionClient

    if not ep.dashboard:
        raise ConnectionFailed("ray: no cluster address (pass --address or set RAY_ADDRESS)")
    try:
        return JobSubmissionClient(ep.dashboard)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster
        raise ConnectionFailed(
            f"ray (from {ep.ray_source}): {ep.dashboard} does not answer ({type(exc).__name__})"
        ) from None


def _start_runner(table, ep: Endpoints, job: str) -> str:
    client = _job_client(ep)
    local = any(h in (ep.dashboard or "") for h in ("127.0.0.1", "localhost"))
    python = sys.executable if local else "python"
    # The runner reads the table from this URL: the address the cluster's nodes reach Redis at. The
    # password never travels through Ray (its runtime-env agent logs env_vars on every node): the URL goes
    # out redacted ("***" = take the password from GERMINATOR_REDIS_PASSWORD on the node).
    env = {"GERMINATOR_REDIS_URL": table.url}
    if os.environ.get("RAY_AUTH_MODE"):
        env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    sid = f"germ-{job}-{int(time.time() * 1000)}"
    client.submit_job(
        entrypoint=f"{python} -m germinator_dist.job_runner {job}",
        submission_id=sid,
        runtime_env={"env_vars": env},
    )
    table.put_doc(job, "submission", json.dumps({"id": sid, "address": ep.dashboard}))
    return sid


def submit(spec: JobSpec, ep: Endpoints) -> str:
    """Write the job to the table and start its runner on the cluster. Returns the job id."""
    from germinator_dist.jobs import create_job

    table = open_table(ep)
    _job_client(ep)  # fail before anything is written when the cluster does not answer
    spec, _ = create_job(table, spec)
    try:
        _start_runner(table, ep, spec.job)
    except Exception as exc:
        table.delete_job(spec.job)  # nothing half-written
        if isinstance(exc, GerminatorError):
            raise
        raise ConnectionFailed(f"ray (from {ep.ray_source}): submitting the job failed: {exc}") from None
    return spec.job


def swap_count(table, job: str) -> int:
    """Accepted swaps of component seeds in a job (its event stream's ``swap`` entries)."""
    return sum(e.kind == "swap" for e in table.events(job))


def status(table, job: str) -> dict:
    """The job's stable machine-readable status document."""
    info = table.job_info(job)
    prog = table.progress(job)
    snap = table.snapshot(job)
    drivers = table.live(job, "driver")
    best = min((e.loss for e in snap.layers), default=math.inf)
    sizes = sorted(s for hb in table.live(job, "worker") if isinstance(s := hb.payload.get("call_size"), int))
    doc = {
        "job_id": job,
        "state": info.state.value,
        "evaluations": prog.evaluations,
        "accepted": prog.accepted,
        "stale": prog.stale,
        "not_better": prog.not_better,
        "evals_per_s": round(prog.evals_per_s, 2),
        "workers_live": prog.workers_live if drivers else 0,
        "workers_desired": info.desired_workers,
        # the live workers' current call size (median; with candidates_per_call "auto" each has its own)
        "candidates_per_call": sizes[len(sizes) // 2] if sizes else None,
        "best_loss": best if math.isfinite(best) else None,
        "driver_pid": drivers[0].payload.get("pid") if drivers else None,
        "driver_host": drivers[0].payload.get("host") if drivers else None,
        "trainer": bool(table.live(job, "trainer")),
        # the swap search (search.swap): swaps accepted, candidates screened per second, fitness loss gained
        "swaps": drivers[0].payload.get("swaps") if drivers else None,
        "screened_per_s": drivers[0].payload.get("screened_per_s") if drivers else None,
        "swap_gain": drivers[0].payload.get("swap_gain") if drivers else None,
        "epoch": snap.epoch,
        "layers": [
            {
                "layer": e.layer,
                "loss": e.loss if math.isfinite(e.loss) else None,
                "version": e.version,
                "writer": e.writer,
            }
            for e in snap.layers
        ],
    }
    return doc


def resume(table, ep: Endpoints, job: str) -> str:
    """Start a new runner for a job whose driver died or was cancelled; it continues from the table."""
    info = table.job_info(job)
    if info.state == JobState.SUCCEEDED:
        raise SpecError(f"job: {job} already SUCCEEDED; nothing to resume")
    if info.state == JobState.RUNNING and table.live(job, "driver"):
        raise SpecError(f"job: {job} is RUNNING with a live driver; nothing to resume")
    if info.state in (JobState.FAILED, JobState.CANCELLED):
        table.set_state(job, JobState.RUNNING)
    return _start_runner(table, ep, job)


def cancel(table, ep: Endpoints | None, job: str, grace_s: float = 15.0) -> None:
    """Stop the job's driver, trainer and workers; the table keeps its state."""
    state = table.get_state(job)
    if not state.terminal:
        table.set_state(job, JobState.CANCELLED)
    raw = table.get_doc(job, "submission")
    if raw and ep is not None and ep.dashboard:
        sid = json.loads(raw)["id"]
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and table.live(job, "driver"):
            time.sleep(0.3)  # the driver notices CANCELLED within a second and stops its workers
        try:
            client = _job_client(ep)
            if not client.get_job_status(sid).is_terminal():
                client.stop_job(sid)
        except Exception:  # noqa: BLE001 - the table state already says CANCELLED
            pass


def export(table, job: str, out: Path) -> int:
    """Write the job's current best model as a tiny checkpoint. Returns its size in bytes."""
    from germinator_dist.checkpoint import save_checkpoint
    from germinator_dist.jobs import model_from_snapshot

    spec = JobSpec.model_validate_json(table.get_spec(job))
    model = model_from_snapshot(spec, table.snapshot(job))
    meta = {"job": job, "data": spec.data.model_dump(mode="json"), "mode": spec.mode}
    return save_checkpoint(model, out, meta=meta)


def ensure_job(table, job: str) -> None:
    try:
        table.job_info(job)
    except JobNotFound:
        raise JobNotFound(f"job: no job {job!r} in the seed table") from None

"""The process that runs one job on a Ray cluster:
``python -m germinator_dist.distributed.runner JOB [--redis URL] [--address RAY]``.

Started by ``germinator-dist submit``/``resume`` through Ray's Job Submission API (so it runs on the
cluster, not in the user's terminal), or directly. It takes the job's driver lease, loads the data (the
one place a job's data is read besides the trainer's own process), measures and writes the initial rows of
a new job (``search/job_setup.prepare_job``), starts the worker actors (and the scale trainer in
``train``/``hybrid`` mode), runs the search driver until the budget ends or the job is cancelled, and sets
the final state. Why it failed is kept with the job (``status`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable

import ray

from germinator_dist.config import JobSpec, load_trainer_config
from germinator_dist.distributed import lease
from germinator_dist.distributed.ray_pool import RayPool
from germinator_dist.endpoints import resolve
from germinator_dist.errors import GerminatorError, JobBusy, TableError
from germinator_dist.records import JobState
from germinator_dist.redaction import scrub, url_secrets
from germinator_dist.search.driver import SearchDriver
from germinator_dist.search.job_errors import clear_error, record_error
from germinator_dist.search.job_setup import fitness_batch, prepare_job, stored_spec
from germinator_dist.table import SeedTable

log = logging.getLogger("germinator.job")


def stop_trainer_with_search(spec: JobSpec) -> bool:
    """Whether the trainer is stopped when the search ends: in hybrid mode, unless it has a budget of its
    own (``budget_s``/``total_steps``), which it then runs out, so the hybrid's floats get the training a
    train-only job gets. (Train mode always runs the trainer's budget out.)"""
    cfg = load_trainer_config(spec.trainer)
    return spec.mode == "hybrid" and cfg.budget_s is None and cfg.total_steps is None


def run_job(
    table: SeedTable,
    job: str,
    *,
    redis_url: str | None = None,
    progress_interval: float = 0.5,
    owner: str | None = None,
    on_lease_lost: Callable[[], None] | None = None,
) -> JobState:
    """Run ``job`` to its end on the Ray cluster this process is connected to. Returns the final state.

    The job's driver lease is taken over first under ``owner`` (the id submit/resume claimed it for; by
    default a fresh one), renewed while the job runs, and released with the final state after the workers
    and the trainer are gone; ``on_lease_lost`` is called if another driver takes the job over meanwhile
    (``main`` exits the process; by default it is only logged, and the final state is left to the new
    holder). A new job's initial rows are measured and written first (``job_setup.prepare_job``); what
    makes the job fail is kept as its ``error`` document. Raises JobBusy when another driver holds the job,
    GerminatorError for a job that cannot run (unknown id, bad spec or data).
    """
    spec = stored_spec(table, job)
    owner = owner or f"runner-{socket.gethostname()}-{os.getpid()}"
    try:  # PENDING -> RUNNING in the same step
        table.claim_lease(job, owner, lease.RUN_TTL_S, to_state=JobState.RUNNING)
    except JobBusy:
        raise
    except TableError:
        table.release_lease(job, owner)  # e.g. cancelled before this runner started: give the lease back
        raise
    keeper = lease.LeaseKeeper(table, job, owner, on_lost=on_lease_lost or (lambda: None)).start()
    final = JobState.SUCCEEDED
    pool = trainer = None
    try:  # from here on, whatever fails ends the job FAILED and gives the lease back
        clear_error(table, job)  # a resumed job: the last runner's error is history
        spec, dataset = prepare_job(table, job, owner)  # the data, loaded once; a new job's initial rows
        batch = fitness_batch(spec, dataset)
        del dataset  # the workers get the fitness batch; the trainer loads the data in its own process
        if spec.workers.count == "auto":  # as many workers as the cluster places beside the trainer
            from germinator_dist.distributed.capacity import auto_workers

            table.set_desired_workers(job, auto_workers(spec))
        pool = RayPool(
            spec.model.model_dump_json(),
            batch.inputs.numpy(),
            batch.targets.numpy(),
            cpus=spec.workers.cpus,
            gpus=spec.workers.gpus,
            name_prefix=f"{job}-w",
            job=job,
        )
        if spec.mode in ("train", "hybrid"):
            from germinator_dist.distributed.trainer_actor import start_trainer

            trainer = start_trainer(redis_url or table.url, spec)
        if spec.mode in ("search", "hybrid"):
            from germinator_dist.distributed.metrics import DriverMetrics

            metrics = DriverMetrics(job)  # the driver's figures as Ray metrics
            driver = SearchDriver(
                table, job, spec, pool, progress_interval=progress_interval, on_report=metrics.on_report
            )
            stats = driver.run()
            log.info("search finished: %s", stats)
        if trainer is not None:
            last = trainer.wait_or_stop(search_done=stop_trainer_with_search(spec))
            if last.get("error"):  # the trainer failed: so did the job (its error is kept with it)
                raise GerminatorError(f"trainer: {last['error']}")
    except BaseException as exc:
        final = JobState.FAILED
        _keep_error(table, job, owner, exc, redis_url)
        raise
    finally:
        if pool is not None:
            pool.shutdown()
        if trainer is not None:
            trainer.shutdown()
        keeper.stop()
        _release(table, job, owner, final)  # the final state (if still RUNNING) and the release, one step
    return table.get_state(job)


def _keep_error(table: SeedTable, job: str, owner: str, exc: BaseException, redis_url: str | None) -> None:
    """Record why the job failed (one line, the Redis URL's secrets scrubbed) while this runner still
    holds its lease."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        message = f"the runner was stopped ({type(exc).__name__})"
    elif isinstance(exc, GerminatorError):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = scrub(message, url_secrets(redis_url))
    try:
        held = table.lease(job)
        if held is not None and held.owner == owner:
            record_error(table, job, message, owner, type(exc).__name__)
    except GerminatorError as err:
        log.warning("job %s: the error was not recorded: %s", job, err)


def _release(table: SeedTable, job: str, owner: str, final: JobState) -> None:
    try:
        if not table.release_lease(job, owner, final=final):
            log.warning("job %s: the lease was no longer %s's; the final state was left alone", job, owner)
    except GerminatorError as exc:
        log.warning("job %s: releasing the driver lease failed: %s", job, exc)


def _lease_lost() -> None:
    """Another driver holds the job now: stop at once and write nothing more (Ray ends the actors of this
    process's Ray job with it)."""
    logging.shutdown()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m germinator_dist.distributed.runner")
    p.add_argument("job")
    p.add_argument("--redis", help="seed table Redis URL (default: GERMINATOR_REDIS_URL, the local stack)")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, then the local stack, then auto)")
    p.add_argument("--lease", help="the lease owner id submit/resume claimed the job for (its submission id)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        ep = resolve(args.redis, args.address)
        ray.init(address=ep.ray_init or "auto", log_to_driver=False)
        with SeedTable(ep.redis_url) as table:
            state = run_job(
                table, args.job, redis_url=ep.redis_url, owner=args.lease, on_lease_lost=_lease_lost
            )
    except GerminatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"job {args.job}: {state.value}")
    return 0 if state in (JobState.SUCCEEDED, JobState.CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())

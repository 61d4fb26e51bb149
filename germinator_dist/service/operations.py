"""Seed-search jobs as a service: submit, status, resume, scale, cancel, export (what the CLI calls).

Where the table and the cluster are is decided in one place, ``endpoints.resolve``.
Jobs run on the cluster through Ray's Job Submission API (``distributed/runner.py`` is the entrypoint).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from germinator_dist.config import JobSpec
from germinator_dist.distributed import lease
from germinator_dist.endpoints import Endpoints, resolve  # noqa: F401 - re-exported
from germinator_dist.errors import (
    ConnectionFailed,
    GerminatorError,
    Interrupted,
    JobNotFound,
    SpecError,
    TableError,
)
from germinator_dist.records import JobState
from germinator_dist.redaction import redact_address, scrub, url_secrets  # noqa: F401 - re-exported


def open_table(ep: Endpoints):
    from germinator_dist.table import SeedTable

    table = SeedTable(ep.redis_url, retries=3, backoff=0.1)
    try:
        table.ping()
    except GerminatorError as exc:
        raise ConnectionFailed(f"redis (from {ep.redis_source}): {exc}") from None
    return table


def _job_client(ep: Endpoints, timeout: float | None = None):
    """A Job Submission client whose requests time out (``lease.job_client``). Raises ConnectionFailed."""
    if not ep.dashboard:
        raise ConnectionFailed("ray: no cluster address (pass --address or set RAY_ADDRESS)")
    return lease.job_client(ep.dashboard, ep.ray_source, timeout, shown=ep.shown_dashboard)


def _start_runner(table, ep: Endpoints, job: str, owner: str | None = None, client=None) -> str:
    """Submit the job's runner as a Ray job; ``owner`` (the lease it takes over) is its submission id."""
    client = client or _job_client(ep)
    local = any(h in (ep.dashboard or "") for h in ("127.0.0.1", "localhost"))
    python = sys.executable if local else "python"
    # The runner reads the table from this URL: the address the cluster's nodes reach Redis at. The
    # password never travels through Ray (its runtime-env agent logs env_vars on every node): the URL goes
    # out redacted ("***" = take the password from GERMINATOR_REDIS_PASSWORD on the node).
    env = {"GERMINATOR_REDIS_URL": table.url}
    if os.environ.get("RAY_AUTH_MODE"):
        env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    sid = owner or lease.new_owner(job)
    client.submit_job(
        entrypoint=f"{python} -m germinator_dist.distributed.runner {job} --lease {sid}",
        submission_id=sid,
        runtime_env={"env_vars": env},
    )
    table.put_doc(job, "submission", json.dumps({"id": sid, "address": ep.shown_dashboard}))
    return sid


START_WAIT_S = 120.0  # how long submit waits, by default, for the runner to measure the initial rows


def submit(spec: JobSpec, ep: Endpoints, wait_s: float = START_WAIT_S) -> str:
    """Register the job in the table and start its runner on the cluster; wait up to ``wait_s`` seconds
    for the runner to load the data and write the initial rows. Returns the job id.

    The client loads no data: the runner does, on the cluster (``search/job_setup.py``). Registering and
    starting happen both or neither: the job is registered with its driver lease held by its runner's Ray
    submission id; when starting the runner fails, times out or is interrupted (Ctrl-C, SIGTERM, SIGHUP,
    SIGABRT), the job is deleted again and the Ray job, if Ray took it, stopped. So is a job whose runner
    fails before it wrote the initial rows (data that cannot be loaded, a layer the model lacks): its error
    is raised here. A runner still starting after ``wait_s`` (0: do not wait) is left to run; ``status``
    follows it. Raises Interrupted, ConnectionFailed, SpecError, TableError, GerminatorError.
    """
    from germinator_dist.search.job_setup import register_job

    table = open_table(ep)
    client = _job_client(ep)  # fail before anything is written when the cluster does not answer
    check_placement(spec, node_resources(ep))  # a worker no node can place would wait forever
    spec = spec.with_id()
    owner = lease.new_owner(spec.job)
    with lease.signals_interrupt() as got:
        try:
            register_job(table, spec, lease=(owner, lease.START_TTL_S))
            _start_runner(table, ep, spec.job, owner, client)
            if wait_s > 0 and not _await_rows(table, client, ep, spec.job, owner, wait_s):
                print(
                    f"job {spec.job}: its runner has not written the initial rows after {wait_s:g} s; it "
                    f"stays submitted (`germinator-dist status {spec.job}` follows it)",
                    file=sys.stderr,
                )
        except BaseException as exc:
            with lease.signals_ignored():
                _undo_submit(table, client, spec.job, owner)  # nothing half-written
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(
                    f"submit interrupted by {got[0] if got else 'SIGINT'}: job {spec.job} was not submitted "
                    f"(nothing was written)"
                ) from None
            if isinstance(exc, GerminatorError):
                raise
            if "Timeout" in type(exc).__name__:
                raise ConnectionFailed(
                    lease.no_answer(ep.shown_dashboard, ep.ray_source, exc, client.request_timeout)
                ) from None
            said = scrub(str(exc), url_secrets(ep.dashboard, ep.redis_url)).splitlines()
            raise ConnectionFailed(
                f"ray (from {ep.ray_source}): submitting the job to {ep.shown_dashboard} failed: "
                f"{type(exc).__name__}: {said[0] if said else ''}"
            ) from None
    return spec.job


def _await_rows(table, client, ep: Endpoints, job: str, owner: str, wait_s: float) -> bool:
    """Wait until the job's runner has written its initial rows or the job was cancelled (True), or
    ``wait_s`` passed (False).

    Raises the runner's recorded error when it failed first (SpecError for a spec or data error), and
    GerminatorError when Ray says the runner's process ended before it could record anything (with the
    last line of its log: a node that cannot reach Redis, a missing package)."""
    from germinator_dist.search.job_errors import recorded_error

    deadline = time.monotonic() + wait_s
    ask_ray = time.monotonic() + 1.0
    while True:
        info = table.job_info(job)
        if info.n_layers > 0:
            return True
        if info.state == JobState.CANCELLED:  # by `cancel`, meanwhile: the job stays, as cancelled
            print(f"job {job}: cancelled before its runner wrote the initial rows", file=sys.stderr)
            return True
        if info.state == JobState.FAILED:
            failure = recorded_error(table, job)
            if failure is None:
                raise GerminatorError(f"job {job}: FAILED before its runner wrote its rows")
            said, kind = failure
            if kind == "SpecError":
                raise SpecError(said)
            raise GerminatorError(f"job {job}: its runner failed as it started: {said}")
        if time.monotonic() >= ask_ray:  # a runner that died before it could record why
            ask_ray = time.monotonic() + 1.0
            try:
                view = lease.holder_view(client, owner, ep.shown_dashboard or "", ep.ray_source)
            except Exception:  # noqa: BLE001 - not answering now: the table or the next poll will tell
                view = None
            if view is not None and view.ended:
                now = table.job_info(job)
                if now.n_layers > 0 or now.state in (JobState.FAILED, JobState.CANCELLED):
                    continue  # it wrote its rows or recorded its end meanwhile: handled above
                raise GerminatorError(
                    f"job {job}: its runner ended on the cluster ({view.status}) before it wrote the initial "
                    "rows: " + scrub(_last_log_line(client, owner), url_secrets(ep.dashboard, ep.redis_url))
                )
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _last_log_line(client, sid: str) -> str:
    try:
        lines = [ln.strip() for ln in client.get_job_logs(sid).splitlines() if ln.strip()]
    except Exception:  # noqa: BLE001
        return "(its log could not be read)"
    return lines[-1][:500] if lines else "(its log is empty)"


def _undo_submit(table, client, job: str, owner: str) -> None:
    """Remove what a failed submit wrote: the job, if its lease is still this submit's or its runner's
    (an existing job of the same id is left alone), and the Ray job, in case Ray took it before the
    failure."""
    try:  # the lease is checked again in the delete's own script: a resume claiming it meanwhile wins
        table.delete_job(job, owner=owner, unheld=_submitted_by(table, job, owner))
    except GerminatorError:
        pass  # no such job: nothing was created
    client.request_timeout = min(client.request_timeout, 3.0)
    try:
        client.stop_job(owner)
    except Exception:  # noqa: BLE001 - unknown to Ray (never reached it) or unreachable
        pass


def _submitted_by(table, job: str, owner: str) -> bool:
    """Whether the job (whose lease nobody holds) was started by the submission ``owner``: its runner may
    have failed and given the lease back."""
    raw = table.get_doc(job, "submission")
    try:
        return raw is not None and submission_id(raw, job) == owner
    except TableError:
        return False


def node_resources(ep: Endpoints) -> list[dict[str, float]] | None:
    """The total resources of every live node of the cluster (Ray's state API through the dashboard),
    or None when the cluster does not list them (then nothing is checked)."""
    from germinator_dist.distributed.capacity import live_node_resources

    return live_node_resources(ep.dashboard)


def check_placement(spec: JobSpec, nodes: list[dict[str, float]] | None) -> None:
    """Refuse a job whose worker (or trainer: the same ``workers.cpus``/``workers.gpus``) no live node can
    place, so it would wait for resources forever. Pure: ``nodes`` are the nodes' total resources (None:
    unknown, nothing checked). Raises SpecError naming ``workers.gpus`` or ``workers.cpus``."""
    w = spec.workers
    starts_actors = spec.mode != "search" or w.count == "auto" or w.count > 0
    want = {k: v for k, v in (("CPU", w.cpus), ("GPU", w.gpus)) if v > 0}
    if nodes is None or not starts_actors or not want:
        return
    if any(all(n.get(k, 0.0) >= v for k, v in want.items()) for n in nodes):
        return
    largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU")}
    short = "gpus" if w.gpus > largest["GPU"] else "cpus"
    asked = ", ".join(f"{k} {v:g}" for k, v in want.items())
    raise SpecError(
        f"workers.{short}: no node of the cluster can place a worker asking for {{{asked}}} "
        f"(the largest node has CPU {largest['CPU']:g}, GPU {largest['GPU']:g}; {len(nodes)} live nodes) "
        f"(value {getattr(w, short)!r})"
    )


def swap_count(table, job: str) -> int:
    """Accepted swaps of component seeds in a job (its event stream's ``swap`` entries)."""
    return sum(e.kind == "swap" for e in table.events(job))


def status(table, job: str, ep: Endpoints | None = None) -> dict:
    """The job's stable machine-readable status document. With a Ray address in ``ep``, Ray's view of the
    lease holder tells at once whether the driver is gone (``lease.driver_fields``)."""
    info = table.job_info(job)
    prog = table.progress(job)
    snap = table.snapshot(job)
    drivers = table.live(job, "driver")
    driver = lease.driver_fields(table, job, info.state, bool(drivers), *_ray_view(ep))
    if driver["driver"] == "gone":
        drivers = []  # a dead driver's heartbeat outlives it by seconds
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
        "trainer": bool(table.live(job, "trainer")) and driver["driver"] != "gone",
        # the swap search (search.swap): swaps accepted, candidates screened per second, fitness loss gained
        "swaps": drivers[0].payload.get("swaps") if drivers else None,
        "screened_per_s": drivers[0].payload.get("screened_per_s") if drivers else None,
        "swap_gain": drivers[0].payload.get("swap_gain") if drivers else None,
        # why desired workers are not running (e.g. no node can place their resources), or None
        "workers_waiting": (drivers[0].payload.get("workers_waiting") or None) if drivers else None,
        "epoch": snap.epoch,
        # why the job's runner failed (its first line), while the job is FAILED
        "error": _failure(table, job) if info.state == JobState.FAILED else None,
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
    return doc | driver


def _failure(table, job: str) -> str | None:
    from germinator_dist.search.job_errors import recorded_error

    try:
        failure = recorded_error(table, job)
        return failure[0] if failure else None
    except (GerminatorError, ValueError):
        return "(the recorded error is not readable)"


def _ray_view(ep: Endpoints | None) -> tuple:
    """(Job Submission client or None, (address shown, its source)) for ``lease.driver_fields``."""
    if ep is None or not ep.dashboard:
        return None, ("", "")
    where = (ep.shown_dashboard or "", ep.ray_source)
    try:
        return _job_client(ep, timeout=5.0), where
    except ConnectionFailed:
        return None, where


def resume(table, ep: Endpoints, job: str) -> str:
    """Start a new runner for a job whose driver died or was cancelled; it continues from the table.

    The job's lease is claimed first, by compare-and-set: refused (JobBusy, naming the holder) while
    another driver holds it, unless Ray says that driver's job has ended. When starting the runner fails or
    is interrupted, the lease and the job's state are put back. Returns the runner's submission id.
    """
    info = table.job_info(job)
    if info.state == JobState.SUCCEEDED:
        raise SpecError(f"job: {job} already SUCCEEDED; nothing to resume")
    client = _job_client(ep)
    take = lease.holder_to_replace(table, client, job, ep.shown_dashboard or "", ep.ray_source)
    owner = lease.new_owner(job)
    states = (JobState.PENDING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED)
    prev = None
    with lease.signals_interrupt() as got:
        try:
            prev = table.claim_lease(
                job, owner, lease.START_TTL_S, take_from=take, states=states, to_state=JobState.RUNNING
            )
            return _start_runner(table, ep, job, owner, client)
        except BaseException as exc:
            if prev is not None:
                with lease.signals_ignored():
                    back = prev if prev in (JobState.FAILED, JobState.CANCELLED) else None
                    _undo_resume(table, client, job, owner, back)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(
                    f"resume interrupted by {got[0] if got else 'SIGINT'}: job {job} unchanged"
                ) from None
            if isinstance(exc, GerminatorError):
                raise
            raise ConnectionFailed(
                lease.no_answer(ep.shown_dashboard or "", ep.ray_source, exc, client.request_timeout)
            ) from None


def _undo_resume(table, client, job: str, owner: str, state: JobState | None) -> None:
    """Give back a failed resume's lease (the job back to ``state``) and stop its Ray job if Ray took it."""
    try:
        table.release_lease(job, owner, final=state)
    except GerminatorError:
        pass
    client.request_timeout = min(client.request_timeout, 3.0)
    try:
        client.stop_job(owner)
    except Exception:  # noqa: BLE001 - unknown to Ray or unreachable
        pass


def cancel(table, ep: Endpoints | None, job: str, grace_s: float = 15.0) -> None:
    """Stop the job's driver, trainer and workers; the table keeps its state."""
    state = table.get_state(job)
    if not state.terminal:
        table.set_state(job, JobState.CANCELLED)
    held = table.lease(job)
    raw = None if held else table.get_doc(job, "submission")
    if (held or raw) and ep is not None and ep.dashboard:
        # the table says CANCELLED already: the driver stops on its own and releases its lease
        sid = held.owner if held else submission_id(raw, job)
        try:
            client = _job_client(ep)
        except ConnectionFailed:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            now_held = table.lease(job)
            if now_held is None or now_held.owner != sid:
                break  # released: the driver has stopped its workers and ended
            if lease.holder_view(client, sid, ep.shown_dashboard or "", ep.ray_source).ended:
                break  # died meanwhile
            time.sleep(0.3)
        try:
            if not client.get_job_status(sid).is_terminal():
                client.stop_job(sid)
        except Exception:  # noqa: BLE001 - the table state already says CANCELLED
            pass


def scale(table, job: str, workers: int) -> None:
    """Set the desired worker count of a PENDING or RUNNING job, within its spec's ``workers.min``/``max``.
    Raises SpecError (out of bounds), TableError (a finished job, or a stored spec that is not valid)."""
    from germinator_dist.search.job_setup import stored_spec  # (torch is imported only where needed)

    w = stored_spec(table, job).workers
    table.scale_workers(job, workers, w.min, w.max)


def submission_id(raw: str, job: str) -> str:
    """The Ray submission id in a job's stored submission document. Raises TableError naming the job
    and the value when the document is not a JSON object with a string ``id``."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    sid = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(sid, str) or not sid:
        raise TableError(
            f"job {job}: the stored submission document is not a JSON object with a string id "
            f"(value {raw[:60]!r}); the table says CANCELLED, the Ray job was not asked to stop"
        )
    return sid


def export(table, job: str, out: Path) -> int:
    """Write the job's current best model as a tiny checkpoint. Returns its size in bytes."""
    from germinator_dist.core.checkpoint import save_checkpoint
    from germinator_dist.search.job_setup import model_from_snapshot, stored_spec

    spec = stored_spec(table, job)
    snap = table.snapshot(job)
    if not snap.layers:
        raise TableError(
            f"job {job}: no model to export yet; its runner has not written the initial rows "
            f"(state {table.get_state(job).value})"
        )
    model = model_from_snapshot(spec, snap)
    meta = {"job": job, "data": spec.data.model_dump(mode="json"), "mode": spec.mode}
    return save_checkpoint(model, out, meta=meta)


def ensure_job(table, job: str) -> None:
    try:
        table.job_info(job)
    except JobNotFound:
        raise JobNotFound(f"job: no job {job!r} in the seed table") from None

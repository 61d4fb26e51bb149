"""``germinator-dist sweep sweep.yaml``: tune the search itself with Ray Tune.

A sweep file names a base job spec and a search space over its fields; each Tune trial runs one
seed-search job with its own table namespace (``{sweep}-t{n}``), reports the job's best loss once per
``report_every_s`` seconds, and ASHA stops the unpromising ones early. At the end a summary table of the
trials and the best spec are printed (and returned).

    base: digits.yaml                 # path relative to the sweep file (or an inline job spec mapping)
    name: my-sweep
    space:
      search.population: {choice: [8, 16]}
      trainer.lr: {loguniform: [0.001, 0.1]}
      model.rank: {choice: [32, 64]}
    num_samples: 4
    max_concurrent: 2
    report_every_s: 2
    asha: {max_t: 30, grace_period: 3, reduction_factor: 2}
"""

from __future__ import annotations

import copy
import math
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from germinator_dist.config import (
    JOB_ID_RE,
    SweepSpec,
    format_validation_error,
    load_job_spec,
    parse_job_spec,
    read_yaml,
)
from germinator_dist.errors import SpecError


def _domain(path: str, dom: dict[str, list]):
    from ray import tune

    if len(dom) != 1:
        raise SpecError(f"space.{path}: expected one of choice/uniform/loguniform/randint (value {dom!r})")
    ((kind, args),) = dom.items()
    makers = {
        "choice": lambda a: tune.choice(a),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    if kind not in makers:
        raise SpecError(f"space.{path}: unknown distribution {kind!r} (choice, uniform, loguniform, randint)")
    if kind != "choice" and len(args) != 2:
        raise SpecError(f"space.{path}: {kind} takes [low, high] (value {args!r})")
    return makers[kind](args)


def apply_config(base: dict, config: dict[str, Any]) -> dict:
    """The base spec dict with dotted fields set from a Tune config."""
    spec = copy.deepcopy(base)
    for path, value in config.items():
        node = spec
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value.item() if hasattr(value, "item") else value
    return spec


def load_sweep(path: str | Path) -> tuple[SweepSpec, dict]:
    """Read a sweep file; returns it and the base spec as a dict. Raises SpecError naming the field."""
    path = Path(path)
    data = read_yaml(path, "sweep")
    try:
        sweep = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, "sweep.")) from None
    if not JOB_ID_RE.match(sweep.name):
        raise SpecError(f"sweep.name: must match {JOB_ID_RE.pattern} (value {sweep.name!r})")
    if isinstance(sweep.base, str):
        base = load_job_spec(path.parent / sweep.base).model_dump(mode="json", exclude={"job"})
    else:
        base = parse_job_spec(sweep.base).model_dump(mode="json", exclude={"job"})
    from germinator_dist.search.job_setup import check_job_spec

    check_job_spec(parse_job_spec(base))
    for field, dom in sweep.space.items():
        _domain(field, dom)
        check_job_spec(
            parse_job_spec(apply_config(base, {field: (dom.get("choice") or next(iter(dom.values())))[0]}))
        )
    return sweep, base


def _trial(config: dict, *, base: dict, sweep: SweepSpec, redis_url: str) -> None:
    from ray import tune

    from germinator_dist.distributed.runner import run_job
    from germinator_dist.records import JobState
    from germinator_dist.search.job_setup import register_job
    from germinator_dist.table import SeedTable

    trial_id = tune.get_context().get_trial_id()
    job = f"{sweep.name}-{trial_id}"[:64]
    spec = parse_job_spec({**apply_config(base, config), "job": job})
    table = SeedTable(redis_url)
    register_job(table, spec)  # the runner below measures and writes its rows
    out: dict = {}

    def run() -> None:
        try:
            out["state"] = run_job(table, job, redis_url=redis_url)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial: Tune marks it ERROR
            out["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        while th.is_alive() and table.job_info(job).n_layers == 0:
            time.sleep(0.2)  # the runner loads the data first: no report (ASHA's clock) before the rows
        if "error" in out:  # it failed before writing the rows
            raise out["error"]
        while True:
            time.sleep(sweep.report_every_s)
            if "error" in out:
                raise out["error"]
            snap = table.snapshot(job)
            best = min((e.loss for e in snap.layers), default=math.inf)
            done = not th.is_alive()
            tune.report(
                {
                    "best_loss": best if math.isfinite(best) else 1e9,
                    "evaluations": table.progress(job).evaluations,
                    "job": job,
                    "done": done,
                }
            )
            if done:
                break
    finally:
        if not table.get_state(job).terminal:  # stopped early by ASHA: stop the job too
            table.set_state(job, JobState.CANCELLED)
            th.join(30)


def connect_ray(address: str | None) -> None:
    """Connect this process to the Ray cluster at ``address`` (``auto``: the one Ray finds)."""
    import ray

    ray.init(address=address or "auto", log_to_driver=False)


def run_sweep(path: str | Path, redis_url: str, storage: str | None = None) -> dict:
    """Run the sweep on the connected Ray cluster; returns {'trials': [...], 'best': {...}}."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    sweep, base = load_sweep(path)
    space = {field: _domain(field, dom) for field, dom in sweep.space.items()}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, sweep=sweep, redis_url=redis_url),
        {"cpu": 0, "memory": 64 * 2**20},  # the trial only watches its job; the job's workers take the CPUs
    )
    scheduler = ASHAScheduler(
        max_t=sweep.asha.max_t,
        grace_period=sweep.asha.grace_period,
        reduction_factor=sweep.asha.reduction_factor,
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="best_loss",
            mode="min",
            scheduler=scheduler,
            num_samples=sweep.num_samples,
            max_concurrent_trials=sweep.max_concurrent,
        ),
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    trials = []
    for r in results:
        m = r.metrics or {}
        trials.append(
            {
                "config": {k: r.config.get(k) for k in sweep.space},
                "best_loss": m.get("best_loss"),
                "evaluations": m.get("evaluations"),
                "iterations": m.get("training_iteration"),
                "job": m.get("job"),
                "error": str(r.error)[:200] if r.error else None,
            }
        )
    ok = [t for t in trials if t["best_loss"] is not None]
    best = min(ok, key=lambda t: t["best_loss"]) if ok else None
    best_spec = apply_config(base, best["config"]) if best else None
    return {"trials": trials, "best": best, "best_spec": best_spec}

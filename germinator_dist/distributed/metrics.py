"""A job's figures as Ray metrics (``ray.util.metrics``): wherever Ray's metrics go, these go too.

Each node's metrics agent serves them as Prometheus text on its metrics export port (``ray start
--metrics-export-port``, ``ray.init(_metrics_export_port=...)``), which Prometheus scrapes and Ray's
generated Grafana dashboards read. Ray prefixes every name with ``ray_`` and counters get ``_total``:
``ray_germinator_evaluations_total{job_id="..."}``. Every series carries the job id as the tag ``job_id``
(not ``job``: Prometheus sets its own ``job`` label on every scraped series).

Three sources, each in its own process: the driver (``DriverMetrics``, fed by ``SearchDriver``'s
``on_report`` seam), the workers (``WorkerMetrics``, in ``SeedWorker``) and the trainer
(``TrainerMetrics``, in ``TrainerActor``). Counters are fed cumulative totals and add the difference, so a
report that is skipped loses nothing.
"""

from __future__ import annotations

import math

from ray.util.metrics import Counter, Gauge

JOB_TAG = "job_id"

# name (without Ray's "ray_" prefix) -> description; counters end in "_total" when exported
DRIVER_COUNTERS = {
    "germinator_evaluations": "Candidates the search considered (screened and verified)",
    "germinator_candidates_screened": "Candidate seeds scored by the gradient screen",
    "germinator_swaps_accepted": "Swaps of component seeds the table accepted",
    "germinator_seed_commits_accepted": "Whole-vector seed commits the table accepted",
    "germinator_stale_drops": "Results dropped or refused because their slot or layer had moved on",
}
DRIVER_GAUGES = {
    "germinator_candidates_per_second": "Candidates considered per second (last 10 s)",
    "germinator_workers_live": "Search workers running",
    "germinator_workers_desired": "Search workers the job asks for",
    "germinator_best_loss": "The table's best fitness loss over its layers",
}
TRAINER_COUNTERS = {
    "germinator_trainer_steps": "Optimizer steps the scale trainer applied",
    "germinator_trainer_publishes": "Float publishes of the trainer the table accepted",
}
TRAINER_GAUGES = {
    "germinator_trainer_fitness_loss": "The trainer's fitness loss at its last publish round",
    "germinator_trainer_validation_loss": "The trainer's loss on the validation split",
}
WORKER_COUNTERS = {
    "germinator_worker_calls": "Calls (evaluate or swap) a search worker answered",
    "germinator_worker_candidates": "Candidates a search worker considered",
}


class _Counters:
    """Counters fed cumulative totals: each ``update`` adds what grew since the last one."""

    def __init__(self, names: dict[str, str], tags: dict[str, str]) -> None:
        keys = tuple(tags)
        self._counters = {n: Counter(n, description=d, tag_keys=keys) for n, d in names.items()}
        for c in self._counters.values():
            c.set_default_tags(tags)
        self._last = dict.fromkeys(names, 0.0)

    def update(self, **totals: float) -> None:
        for name, total in totals.items():
            delta = float(total) - self._last[name]
            if delta > 0:
                self._counters[name].inc(delta)
                self._last[name] = float(total)


class _Gauges:
    def __init__(self, names: dict[str, str], tags: dict[str, str]) -> None:
        keys = tuple(tags)
        self._gauges = {n: Gauge(n, description=d, tag_keys=keys) for n, d in names.items()}
        for g in self._gauges.values():
            g.set_default_tags(tags)

    def set(self, **values: float | None) -> None:
        for name, v in values.items():
            if v is not None and math.isfinite(v):  # nothing measured yet: leave the series as it was
                self._gauges[name].set(float(v))


class DriverMetrics:
    """The driver's figures; pass ``on_report`` to ``SearchDriver(on_report=...)``."""

    def __init__(self, job: str) -> None:
        tags = {JOB_TAG: job}
        self._counters = _Counters(DRIVER_COUNTERS, tags)
        self._gauges = _Gauges(DRIVER_GAUGES, tags)

    def on_report(self, fig) -> None:
        """``fig``: a ``search.progress_report.ReportFigures`` (this run's cumulative counters and the
        current gauges)."""
        s = fig.stats
        self._counters.update(
            germinator_evaluations=s.evaluations,
            germinator_candidates_screened=s.screened,
            germinator_swaps_accepted=s.swaps,
            germinator_seed_commits_accepted=s.accepted - s.swaps,
            germinator_stale_drops=s.stale,
        )
        self._gauges.set(
            germinator_candidates_per_second=fig.evals_per_s,
            germinator_workers_live=fig.workers_live,
            germinator_workers_desired=fig.workers_desired,
            germinator_best_loss=fig.best_loss,
        )


class TrainerMetrics:
    """The trainer's figures, fed its ``TrainerProgress`` after every publish round."""

    def __init__(self, job: str) -> None:
        tags = {JOB_TAG: job}
        self._counters = _Counters(TRAINER_COUNTERS, tags)
        self._gauges = _Gauges(TRAINER_GAUGES, tags)

    def on_round(self, progress) -> None:
        self._counters.update(germinator_trainer_steps=progress.steps,
                              germinator_trainer_publishes=progress.accepted)  # fmt: skip
        val = progress.validation.loss if progress.validation is not None else None
        self._gauges.set(germinator_trainer_fitness_loss=progress.fitness_loss,
                         germinator_trainer_validation_loss=val)  # fmt: skip


class WorkerMetrics:
    """One search worker's figures (tagged with the job and the worker id)."""

    def __init__(self, job: str, worker: str) -> None:
        self._counters = _Counters(WORKER_COUNTERS, {JOB_TAG: job, "worker": worker})
        self._calls = 0
        self._candidates = 0

    def on_call(self, candidates: int) -> None:
        self._calls += 1
        self._candidates += candidates
        self._counters.update(
            germinator_worker_calls=self._calls, germinator_worker_candidates=self._candidates
        )

"""The scale trainer as a Ray actor: runs ``trainer.run_trainer`` against the seed table on its own node.

The trainer and the seed search meet only in the Redis table: the actor connects to
Redis itself, loops sync -> train -> publish (compare-and-set per layer), and reports its totals. After
every round it exports its figures as Ray metrics (metrics.TrainerMetrics) and adds a point to the
job's trainer curve (the table document ``trainer_curve``: fitness and validation loss against time, what
``germinator-dist plot`` draws beside the stream).
"""

from __future__ import annotations

import json
import logging
import threading
import time

import ray

from germinator_dist.config import JobSpec
from germinator_dist.errors import GerminatorError

log = logging.getLogger("germinator.trainer")
CURVE_DOC = "trainer_curve"  # the table document holding the trainer's loss curve
CURVE_MAX_POINTS = 4000  # a longer curve keeps every other point (the whole run at half the resolution)
CURVE_WRITE_S = 1.0  # the curve is written to the table at most this often (and at the end)


@ray.remote(max_restarts=0)
class TrainerActor:
    def __init__(self, redis_url: str, spec_json: str, use_gpu: bool) -> None:
        from germinator_dist.core.data import load_dataset
        from germinator_dist.core.device import pick_device
        from germinator_dist.distributed.metrics import TrainerMetrics
        from germinator_dist.search.job_setup import fitness_batch
        from germinator_dist.table import SeedTable
        from germinator_dist.train.trainer import ScaleTrainer

        device = pick_device(use_gpu)
        self.spec = JobSpec.model_validate_json(spec_json)
        dataset = load_dataset(self.spec.data)
        self.table = SeedTable(redis_url)
        self.trainer = ScaleTrainer(
            self.spec.model,
            dataset,
            self.spec.trainer,
            fitness_batch(self.spec, dataset),
            device=device,
            seed=self.spec.search.rng_seed,
        )
        self.metrics = TrainerMetrics(self.spec.job)
        self.curve: dict[str, list] = {"time": [], "steps": [], "fitness_loss": [], "validation_loss": []}
        self._curve_written = 0.0
        self.stop_event = threading.Event()
        self.progress = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _record(self, progress, *, final: bool = False) -> None:
        """Add the round's point to the curve; write the curve to the table every CURVE_WRITE_S."""
        val = progress.validation.loss if progress.validation is not None else None
        point = (time.time(), progress.steps, progress.fitness_loss, val)
        for name, v in zip(self.curve, point):
            self.curve[name].append(v if v is None or v == v else None)  # NaN: not measured (JSON null)
        if len(self.curve["time"]) > CURVE_MAX_POINTS:
            self.curve = {k: v[::2] for k, v in self.curve.items()}
        if final or time.monotonic() - self._curve_written > CURVE_WRITE_S:
            self._curve_written = time.monotonic()
            self.table.put_doc(self.spec.job, CURVE_DOC, json.dumps(self.curve))

    def _on_round(self, progress) -> None:
        self.progress = progress
        self.metrics.on_round(progress)
        self._record(progress)
        self.table.heartbeat(
            self.spec.job,
            "trainer",
            "trainer",
            ttl=30.0,
            payload={
                "steps": progress.steps,
                "accepted": progress.accepted,
                "fitness_loss": progress.fitness_loss,
            },
        )

    def _loop(self) -> None:
        from germinator_dist.train.trainer import run_trainer

        try:
            self.progress = run_trainer(
                self.trainer, self.table, self.spec.job, self.stop_event, on_round=self._on_round
            )
            self.metrics.on_round(self.progress)
        except Exception as exc:  # noqa: BLE001 - reported to the runner
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("trainer failed")
            return
        try:
            if self.progress.rounds:
                self._record(self.progress, final=True)  # the curve's last point
        except GerminatorError as exc:  # the curve is a courtesy: the table may be gone at the end
            log.warning("trainer curve not written: %s", exc)

    def stop(self) -> None:
        self.stop_event.set()

    def status(self) -> dict:
        return {
            "alive": self.thread.is_alive(),
            "error": self.error,
            "progress": None if self.progress is None else self.progress.model_dump(mode="json"),
        }


class TrainerHandle:
    """The runner's side: wait for the trainer's budget, or stop it when the search is done."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def status(self, timeout: float = 30.0) -> dict:
        return ray.get(self.actor.status.remote(), timeout=timeout)

    def wait_or_stop(
        self, search_done: bool, poll_s: float = 0.5, first_round_timeout_s: float = 600.0
    ) -> dict:
        """Hybrid: once the trainer has had at least one publication accepted, stop it (its current round
        ends with a publish). Train-only: wait until its own budget ends. Returns its last status."""
        import time

        deadline = time.monotonic() + first_round_timeout_s
        stopped = False
        while True:
            st = self.status()
            if not st["alive"]:
                if st["error"]:
                    log.warning("trainer ended with an error: %s", st["error"])
                return st
            accepted = (st["progress"] or {}).get("accepted", 0)
            if search_done and not stopped and (accepted >= 1 or time.monotonic() > deadline):
                ray.get(self.actor.stop.remote(), timeout=30)
                stopped = True
            time.sleep(poll_s)

    def shutdown(self) -> None:
        try:
            ray.get(self.actor.stop.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        ray.kill(self.actor, no_restart=True)


def start_trainer(redis_url: str, spec: JobSpec) -> TrainerHandle:
    actor = TrainerActor.options(
        num_cpus=spec.workers.cpus, num_gpus=spec.workers.gpus, scheduling_strategy="DEFAULT"
    ).remote(redis_url, spec.model_dump_json(), spec.workers.gpus > 0)
    return TrainerHandle(actor)

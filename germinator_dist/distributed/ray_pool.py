"""Ray side of the evaluator pool: ``SeedWorker`` actors and ``RayPool`` (the EvaluatorPool for clusters).

A worker receives the model spec and the fitness batch once (the batch through the object store, at
construction) and then only small messages: a layer index, candidate seed vectors, the snapshot's seeds,
floats and versions. It answers with an EvalResult as a plain dict (losses, floats, versions) -- never a
tensor. Workers that ask for GPUs generate and compute on the GPU.

Failures: a call on a dead worker (actor died, node lost) raises; the pool reports that batch as lost
(the driver re-dispatches it), kills and forgets the worker, and ``resize`` starts a replacement as soon as
the cluster has room. Nothing here waits without a timeout.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from germinator_dist.records import EvalResult, Snapshot, SwapResult, SwapTask
from germinator_dist.search.pool import Completion, PoolStatus, Task

log = logging.getLogger("germinator.ray_pool")
GET_TIMEOUT_S = 30.0
WAITING_AFTER_S = 3.0  # a worker not running this long after it was asked for gets a reason in status


@ray.remote(max_restarts=0, max_task_retries=0)
class SeedWorker:
    """Holds a LayerEvaluator; evaluates batches of candidates for one layer at a time."""

    def __init__(
        self,
        spec_json: str,
        inputs: np.ndarray,
        targets: np.ndarray,
        worker_id: str,
        use_gpu: bool,
        job: str = "",
    ) -> None:
        import torch

        from germinator_dist.config import ModelSpec
        from germinator_dist.core.device import pick_device
        from germinator_dist.core.model import Batch
        from germinator_dist.distributed.metrics import WorkerMetrics
        from germinator_dist.search.evaluator import LayerEvaluator

        device = pick_device(use_gpu)
        batch = Batch(torch.from_numpy(np.array(inputs)), torch.from_numpy(np.array(targets)))
        self.evaluator = LayerEvaluator(
            ModelSpec.model_validate_json(spec_json), batch, device, worker_id=worker_id
        )
        self.id = worker_id
        self._snapshot_json = ""
        self._snapshot: Snapshot | None = None
        self.metrics = WorkerMetrics(job, worker_id)  # Ray metrics: calls and candidates of this worker

    def ping(self) -> dict:
        import os
        import socket

        return {
            "worker": self.id,
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(self.evaluator.device),
        }

    def _parsed(self, snapshot_json: str) -> Snapshot:
        """The snapshot a call carries (the same one for many calls in a row: parsed once)."""
        if self._snapshot is None or snapshot_json != self._snapshot_json:
            self._snapshot = Snapshot.model_validate_json(snapshot_json)
            self._snapshot_json = snapshot_json
        return self._snapshot

    def evaluate(
        self, layer: int, candidates: list[list[int]], snapshot_json: str, refit_steps: int, refit_lr: float
    ) -> dict:
        res = self.evaluator.run(self._parsed(snapshot_json), layer, candidates, refit_steps, refit_lr)
        self.metrics.on_call(len(candidates))
        return res.model_dump(mode="json")

    def swap(self, task_json: str, snapshot_json: str, seed_bits: int) -> dict:
        """A swap call (records.SwapTask as JSON) against the snapshot; returns a SwapResult as JSON."""
        task = SwapTask.model_validate_json(task_json)
        res = self.evaluator.run(self._parsed(snapshot_json), task.layer, (), swap=task, seed_bits=seed_bits)
        self.metrics.on_call(sum(st.block.count for st in task.slots))
        return res.model_dump(mode="json")


class RayPool:
    """EvaluatorPool of SeedWorker actors. Call from the driver process (inside a Ray job or driver)."""

    def __init__(
        self,
        spec_json: str,
        inputs: np.ndarray,
        targets: np.ndarray,
        *,
        cpus: float = 1.0,
        gpus: float = 0.0,
        name_prefix: str = "w",
        start_timeout_s: float = 600.0,
        job: str = "",
    ) -> None:
        self._job = job  # the job id the workers tag their Ray metrics with
        self._spec_json = spec_json
        self._inputs_ref = ray.put(inputs)  # sent to each worker once, at construction
        self._targets_ref = ray.put(targets)
        self._cpus, self._gpus = cpus, gpus
        self._prefix = name_prefix
        self._ids = itertools.count()
        self._actors: dict[str, ray.actor.ActorHandle] = {}
        self._ready: dict[str, dict] = {}  # worker -> ping info, once started
        self._starting: dict[str, ray.ObjectRef] = {}  # worker -> pending ping
        self._retiring: set[str] = set()
        self._refs: dict[ray.ObjectRef, tuple[str, Task]] = {}
        self._per_worker: Counter[str] = Counter()  # worker -> calls in flight (O(1) in_flight)
        self._snap_json: tuple[object, str] | None = None  # the last snapshot sent and its JSON
        self._lost = 0
        self._start_timeout = start_timeout_s
        self._started_at: dict[str, float] = {}
        self._waiting: tuple[float, int, str] = (0.0, 0, "")  # (when, how many, reason): refreshed every 2 s

    # ---- membership -----------------------------------------------------------------------------
    def _start(self) -> None:
        wid = f"{self._prefix}{next(self._ids)}"
        # scheduling_strategy set explicitly: never captured by a caller's placement group (e.g. a Tune trial)
        actor = SeedWorker.options(
            num_cpus=self._cpus, num_gpus=self._gpus, scheduling_strategy="DEFAULT"
        ).remote(self._spec_json, self._inputs_ref, self._targets_ref, wid, self._gpus > 0, self._job)
        self._actors[wid] = actor
        self._starting[wid] = actor.ping.remote()
        self._started_at[wid] = time.monotonic()

    def _kill(self, wid: str) -> None:
        actor = self._actors.pop(wid, None)
        self._ready.pop(wid, None)
        self._starting.pop(wid, None)
        self._retiring.discard(wid)
        self._started_at.pop(wid, None)
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except RayError:  # already gone
                pass

    def _check_starting(self) -> None:
        if not self._starting:
            return
        refs = list(self._starting.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        by_ref = {r: w for w, r in self._starting.items()}
        for ref in ready:
            wid = by_ref[ref]
            del self._starting[wid]
            try:
                self._ready[wid] = ray.get(ref, timeout=GET_TIMEOUT_S)
            except (RayError, GetTimeoutError) as exc:
                log.warning("worker %s failed to start: %s", wid, exc)
                self._lost += 1
                self._kill(wid)

    def resize(self, n: int) -> None:
        self._check_starting()
        active = [w for w in self._actors if w not in self._retiring]
        for _ in range(n - len(active)):
            self._start()
        if len(active) > n:
            # retire the ones not yet started first, then the newest ready ones
            extra = len(active) - n
            order = [w for w in active if w in self._starting] + [
                w for w in reversed(active) if w in self._ready
            ]
            for wid in order[:extra]:
                if wid in self._starting:
                    self._kill(wid)
                else:
                    self._retiring.add(wid)
        self._reap()

    def _reap(self) -> None:
        for wid in list(self._retiring):
            if self.in_flight(wid) == 0:
                self._kill(wid)

    def status(self) -> PoolStatus:
        self._check_starting()
        live = [w for w in self._ready if w not in self._retiring]
        return PoolStatus(
            live=live,
            starting=len(self._starting),
            retiring=len(self._retiring),
            lost=self._lost,
            nodes={w: self._ready[w].get("node", "") for w in live},
            waiting=self._waiting_reason(),
        )

    def _waiting_reason(self) -> str:
        """Why workers asked for are not running: "" while none has waited WAITING_AFTER_S, else the
        reason naming the resources (capacity.waiting_reason), re-read from Ray at most every 2 s."""
        now = time.monotonic()
        n = sum(now - self._started_at.get(w, now) > WAITING_AFTER_S for w in self._starting)
        if n == 0:
            return ""
        at, count, reason = self._waiting
        if count != n or now - at > 2.0:
            from germinator_dist.distributed.capacity import waiting_reason

            try:
                reason = waiting_reason(self._cpus, self._gpus, n)
            except Exception as exc:  # noqa: BLE001 - a reason is a courtesy; never stop the search for it
                reason = f"{n} worker{'s' if n != 1 else ''} not running ({type(exc).__name__})"
            self._waiting = (now, n, reason)
        return reason

    def workers_info(self) -> dict[str, dict]:
        return dict(self._ready)

    # ---- tasks ----------------------------------------------------------------------------------
    def in_flight(self, worker: str) -> int:
        return self._per_worker[worker]

    def submit(self, worker: str, task: Task) -> None:
        if self._snap_json is None or self._snap_json[0] is not task.snapshot:  # one dump per snapshot
            self._snap_json = (task.snapshot, task.snapshot.model_dump_json())
        if task.swap is not None:
            ref = self._actors[worker].swap.remote(
                task.swap.model_dump_json(), self._snap_json[1], task.seed_bits
            )
        else:
            ref = self._actors[worker].evaluate.remote(
                task.layer,
                [list(c.seeds) for c in task.candidates],
                self._snap_json[1],
                task.refit_steps,
                task.refit_lr,
            )
        self._refs[ref] = (worker, task)
        self._per_worker[worker] += 1

    def poll(self, timeout: float) -> list[Completion]:
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is already done too
            more, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        out = []
        for ref in ready:
            worker, task = self._refs.pop(ref)
            self._per_worker[worker] -= 1
            try:
                kind = SwapResult if task.swap is not None else EvalResult
                result = kind.model_validate(ray.get(ref, timeout=GET_TIMEOUT_S))
                out.append(Completion(task, worker, result=result))
            except RayActorError as exc:  # worker or its node died: the batch is lost, the worker gone
                out.append(Completion(task, worker, error=f"{type(exc).__name__}", worker_lost=True))
                if worker in self._actors:
                    self._lost += 1
                    self._kill(worker)
            except (RayError, GetTimeoutError) as exc:
                out.append(Completion(task, worker, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
        self._reap()
        return out

    def shutdown(self) -> None:
        for wid in list(self._actors):
            self._kill(wid)
        self._refs.clear()
        self._per_worker.clear()

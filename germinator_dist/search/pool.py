"""The parallelism seam: an evaluator pool the driver submits tasks to (like nevergrad's executor protocol).

``LocalPool`` runs evaluators on threads in this process (tests, one machine); ``RayPool``
(distributed/ray_pool.py) runs them as Ray actors across a cluster. The driver only sees this protocol, so it
imports no Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
from dataclasses import dataclass, field
from typing import Protocol

from germinator_dist.records import Candidate, EvalResult, Snapshot, SwapResult, SwapTask


@dataclass
class Task:
    """A batch of candidates for one layer, evaluated against one snapshot."""

    id: int
    layer: int
    candidates: tuple[Candidate, ...]
    snapshot: Snapshot
    refit_steps: int = 0
    refit_lr: float = 0.02
    attempts: int = 0
    swap: SwapTask | None = None  # a swap call (candidates then empty)
    seed_bits: int = 16

    @property
    def size(self) -> int:
        """Candidates this task considers (a swap call: those its slots' blocks hold)."""
        if self.swap is not None:
            return sum(st.block.count for st in self.swap.slots)
        return len(self.candidates)


@dataclass
class Completion:
    """A finished task: a result, or the error that lost it (its worker is then gone)."""

    task: Task
    worker: str
    result: EvalResult | None = None
    error: str | None = None
    worker_lost: bool = False


@dataclass
class PoolStatus:
    live: list[str] = field(default_factory=list)  # workers that accept tasks
    starting: int = 0  # asked for, not yet ready (e.g. waiting for resources)
    retiring: int = 0
    lost: int = 0  # workers lost to failures since the start
    nodes: dict[str, str] = field(default_factory=dict)  # worker -> node id / host
    waiting: str = ""  # why desired workers are not running yet (e.g. no node can place them), or ""


class EvaluatorPool(Protocol):
    def resize(self, n: int) -> None:
        """Aim for ``n`` live workers: start new ones, retire extra ones after their in-flight tasks."""

    def status(self) -> PoolStatus: ...

    def in_flight(self, worker: str) -> int: ...

    def submit(self, worker: str, task: Task) -> None: ...

    def poll(self, timeout: float) -> list[Completion]:
        """Completions available within ``timeout`` seconds (possibly none)."""

    def shutdown(self) -> None: ...


def run_task(evaluator, task: Task) -> EvalResult | SwapResult:
    """Evaluate a task on a LayerEvaluator: ``LayerEvaluator.run``, which the Ray worker calls too."""
    candidates = [c.seeds for c in task.candidates]
    return evaluator.run(
        task.snapshot, task.layer, candidates, task.refit_steps, task.refit_lr, swap=task.swap,
        seed_bits=task.seed_bits,
    )  # fmt: skip


class LocalPool:
    """Evaluators on threads of this process; each worker owns one LayerEvaluator."""

    def __init__(self, make_evaluator) -> None:
        self._make = make_evaluator  # (worker_id) -> LayerEvaluator
        self._ids = itertools.count()
        self._workers: dict[str, object] = {}
        self._executors: dict[str, cf.ThreadPoolExecutor] = {}
        self._futures: dict[cf.Future, tuple[str, Task]] = {}
        self._retiring: set[str] = set()
        self._lock = threading.Lock()

    def resize(self, n: int) -> None:
        active = [w for w in self._workers if w not in self._retiring]
        while len(active) < n:
            wid = f"local-{next(self._ids)}"
            self._workers[wid] = self._make(wid)
            self._executors[wid] = cf.ThreadPoolExecutor(1, thread_name_prefix=wid)
            active.append(wid)
        for wid in active[n:]:
            self._retiring.add(wid)
        self._reap()

    def _reap(self) -> None:
        for wid in list(self._retiring):
            if self.in_flight(wid) == 0:
                self._executors.pop(wid).shutdown(wait=False)
                self._workers.pop(wid)
                self._retiring.discard(wid)

    def status(self) -> PoolStatus:
        live = [w for w in self._workers if w not in self._retiring]
        return PoolStatus(live=live, retiring=len(self._retiring), nodes={w: "local" for w in live})

    def in_flight(self, worker: str) -> int:
        return sum(1 for w, _ in self._futures.values() if w == worker)

    def submit(self, worker: str, task: Task) -> None:
        fut = self._executors[worker].submit(run_task, self._workers[worker], task)
        self._futures[fut] = (worker, task)

    def poll(self, timeout: float) -> list[Completion]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for fut in done:
            worker, task = self._futures.pop(fut)
            exc = fut.exception()
            if exc is None:
                out.append(Completion(task, worker, result=fut.result()))
            else:
                out.append(Completion(task, worker, error=f"{type(exc).__name__}: {exc}"))
        self._reap()
        return out

    def shutdown(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=True, cancel_futures=True)
        self._executors.clear()
        self._workers.clear()
        self._futures.clear()

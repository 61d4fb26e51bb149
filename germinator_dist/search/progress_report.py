"""The search driver's progress reports: its counters (``DriverStats``), what its ``on_report`` hook gets
(``ReportFigures``), and the ``ProgressReporter`` that writes the job's progress counters and the driver's
and workers' heartbeats to the table without stalling the dispatch loop.

Pure: the table is any ``table_protocol.SeedTableLike``, the pool any ``search.pool.EvaluatorPool``.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from germinator_dist.search.pool import EvaluatorPool
from germinator_dist.table_protocol import SeedTableLike

WORKER_TTL = 10.0  # seconds a worker's heartbeat in the table lives
WORKER_HEARTBEAT_S = WORKER_TTL / 4  # each live worker's heartbeat is refreshed about this often
RATE_WINDOW_S = 10.0  # the candidates-per-second figure is taken over about this long


@dataclass
class DriverStats:
    evaluations: int = 0
    accepted: int = 0
    stale: int = 0
    not_better: int = 0
    redispatched: int = 0
    lost_workers: int = 0
    seconds: float = 0.0
    swaps: int = 0  # accepted swaps of component slots (swap mode)
    screened: int = 0  # candidates scored by the gradient screen
    swap_gain: float = 0.0  # fitness loss gained by accepted swaps, each against its own incumbent


@dataclass(frozen=True)
class ReportFigures:
    """What the driver hands its ``on_report`` hook at every progress report (e.g. Ray metrics,
    ``distributed.metrics.DriverMetrics``): this run's cumulative counters and the current gauges."""

    stats: DriverStats
    evals_per_s: float
    workers_live: int
    workers_desired: int
    best_loss: float  # the table's best layer loss in the driver's latest snapshot (inf before any)
    waiting: str = ""  # why desired workers are not running (the pool's reason), or ""


class ProgressReporter:
    """Counts the driver's work and reports it: the table's progress counters (deltas since the last
    report), the candidates-per-second rate, the driver's heartbeat (with the swap search's figures and
    why workers wait) and each live worker's heartbeat, spread so that each is refreshed about every
    ``WORKER_HEARTBEAT_S``."""

    def __init__(
        self,
        table: SeedTableLike,
        job: str,
        pool: EvaluatorPool,
        *,
        driver_id: str,
        interval: float,
        call_size: Callable[[str], int],
        swap_figures: bool = False,
        on_report: Callable[[ReportFigures], None] | None = None,
    ) -> None:
        self.table, self.job, self.pool = table, job, pool
        self.driver_id, self.interval = driver_id, interval
        self.call_size, self.swap_figures, self.on_report = call_size, swap_figures, on_report
        self.stats = DriverStats()  # this run's totals
        self._unreported = DriverStats()  # what the table's counters have not been given yet
        self._window: deque[tuple[float, int]] = deque()  # (time, evaluations) for the rate
        self._heartbeat_at: dict[str, float] = {}  # worker -> when its heartbeat was last written
        self._last_report = self._started = time.monotonic()
        self._writer: cf.ThreadPoolExecutor | None = None
        self._pending: cf.Future | None = None

    def count(self, **deltas: int | float) -> None:
        """Add to this run's counters (and to what the next report writes)."""
        for name, d in deltas.items():
            setattr(self.stats, name, getattr(self.stats, name) + d)
            setattr(self._unreported, name, getattr(self._unreported, name) + d)

    def start(self) -> None:
        """Write the reports from a background thread from now on (``close`` ends it)."""
        self._writer = cf.ThreadPoolExecutor(1, thread_name_prefix="germ-driver-report")

    def report(self, *, desired: int, best_loss: float, final: bool = False) -> None:
        """Write progress and heartbeats to the table. The counters, the rate and the pool's status are
        read here; the Redis writes (one round trip each, fsynced under ``appendfsync always``) go to the
        background thread so that they never stall dispatching. A write that failed raises here, at the
        next report; the final report writes synchronously after the last background one."""
        now = time.monotonic()
        window = self._window
        window.append((now, self.stats.evaluations))
        while len(window) > 2 and now - window[0][0] > RATE_WINDOW_S:
            window.popleft()
        span = max(window[-1][0] - window[0][0], 1e-9)
        rate = (window[-1][1] - window[0][1]) / span if len(window) > 1 else 0.0
        pending = self._pending
        if pending is not None and not pending.done() and not final:
            return  # the previous report is still being written: its counters stay unreported
        self._pending = None
        if pending is not None:
            pending.result()  # re-raise a failed background write (waits for it on the final report)
        st = self.pool.status()
        if self.on_report is not None:
            self.on_report(
                ReportFigures(replace(self.stats), float(rate), len(st.live), desired, best_loss, st.waiting)
            )
        unreported, self._unreported = self._unreported, DriverStats()
        write = functools.partial(self._write, unreported, float(rate), st, self._workers_due(st, now))
        if final or self._writer is None:
            write()
        else:
            self._pending = self._writer.submit(write)

    def close(self) -> None:
        """Stop the background writer (after its last write)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        self._writer, self._pending = None, None

    def _write(self, u: DriverStats, rate: float, st, workers: list[str]) -> None:
        self.table.update_progress(
            self.job,
            evaluations=u.evaluations,
            accepted=u.accepted,
            stale=u.stale,
            not_better=u.not_better,
            evals_per_s=rate,
            workers_live=len(st.live),
        )
        payload = {"pid": os.getpid(), "host": socket.gethostname(), "lost_workers": self.stats.lost_workers}
        if st.waiting:  # why desired workers are not running (status shows it)
            payload["workers_waiting"] = st.waiting[:1000]
        if self.swap_figures:  # the swap search's own figures, for status
            secs = max(1e-9, time.monotonic() - self._started)
            payload |= {
                "swaps": self.stats.swaps,
                "screened": self.stats.screened,
                "screened_per_s": round(self.stats.screened / secs, 1),
                "swap_gain": round(self.stats.swap_gain, 6),
            }
        self.table.heartbeat(
            self.job, "driver", self.driver_id, ttl=max(5.0, 10 * self.interval), payload=payload
        )
        for w in workers:
            payload = {"node": st.nodes.get(w, ""), "call_size": self.call_size(w)}
            self.table.heartbeat(self.job, "worker", w, ttl=WORKER_TTL, payload=payload)

    def _workers_due(self, st, now: float) -> list[str]:
        """Live workers whose heartbeat to write now: new ones at once, the others spread so that each is
        refreshed about every WORKER_HEARTBEAT_S (one Redis round trip per worker: hundreds of workers
        must not cost hundreds of round trips per progress report)."""
        live = set(st.live)
        for w in [w for w in self._heartbeat_at if w not in live]:
            del self._heartbeat_at[w]
        since = max(now - self._last_report, self.interval)
        self._last_report = now
        quota = math.ceil(len(st.live) * since / WORKER_HEARTBEAT_S)
        order = sorted(st.live, key=lambda w: self._heartbeat_at.get(w, -math.inf))
        due = []
        for i, w in enumerate(order):
            if i >= quota and now - self._heartbeat_at.get(w, -math.inf) < WORKER_HEARTBEAT_S:
                break
            due.append(w)
            self._heartbeat_at[w] = now
        return due

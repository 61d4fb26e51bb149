"""One driver per job: the table's lease together with Ray's view of its holder (docs/table.md).

``submit`` creates a job with its lease held by the Ray submission id of the runner it is about to start;
``resume`` claims the lease the same way (replacing a holder only when Ray says that holder's job has
ended, or when the holder is unknown to Ray and its lease has expired); the runner takes the lease over
under the same id, renews it (``LeaseKeeper``) and releases it with its final state. A claim that finds a
live holder is refused with ``JobBusy`` naming it. ``driver_fields`` tells ``status`` whether the job's
driver runs, is starting, or is gone (and since when).

Ray's Job Submission client is imported lazily (this module is loaded by the CLI) and always used with a
timeout of its own (``GERMINATOR_RAY_TIMEOUT``, seconds, default 30).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from germinator_dist.errors import ConnectionFailed, GerminatorError, JobBusy, JobNotFound, SpecError
from germinator_dist.records import JobState

log = logging.getLogger("germinator.lease")
START_TTL_S = 60.0  # the lease submit/resume take for a runner that has not started yet
RUN_TTL_S = 15.0  # the running driver's lease
RENEW_EVERY_S = 3.0  # how often the driver renews it
END_GRACE_S = 3.0  # resume: how long to wait for Ray to see the end of a holder it still calls RUNNING
RAY_TIMEOUT_ENV = "GERMINATOR_RAY_TIMEOUT"
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")
INTERRUPTS = (signal.SIGTERM, signal.SIGHUP, signal.SIGABRT)


def new_owner(job: str) -> str:
    """A fresh lease owner id for ``job``, also the Ray submission id of the runner it starts."""
    return f"germ-{job}-{int(time.time() * 1000)}-{secrets.token_hex(3)}"


def ray_timeout() -> float:
    """Seconds any one Job Submission API request may take (``GERMINATOR_RAY_TIMEOUT``, default 30)."""
    raw = os.environ.get(RAY_TIMEOUT_ENV, "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise SpecError(f"{RAY_TIMEOUT_ENV}: {raw!r} is not a number of seconds in (0, 3600]")
    return value


_CLIENT_CLASS: Any = None


def job_client(address: str, source: str, timeout: float | None = None, *, shown: str | None = None):
    """A Ray JobSubmissionClient for ``address`` whose every request gives up after ``timeout`` seconds
    (default: ``ray_timeout()``; the client's ``request_timeout`` attribute may be lowered later).

    Raises ConnectionFailed naming the address as ``shown`` (credentials redacted) and where it came from.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from ray.job_submission import JobSubmissionClient

        class TimedClient(JobSubmissionClient):
            """Every HTTP request (the version check in the constructor too) with a timeout."""

            def __init__(self, address: str, *, request_timeout: float) -> None:
                self.request_timeout = request_timeout
                super().__init__(address)

            def _do_request(self, method, endpoint, **kwargs):
                kwargs.setdefault("timeout", self.request_timeout)
                return super()._do_request(method, endpoint, **kwargs)

        _CLIENT_CLASS = TimedClient
    limit = ray_timeout() if timeout is None else timeout
    try:
        return _CLIENT_CLASS(address, request_timeout=limit)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster
        raise ConnectionFailed(no_answer(shown or address, source, exc, limit)) from None


def no_answer(address: str, source: str, exc: BaseException, limit: float) -> str:
    """The one-line error for a Ray address that failed or did not answer within ``limit`` seconds."""
    if "Timeout" in type(exc).__name__:
        return f"ray (from {source}): {address} did not answer within {limit:g}s ({RAY_TIMEOUT_ENV})"
    return f"ray (from {source}): {address} does not answer ({type(exc).__name__})"


@dataclass(frozen=True)
class HolderView:
    """What Ray says about a lease holder's runner (its job's submission id is the owner id)."""

    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED, or UNKNOWN (Ray has no such job)
    ended_at: float | None = None  # when it ended (seconds since the epoch), for a terminal status
    message: str = ""

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


def holder_view(client, owner: str, address: str, source: str) -> HolderView:
    """Ray's view of ``owner``'s runner. Raises ConnectionFailed when Ray does not answer."""
    try:
        info = client.get_job_info(owner)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            return HolderView("UNKNOWN")
        raise ConnectionFailed(f"ray (from {source}): {address}: {str(exc)[:200]}") from None
    except Exception as exc:  # noqa: BLE001 - timeouts, refused connections
        raise ConnectionFailed(no_answer(address, source, exc, client.request_timeout)) from None
    status = str(getattr(info.status, "value", info.status))
    end = info.end_time / 1000 if info.end_time else None
    return HolderView(status, end if status in TERMINAL else None, (info.message or "")[:200])


def holder_to_replace(table, client, job: str, address: str, source: str, grace: float = END_GRACE_S) -> str:
    """The lease holder a new claim may replace ('' when nobody holds the lease).

    A holder is replaced when Ray says its runner has ended, or when Ray does not know it and its lease has
    expired. While Ray still calls it RUNNING, this waits up to ``grace`` seconds for Ray to notice its end
    (a driver killed a moment ago). Raises JobBusy naming a live holder, ConnectionFailed.
    """
    deadline = time.monotonic() + grace
    while True:
        held = table.lease(job)
        if held is None:
            return ""
        view = holder_view(client, held.owner, address, source)
        if view.ended or (view.status == "UNKNOWN" and held.expired):
            return held.owner
        if view.status != "RUNNING" or time.monotonic() >= deadline:
            raise JobBusy(
                f"job {job} already has a driver: {held.owner} holds its lease (Ray job {view.status}); "
                f"cancel it first, or wait for it to end"
            )
        time.sleep(0.2)


def driver_fields(table, job: str, state: JobState, heartbeat: bool, client=None, where=("", "")) -> dict:
    """What ``status`` says about the job's driver: ``driver`` is running, starting, gone or none (no
    driver: the job is not running), with the lease holder, since when it is gone and why.

    ``client`` (a Job Submission client, or None) adds Ray's view of the holder; without it a holder is
    gone once its lease has expired. ``heartbeat``: whether a driver heartbeat is live.
    """
    held = table.lease(job)
    out: dict[str, Any] = {"driver": "none", "driver_owner": held.owner if held else None}
    out |= {"driver_gone_since": None, "driver_note": None}
    if held is None:
        if state in (JobState.RUNNING, JobState.PENDING):
            out |= {"driver": "gone", "driver_note": "no driver holds the job's lease"}
        return out
    view = None
    if client is not None:
        try:
            view = holder_view(client, held.owner, *where)
        except ConnectionFailed as exc:
            out["driver_note"] = str(exc)
    if view is not None and view.ended:
        note = f"its Ray job {held.owner} is {view.status}" + (f": {view.message}" if view.message else "")
        return out | {"driver": "gone", "driver_gone_since": view.ended_at, "driver_note": note}
    if held.expired and (view is None or view.status == "UNKNOWN"):
        note = f"its lease expired and was not renewed ({held.owner})"
        return out | {"driver": "gone", "driver_gone_since": held.expires_at, "driver_note": note}
    return out | {
        "driver": "running" if heartbeat and (view is None or view.status == "RUNNING") else "starting"
    }


class LeaseKeeper:
    """The runner's side: renews its lease every ``every`` seconds in a daemon thread. When the lease is no
    longer its own (taken over after it expired, or the job was deleted), calls ``on_lost`` once."""

    def __init__(
        self,
        table,
        job: str,
        owner: str,
        on_lost: Callable[[], None],
        ttl: float = RUN_TTL_S,
        every: float = RENEW_EVERY_S,
    ) -> None:
        self.table, self.job, self.owner, self.on_lost = table, job, owner, on_lost
        self.ttl, self.every = ttl, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="germ-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.every + 30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                mine = self.table.renew_lease(self.job, self.owner, self.ttl)
            except JobNotFound:
                mine = False
            except GerminatorError as exc:  # Redis unreachable for now: try again at the next tick
                log.warning("job %s: renewing the driver lease failed: %s", self.job, exc)
                continue
            if not mine and not self._stop.is_set():
                log.error(
                    "job %s: lease %s lost (another driver holds the job); stopping", self.job, self.owner
                )
                self.on_lost()
                return


@contextmanager
def signals_interrupt() -> Iterator[list[str]]:
    """While the block runs (in the main thread), SIGTERM, SIGHUP and SIGABRT raise KeyboardInterrupt as
    Ctrl-C does, so that ``except BaseException`` cleanup runs. Yields a list that names the signal."""
    got: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, _frame):
        got.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in INTERRUPTS}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C, SIGTERM, SIGHUP and SIGABRT are ignored while the block (an undo) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, *INTERRUPTS)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)

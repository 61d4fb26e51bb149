"""What the search driver, the scale trainer and a job's lifecycle need from a seed table, as typing
protocols.

``germinator_dist.table.SeedTable`` (Redis) implements both; ``tests/unit/memory_table.py`` is an
in-memory implementation with the same commit rules for unit tests of the driver's logic. The rules
themselves (compare-and-set per row, per slot generations, slot-merging publishes) are in docs/table.md
and docs/layout.md. Pure: records only, no Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from germinator_dist.records import (
    CommitOutcome,
    JobInfo,
    JobState,
    LayerEntry,
    Progress,
    PublishOutcome,
    Snapshot,
    SwapCommit,
)


class JobRegistry(Protocol):
    """What one job's lifecycle needs (``search/job_setup.py``): register the job, read its spec and
    registry row, write its initial rows under its driver lease, keep small documents."""

    def create_job(
        self,
        job: str,
        spec_json: str,
        layers: Sequence[LayerEntry] = (),
        desired_workers: int = 1,
        *,
        resume: bool = False,
        seed_bits: int = 63,
        lease: tuple[str, float] | None = None,
    ) -> JobInfo: ...

    def init_rows(self, job: str, owner: str, spec_json: str, layers: Sequence[LayerEntry]) -> bool: ...

    def job_info(self, job: str) -> JobInfo: ...

    def get_spec(self, job: str) -> str: ...

    def release_lease(self, job: str, owner: str, final: JobState | str | None = None) -> bool: ...

    def delete_job(self, job: str, *, owner: str | None = None, unheld: bool = False) -> bool: ...

    def get_doc(self, job: str, name: str) -> str | None: ...

    def put_doc(self, job: str, name: str, text: str) -> None: ...


class FloatTable(Protocol):
    """What the trainer loop needs: read the table, publish floats slot by slot, see the job's state."""

    def snapshot(self, job: str) -> Snapshot: ...

    def publish_floats(
        self, job: str, layer: int, floats: Sequence[float], loss: float, gens: Sequence[int]
    ) -> PublishOutcome: ...

    def get_state(self, job: str) -> JobState: ...


class SeedTableLike(FloatTable, Protocol):
    """What the search driver needs on top of the trainer's part: commits, progress, heartbeats, the
    desired worker count and the job's small documents (the proposers' saved states)."""

    def commit_seeds(
        self,
        job: str,
        layer: int,
        expected_version: int,
        seeds: Sequence[int],
        floats: Sequence[float],
        loss: float,
        evaluator_id: str = "",
    ) -> CommitOutcome: ...

    def commit_swaps_many(self, job: str, swaps: Sequence[SwapCommit]) -> list[CommitOutcome]: ...

    def progress(self, job: str) -> Progress: ...

    def update_progress(
        self,
        job: str,
        *,
        evaluations: int = 0,
        accepted: int = 0,
        stale: int = 0,
        not_better: int = 0,
        evals_per_s: float | None = None,
        workers_live: int | None = None,
    ) -> None: ...

    def heartbeat(
        self, job: str, role: str, member: str, *, ttl: float = 10.0, payload: dict | None = None
    ) -> None: ...

    def desired_workers(self, job: str) -> int: ...

    def get_doc(self, job: str, name: str) -> str | None: ...

    def put_doc(self, job: str, name: str, text: str) -> None: ...

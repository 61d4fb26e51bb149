"""Small typed records exchanged between the driver, workers, trainer and the seed table.

They carry seeds, float scalars, losses and versions -- never tensors. All are frozen pydantic models, so
they validate on construction and serialize to plain JSON (no pickle anywhere on the wire or in Redis).

Layout conventions shared by every part of the system (docs/layout.md):
  * a layer of rank r has ``r + 4`` seeds: the component seeds ``s_0 .. s_{r-1}`` (slot k = rank
    component k), then the layer seeds ``mask, scale, shift, bias`` (``seed_names(r)``);
  * every seed slot has a generation: how many accepted changes of that slot's seed the table has seen
    (a slot-level commit is judged against its own slot's generation, docs/layout.md);
  * a layer's floats are one flat list ``[alpha, beta, g(r), e[0][0](r), e[0][1](r), ..., e[k-1][e_k-1](r)]``
    (see ``germinator_dist.core.layers.SeedLinear.float_names``).
"""

from __future__ import annotations

import enum
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LAYER_SEED_NAMES: tuple[str, ...] = ("mask", "scale", "shift", "bias")
N_LAYER_SEEDS = len(LAYER_SEED_NAMES)
SEED_WIDTHS = (8, 16, 32, 63)  # the allowed seed_bits: a seed is an unsigned integer this many bits wide
MAX_RANK = 4096


def n_seeds(rank: int) -> int:
    """Seeds of a layer of rank ``rank``: one per component, then the four layer seeds."""
    return rank + N_LAYER_SEEDS


def rank_of(count: int) -> int:
    """The rank of a layer holding ``count`` seeds. Raises ValueError if ``count`` cannot be one."""
    if not N_LAYER_SEEDS < count <= MAX_RANK + N_LAYER_SEEDS:
        raise ValueError(f"a layer holds rank + {N_LAYER_SEEDS} seeds (rank 1..{MAX_RANK}), got {count}")
    return count - N_LAYER_SEEDS


def seed_names(rank: int) -> tuple[str, ...]:
    """Names of a layer's seed slots, in order: ``c0 .. c{r-1}``, mask, scale, shift, bias."""
    return (*(f"c{k}" for k in range(rank)), *LAYER_SEED_NAMES)


def duplicate_component(seeds) -> int | None:
    """The first component slot whose seed repeats an earlier component's, or None (the layer seeds may
    repeat: they feed different tensors)."""
    comps = list(seeds)[: len(seeds) - N_LAYER_SEEDS]
    seen: set[int] = set()
    for k, s in enumerate(comps):
        if s in seen:
            return k
        seen.add(s)
    return None


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class CommitOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    STALE = "rejected-stale"
    NOT_BETTER = "rejected-not-better"
    DUPLICATE = "rejected-duplicate"  # a swap's seed is held by another component slot of the layer


class LayerEntry(_Record):
    """One layer's row of the seed table."""

    layer: int = Field(ge=0)
    seeds: tuple[int, ...]  # rank + 4: components, then mask, scale, shift, bias
    floats: tuple[float, ...]
    loss: float = math.inf  # the loss the seeds/floats were measured at; inf before any measurement
    version: int = Field(default=0, ge=0)
    writer: str = ""
    time: float = 0.0
    gens: tuple[int, ...] = ()  # one generation per seed slot; () means all zero

    @field_validator("seeds")
    @classmethod
    def _seed_count(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        rank_of(len(v))
        if any(s < 0 for s in v):
            raise ValueError(f"seeds must be non-negative, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _gens(self) -> LayerEntry:
        if self.gens and len(self.gens) != len(self.seeds):
            raise ValueError(f"gens: expected {len(self.seeds)} generations, got {len(self.gens)}")
        if any(g < 0 for g in self.gens):
            raise ValueError(f"gens must be non-negative, got {list(self.gens)}")
        return self

    @property
    def rank(self) -> int:
        return len(self.seeds) - N_LAYER_SEEDS

    @property
    def generations(self) -> tuple[int, ...]:
        """The slot generations (zeros when the row has none yet)."""
        return self.gens or (0,) * len(self.seeds)


class Snapshot(_Record):
    """Every layer's entry, read in one consistent read, plus the table-wide epoch."""

    job: str
    epoch: int = Field(ge=0)
    layers: tuple[LayerEntry, ...]

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(e.version for e in self.layers)

    def seeds(self) -> list[tuple[int, ...]]:
        return [e.seeds for e in self.layers]

    def floats(self) -> list[tuple[float, ...]]:
        return [e.floats for e in self.layers]


class Candidate(_Record):
    """A proposed seed vector for one layer (the full vector, not a delta)."""

    seeds: tuple[int, ...]
    tag: int = 0  # proposer bookkeeping id, echoed back in the result


class EvalResult(_Record):
    """A worker's answer for one batch: the incumbent and every candidate on the same data batch."""

    layer: int
    versions: tuple[int, ...]  # the snapshot versions the batch was evaluated against
    incumbent_loss: float
    incumbent_floats: tuple[float, ...]
    losses: tuple[float, ...]  # one per candidate, in order
    floats: tuple[tuple[float, ...], ...]  # refitted floats per candidate (== incumbent's when no refit)
    worker: str = ""
    seconds: float = 0.0


class CandidateBlock(_Record):
    """Candidate component seeds, compactly: ``range``: ``start, start + 1, ...`` modulo 2**seed_bits (an
    exhaustive sweep of narrow seed spaces); ``draw``: ``count`` seeds drawn by the generator keyed by
    ``start`` (wide seeds). Expanded by ``swap_proposer.expand_block``."""

    kind: Literal["range", "draw"]
    start: int = Field(ge=0)
    count: int = Field(ge=1, le=1 << 20)


class SlotTask(_Record):
    """One component slot to attack, the generation it is at in the snapshot, and its candidates."""

    slot: int = Field(ge=0)
    slot_gen: int = Field(ge=0)
    block: CandidateBlock


class SwapTask(_Record):
    """A swap call for one layer: screen each slot's candidates by the gradient (``screen``) or not
    (``loss``), verify the best ``top_k`` on the fitness loss, return per slot the best swap."""

    layer: int = Field(ge=0)
    slots: tuple[SlotTask, ...]
    mode: Literal["screen", "loss"] = "screen"
    top_k: int = Field(default=4, ge=1, le=256)


class SlotSwap(_Record):
    """A worker's best verified swap for one component slot, measured against one snapshot.

    ``seed`` is None when no verified candidate's loss was below ``incumbent_loss``; ``slot_floats`` are
    the slot's floats for the new component (g_k, then its expert entries, which start at zero).
    """

    slot: int = Field(ge=0)
    slot_gen: int = Field(ge=0)  # the slot's generation in the snapshot it was measured against
    seed: int | None
    slot_floats: tuple[float, ...] = ()
    loss: float = math.inf
    screened: int = Field(default=0, ge=0)  # candidates scored by the gradient screen (0 in loss mode)
    verified: int = Field(default=0, ge=0)  # candidates measured on the fitness loss


class SwapResult(_Record):
    """A worker's answer for one swap call on one layer: the incumbent's loss and per slot the best swap."""

    layer: int
    versions: tuple[int, ...]
    incumbent_loss: float
    swaps: tuple[SlotSwap, ...]
    worker: str = ""
    seconds: float = 0.0


# --- seed-table records (germinator_dist.table) ----------------------------------------------------------


class SwapCommit(_Record):
    """A slot-level search commit (docs/layout.md): component slot ``slot`` of ``layer`` takes ``seed`` and
    ``slot_floats`` if the slot is still at generation ``expected_gen``; the other slots and alpha/beta keep
    what the table holds now. ``loss`` must be below ``incumbent_loss`` (both from one evaluation)."""

    layer: int = Field(ge=0)
    slot: int = Field(ge=0)
    expected_gen: int = Field(ge=0)
    seed: int = Field(ge=0)
    slot_floats: tuple[float, ...]
    loss: float
    incumbent_loss: float
    evaluator_id: str = ""


class SeedCommit(_Record):
    """One offered seed commit, for ``SeedTable.commit_seeds_many`` (pipelined commits)."""

    layer: int = Field(ge=0)
    expected_version: int = Field(ge=0)
    seeds: tuple[int, ...]
    floats: tuple[float, ...]
    loss: float
    evaluator_id: str = ""


class JobInfo(_Record):
    """A job's registry row: what ``SeedTable.list_jobs`` and ``SeedTable.job_info`` return."""

    job: str
    state: JobState
    n_layers: int = Field(ge=0)
    seed_bits: int = Field(ge=1, le=63)
    epoch: int = Field(ge=0)
    desired_workers: int = Field(ge=0)
    created: float  # Redis server clock, seconds since the epoch


class BrokenJob(_Record):
    """A registered job whose registry row cannot be read (``SeedTable.list_jobs(each=True)``)."""

    job: str
    error: str


class Lease(_Record):
    """The claim that makes one driver the job's only driver (``SeedTable.lease``, docs/table.md)."""

    owner: str  # the holder: a runner's Ray submission id (or runner-HOST-PID when run by hand)
    since: float  # Redis server clock when this owner took it, seconds since the epoch
    expires_at: float  # Redis server clock
    expires_in: float  # seconds left when it was read; <= 0: expired (free for any claim)

    @property
    def expired(self) -> bool:
        return self.expires_in <= 0


class Progress(_Record):
    """The driver's progress counters (monotonic) and gauges (last value set)."""

    evaluations: int = 0
    accepted: int = 0
    stale: int = 0  # results dropped because they were computed against a stale snapshot
    not_better: int = 0
    evals_per_s: float = 0.0
    workers_live: int = 0
    updated: float = 0.0  # Redis server clock of the last update; 0 if never updated


class Heartbeat(_Record):
    """A live worker/driver/trainer heartbeat (expires on the Redis server's clock)."""

    role: str
    id: str
    expires_at: float  # Redis server clock, seconds since the epoch
    expires_in: float  # seconds left when it was read
    payload: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class TableEvent(_Record):
    """One entry of a job's event stream (the audit log the table can be rebuilt from).

    ``kind`` is ``init`` (row written by create_job), ``import`` (row written by import_ or a repair),
    ``seeds`` (an accepted seed commit) or ``floats`` (an accepted float publish; ``seeds`` is None).
    """

    id: str  # the Redis stream id, e.g. "1700000000000-0"
    kind: str
    layer: int = Field(ge=0)
    version: int = Field(ge=0)
    epoch: int = Field(ge=0)
    seeds: tuple[int, ...] | None
    floats: tuple[float, ...]
    loss: float
    writer: str
    time: float


# --- scale trainer records (train/trainer.py) ----------------------------------------------------------


class FloatPublication(_Record):
    """The trainer's offer for one layer: its floats, trained against the slot generations ``gens``.

    The table writes the floats of every slot whose generation still equals ``gens`` and keeps its own for
    slots swapped meanwhile (docs/layout.md). ``loss`` is the full model's mean cross-entropy (nats) on
    the fitness batch -- the table's loss. ``expected_version`` is the row version the trainer last saw.
    """

    layer: int = Field(ge=0)
    expected_version: int = Field(ge=0)
    floats: tuple[float, ...]
    loss: float
    gens: tuple[int, ...] = ()


class PublishOutcome(_Record):
    """What a slot-merging float publish did: ``kept`` lists the component slots whose floats the table
    kept (swapped since ``gens``); the trainer loads those slots and resets their optimizer state."""

    outcome: CommitOutcome
    kept: tuple[int, ...] = ()
    version: int = 0  # the row's version after the publish


class TrainStats(_Record):
    """What one ``ScaleTrainer.train`` call did. A skipped step (non-finite loss/gradient) changed nothing."""

    steps: int = Field(ge=0)  # steps applied
    skipped: int = Field(ge=0)  # steps skipped for a non-finite loss, gradient or update
    loss: float  # the last applied step's minibatch loss (nan if none was applied)
    lr: float  # the learning rate of the last step
    seconds: float = 0.0


class Validation(_Record):
    """Held-out loss (mean cross-entropy, nats); ``bits_per_byte`` for LMs, ``accuracy`` for classifiers."""

    loss: float
    bits_per_byte: float | None = None
    accuracy: float | None = None


class TrainerProgress(_Record):
    """The trainer loop's running totals, reported after every publish round and returned at the end.

    ``stop_reason`` is empty while running, then one of: ``cancelled``, ``succeeded``, ``failed`` (the job's
    state), ``stopped`` (the stop signal) or ``budget`` (total_steps or budget_s used up).
    """

    rounds: int = 0
    steps: int = 0  # steps applied
    skipped_steps: int = 0
    nonfinite_losses: int = 0  # publish rounds whose fitness loss was non-finite (nothing proposed)
    accepted: int = 0
    stale: int = 0
    not_better: int = 0
    reloaded: int = 0  # layers (re)loaded from the table by sync, the first load included
    train_loss: float = float("nan")
    fitness_loss: float = float("nan")
    lr: float = 0.0
    validation: Validation | None = None
    seconds: float = 0.0
    stop_reason: str = ""

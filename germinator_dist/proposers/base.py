"""Ask/tell protocol over one layer's seed vector, and the bookkeeping every proposer shares.

A proposer searches some of a layer's seed slots (``slots``: indices into ``SEED_NAMES``) and never
changes the others: every candidate is the current incumbent with only searched slots replaced, and
every seed is a Python ``int`` in ``[0, 2**seed_bits)``.

Conventions shared by all proposers:
  * ``ask(n)`` hands out full seed vectors as ``Candidate`` records, each with a fresh, unique ``tag``.
  * ``tell(candidate_or_tag, loss)`` may arrive in any order; candidates never told (a dead worker, a
    dropped batch) stay pending until ``discard(tag)`` or until ``max_pending`` newer ones push them
    out. A tag is consumed once: a second tell of it (a re-dispatched batch that came back twice) is
    ignored and returns False. NaN losses count as +inf.
  * ``set_incumbent(seeds, loss)`` is authoritative: the table's row may have been moved by another
    driver, the trainer or a resume. ``best()`` restarts from it. If it changed an unsearched slot the
    landscape changed, so history is dropped; results told afterwards for candidates built on the old
    unsearched slots are ignored.
  * ``budget`` is the number of evaluations planned; proposers use it to shape the search (mutation
    decay, nevergrad's own planning) but keep answering asks past it.
  * ``state_dict()`` is plain JSON (ints, floats, strings, lists; non-finite losses as ``None``; rng
    state as hex strings), and ``load_state_dict`` restores it into a proposer of the same kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from germinator_dist.errors import SpecError
from germinator_dist.records import N_SEEDS, SEED_NAMES, Candidate

STATE_FORMAT = 1
SEED_BITS_ALLOWED = (8, 16, 32, 63)


class ProposerConfig(BaseModel):
    """Settings every proposer has; subclasses add their own fields (unknown fields are refused)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed_bits: Literal[8, 16, 32, 63]
    slots: tuple[int, ...] = tuple(range(N_SEEDS))
    budget: int = Field(ge=1)
    rng_seed: int = Field(default=0, ge=0)
    max_pending: int = Field(default=65536, ge=1)

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("at least one slot must be searched")
        if len(set(v)) != len(v):
            raise ValueError(f"slots repeat: {list(v)}")
        bad = [s for s in v if not 0 <= s < N_SEEDS]
        if bad:
            raise ValueError(f"slot indices must be in [0, {N_SEEDS}) (SEED_NAMES {SEED_NAMES}), got {bad}")
        return tuple(sorted(v))


def build_config(config_class: type[ProposerConfig], where: str, fields: dict[str, Any]) -> ProposerConfig:
    """Validate ``fields`` into ``config_class``; raises SpecError naming the field and the value."""
    try:
        return config_class(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "?"
        raise SpecError(f"{where}: {field}={err.get('input')!r}: {err['msg']}") from None


@runtime_checkable
class Proposer(Protocol):
    """What the driver needs from a proposer (``BaseProposer`` implements it)."""

    def ask(self, n: int) -> list[Candidate]: ...
    def tell(self, candidate: Candidate | int, loss: float) -> bool: ...
    def tell_many(self, results: Iterable[tuple[Candidate | int, float]]) -> int: ...
    def discard(self, candidate: Candidate | int) -> bool: ...
    def set_incumbent(self, seeds: Sequence[int], loss: float) -> None: ...
    def best(self) -> tuple[tuple[int, ...], float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def exhausted(self) -> bool: ...


# ----------------------------------------------------------------------------- JSON helpers


def loss_to_json(loss: float) -> float | None:
    return float(loss) if math.isfinite(loss) else None


def loss_from_json(value: float | None) -> float:
    return math.inf if value is None else float(value)


def clean_loss(loss: float) -> float:
    """A told loss as a float; NaN becomes +inf. Raises SpecError if it is not a number."""
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise SpecError(f"loss={loss!r}: not a number") from None
    return math.inf if math.isnan(value) else value


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """PCG64 state with its 128-bit words as hex strings (exact in any JSON reader)."""
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": hex(st["state"]["state"]),
        "inc": hex(st["state"]["inc"]),
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def rng_from_json(d: dict[str, Any]) -> np.random.Generator:
    """Rebuild a generator from ``rng_state_to_json``; raises SpecError on a malformed state."""
    try:
        if d["bit_generator"] != "PCG64":
            raise ValueError(d["bit_generator"])
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(d["state"], 16), "inc": int(d["inc"], 16)},
            "has_uint32": int(d["has_uint32"]),
            "uinteger": int(d["uinteger"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"state.rng={d!r}: not a PCG64 state ({exc})") from None
    return rng


def tag_of(candidate: Candidate | int) -> int:
    """The tag of a Candidate, or the int itself; raises SpecError for anything else."""
    if isinstance(candidate, Candidate):
        return candidate.tag
    if isinstance(candidate, int | np.integer) and not isinstance(candidate, bool):
        return int(candidate)
    raise SpecError(f"candidate={candidate!r}: expected a Candidate or its integer tag")


def check_seed_vector(seeds: Sequence[int], seed_bits: int, field: str) -> tuple[int, ...]:
    """``seeds`` as a tuple of Python ints; raises SpecError unless N_SEEDS values in [0, 2**seed_bits)."""
    try:
        values = tuple(int(s) for s in seeds)
    except (TypeError, ValueError):
        raise SpecError(f"{field}={seeds!r}: expected {N_SEEDS} integer seeds") from None
    if len(values) != N_SEEDS:
        raise SpecError(f"{field}={list(values)}: expected {N_SEEDS} seeds {SEED_NAMES}, got {len(values)}")
    for i, s in enumerate(values):
        if not 0 <= s < (1 << seed_bits):
            raise SpecError(f"{field}[{i}]={s}: outside [0, 2**{seed_bits}) ({SEED_NAMES[i]})")
    return values


# ----------------------------------------------------------------------------- shared base


class BaseProposer:
    """Bookkeeping shared by every proposer: tags, pending candidates, incumbent, best, state.

    Subclasses set ``kind`` and ``config_class`` and implement ``_propose`` (and optionally
    ``_observe``, ``_on_incumbent``, ``_extra_state``, ``_load_extra_state``).
    """

    kind: ClassVar[str] = "base"
    config_class: ClassVar[type[ProposerConfig]] = ProposerConfig

    def __init__(
        self, config: ProposerConfig, incumbent_seeds: Sequence[int], incumbent_loss: float = math.inf
    ):
        """Raises SpecError if the config is of the wrong class or the incumbent is out of range."""
        if not isinstance(config, self.config_class):
            raise SpecError(
                f"{self.kind}: config={type(config).__name__}: expected {self.config_class.__name__}"
            )
        self.config = config
        self.seed_bits: int = config.seed_bits
        self.slots: tuple[int, ...] = config.slots
        self.unsearched: tuple[int, ...] = tuple(i for i in range(N_SEEDS) if i not in config.slots)
        self.seed_space: int = 1 << config.seed_bits
        seeds = check_seed_vector(incumbent_seeds, self.seed_bits, "incumbent_seeds")
        loss = clean_loss(incumbent_loss)
        self._incumbent: tuple[tuple[int, ...], float] = (seeds, loss)
        self._best: tuple[tuple[int, ...], float] = (seeds, loss)
        self._pending: dict[int, tuple[int, ...]] = {}
        self._pending_meta: dict[int, Any] = {}  # live, not saved (e.g. nevergrad's asked parameter)
        self._next_tag = 1
        self.asked = 0
        self.told = 0
        self.ignored = 0  # tells dropped: unknown/consumed tag or built on an outdated incumbent
        self._rng = np.random.default_rng(config.rng_seed)

    @classmethod
    def from_incumbent(cls, seeds: Sequence[int], loss: float = math.inf, **fields: Any) -> Self:
        """A fresh proposer around the table's incumbent (no saved state); raises SpecError on bad fields."""
        return cls(build_config(cls.config_class, cls.kind, fields), seeds, loss)

    # ------------------------------------------------------------------ public API

    @property
    def incumbent(self) -> tuple[tuple[int, ...], float]:
        return self._incumbent

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def exhausted(self) -> bool:
        """True when the proposer has nothing new to ask (only exhaustive enumeration ever is)."""
        return False

    def best(self) -> tuple[tuple[int, ...], float]:
        """Best (seeds, loss) known since the last ``set_incumbent`` (the incumbent if nothing beat it)."""
        return self._best

    def ask(self, n: int) -> list[Candidate]:
        """Up to ``n`` new candidates (fewer only when ``exhausted``); raises SpecError if n < 0."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise SpecError(f"n={n!r}: expected a non-negative integer")
        out: list[Candidate] = []
        for seeds, meta in self._propose(int(n)):
            tag = self._next_tag
            self._next_tag += 1
            self._pending[tag] = seeds
            if meta is not None:
                self._pending_meta[tag] = meta
            out.append(Candidate.model_construct(seeds=seeds, tag=tag))  # _propose's seeds are checked ints
        while len(self._pending) > self.config.max_pending:  # oldest first (dict keeps insertion order)
            self.discard(next(iter(self._pending)))
        self.asked += len(out)
        return out

    def tell(self, candidate: Candidate | int, loss: float) -> bool:
        """Report a loss for an asked candidate (any order). Returns False if it was ignored.

        Raises SpecError if ``loss`` is not a number or ``candidate`` is neither a Candidate nor a tag.
        """
        value = clean_loss(loss)
        tag = tag_of(candidate)
        seeds = self._pending.pop(tag, None)
        meta = self._pending_meta.pop(tag, None)
        if seeds is None or any(seeds[i] != self._incumbent[0][i] for i in self.unsearched):
            self.ignored += 1
            return False
        self.told += 1
        improved = value < self._best[1]
        if improved:
            self._best = (seeds, value)
        self._observe(seeds, value, improved, meta)
        return True

    def tell_many(self, results: Iterable[tuple[Candidate | int, float]]) -> int:
        """``tell`` each (candidate or tag, loss) pair; returns how many were used."""
        return sum(1 for cand, loss in results if self.tell(cand, loss))

    def discard(self, candidate: Candidate | int) -> bool:
        """Forget a pending candidate that will never be told; False if it was not pending."""
        tag = tag_of(candidate)
        self._pending_meta.pop(tag, None)
        return self._pending.pop(tag, None) is not None

    def set_incumbent(self, seeds: Sequence[int], loss: float) -> None:
        """Adopt the table's current row for this layer; raises SpecError if the seeds are out of range."""
        new = (check_seed_vector(seeds, self.seed_bits, "incumbent_seeds"), clean_loss(loss))
        old = self._incumbent
        rebased = any(new[0][i] != old[0][i] for i in self.unsearched)
        self._incumbent = new
        self._best = new
        self._on_incumbent(old, rebased)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (see the module docstring)."""
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "incumbent": {"seeds": list(self._incumbent[0]), "loss": loss_to_json(self._incumbent[1])},
            "best": {"seeds": list(self._best[0]), "loss": loss_to_json(self._best[1])},
            "next_tag": self._next_tag,
            "asked": self.asked,
            "told": self.told,
            "ignored": self.ignored,
            "pending": [[tag, list(seeds)] for tag, seeds in self._pending.items()],
            "rng": rng_state_to_json(self._rng),
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state; raises SpecError if it is malformed or of another kind/seed space.

        The tunables (budget, population, ...) stay as this proposer was built, so a resume may change them.
        """
        if not isinstance(state, dict):
            raise SpecError(f"state={type(state).__name__}: expected a dict from state_dict()")
        for key, want in (("format", STATE_FORMAT), ("kind", self.kind)):
            if state.get(key) != want:
                raise SpecError(f"state.{key}={state.get(key)!r}: expected {want!r}")
        cfg = state.get("config") or {}
        if cfg.get("seed_bits") != self.seed_bits:
            raise SpecError(
                f"state.config.seed_bits={cfg.get('seed_bits')!r}: this proposer has {self.seed_bits}"
            )
        if tuple(cfg.get("slots") or ()) != self.slots:
            raise SpecError(f"state.config.slots={cfg.get('slots')!r}: this proposer has {list(self.slots)}")
        try:
            inc, best = state["incumbent"], state["best"]
            self._incumbent = (
                check_seed_vector(inc["seeds"], self.seed_bits, "state.incumbent.seeds"),
                loss_from_json(inc["loss"]),
            )
            self._best = (
                check_seed_vector(best["seeds"], self.seed_bits, "state.best.seeds"),
                loss_from_json(best["loss"]),
            )
            self._next_tag = int(state["next_tag"])
            self.asked, self.told = int(state["asked"]), int(state["told"])
            self.ignored = int(state.get("ignored", 0))
            self._pending = {
                int(tag): check_seed_vector(seeds, self.seed_bits, "state.pending")
                for tag, seeds in state["pending"]
            }
            self._pending_meta = {}
            self._rng = rng_from_json(state["rng"])
            self._load_extra_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"state: malformed {self.kind} state ({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ helpers for subclasses

    def with_searched(self, values: Sequence[int], base: Sequence[int] | None = None) -> tuple[int, ...]:
        """A full seed vector: ``base`` (default the incumbent) with the searched slots set to ``values``."""
        out = list(self._incumbent[0] if base is None else base)
        for slot, v in zip(self.slots, values, strict=True):
            out[slot] = int(v)
        for slot in self.unsearched:  # unsearched slots always come from the incumbent
            out[slot] = self._incumbent[0][slot]
        return tuple(out)

    def searched_values(self, seeds: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(seeds[s]) for s in self.slots)

    def random_seed(self) -> int:
        """One seed uniform in [0, 2**seed_bits), as a Python int."""
        return int(self._rng.integers(0, self.seed_space, dtype=np.int64))

    def different_seed(self, current: int) -> int:
        """A seed uniform over [0, 2**seed_bits) minus ``current``, as a Python int."""
        return (
            current + 1 + int(self._rng.integers(0, self.seed_space - 1, dtype=np.int64))
        ) % self.seed_space

    # ------------------------------------------------------------------ subclass hooks

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        """``n`` (seeds, meta) pairs; meta is kept live (unsaved) and handed back to ``_observe``."""
        raise NotImplementedError

    def _observe(self, seeds: tuple[int, ...], loss: float, improved: bool, meta: Any) -> None:
        """A told result (already checked against the incumbent's unsearched slots)."""

    def _on_incumbent(self, old: tuple[tuple[int, ...], float], rebased: bool) -> None:
        """The incumbent was replaced; ``rebased`` when an unsearched slot changed."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_extra_state`` saved; raise KeyError/TypeError/ValueError/SpecError if malformed."""

"""Ask/tell protocol over one layer's seed vector, and the bookkeeping every proposer shares.

A layer of rank r holds ``n = r + 4`` seeds (docs/layout.md): the component seeds ``c0 .. c{r-1}``, then
``mask, scale, shift, bias`` (``records.seed_names(r)``). A proposer learns r from the incumbent's length
(or from ``config.rank``, which the incumbent must then match). It searches some of the slots (``slots``:
indices into that vector, default all n) and never changes the others: every candidate is the current
incumbent with only searched slots replaced, and every seed is a Python ``int`` in ``[0, 2**seed_bits)``.

Conventions shared by all proposers:
  * ``ask(n)`` hands out full seed vectors as ``Candidate`` records, each with a fresh, unique ``tag``.
  * No candidate holds the same component seed twice (``records.duplicate_component``; the layer seeds
    may repeat): a proposer redraws a searched component slot whose seed another component holds, or
    skips that candidate. An incumbent, a told Candidate or a loaded state with a repeated component seed
    is refused (SpecError naming the slot).
  * ``tell(candidate_or_tag, loss)`` may arrive in any order; candidates never told (a dead worker, a
    dropped batch) stay pending until ``discard(tag)`` or until ``max_pending`` newer ones push them
    out. A tag is consumed once: a second tell of it (a re-dispatched batch that came back twice) is
    ignored and returns False. NaN losses count as +inf.
  * ``set_incumbent(seeds, loss)`` is authoritative: the table's row may have been moved by another
    driver, the trainer or a resume. ``best()`` restarts from it. If it changed an unsearched slot the
    landscape changed, so history is dropped; results told afterwards for candidates built on the old
    unsearched slots are ignored. Its length must stay ``n`` (a layer does not change rank under a
    proposer: build a new one).
  * ``budget`` is the number of evaluations planned; proposers use it to shape the search (mutation
    decay, nevergrad's own planning) but keep answering asks past it.
  * ``state_dict()`` is plain JSON (ints, floats, strings, lists; non-finite losses as ``None``; rng
    state as hex strings) and records the rank; ``load_state_dict`` restores it into a proposer of the
    same kind, seed width, rank and slots (a state saved for a vector of another length is refused).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from germinator_dist.config import SeedBits
from germinator_dist.errors import SpecError
from germinator_dist.records import (
    MAX_RANK,
    N_LAYER_SEEDS,
    Candidate,
)
from germinator_dist.search.proposers.vectors import (
    STATE_FORMAT,
    check_rank,
    check_seed_vector,
    check_slots,
    check_state_format,
    clean_loss,
    loss_from_json,
    loss_to_json,
    rng_from_json,
    rng_state_to_json,
    tag_of,
)

_REDRAW_TRIES = 64  # random redraws of a repeated component seed before enumerating the free values


class ProposerConfig(BaseModel):
    """Settings every proposer has; subclasses add their own fields (unknown fields are refused)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed_bits: SeedBits
    # which seed slots are searched (indices into the layer's rank + 4 seeds); None: all of them. Checked
    # against the layer's seed count when the proposer is built, which stores the sorted, resolved list.
    slots: tuple[int, ...] | None = None
    # the layer's rank; None: the incumbent's length decides (the proposer stores the rank it found)
    rank: int | None = Field(default=None, ge=1, le=MAX_RANK)
    budget: int = Field(ge=1)
    rng_seed: int = Field(default=0, ge=0)
    max_pending: int = Field(default=65536, ge=1)


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


# ----------------------------------------------------------------------------- shared base


class BaseProposer:
    """Bookkeeping shared by every proposer: tags, pending candidates, incumbent, best, state.

    Subclasses set ``kind`` and ``config_class`` and implement ``_propose`` (and optionally
    ``_observe``, ``_on_incumbent``, ``_extra_state``, ``_load_extra_state``).
    """

    kind: ClassVar[str] = "base"
    config_class: ClassVar[type[ProposerConfig]] = ProposerConfig

    @classmethod
    def check(
        cls, config: ProposerConfig, incumbent_seeds: Sequence[int], *, layer: int | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """What the constructor checks, without building anything: (the incumbent's seeds, the searched
        slots). Raises SpecError as the constructor does."""
        if not isinstance(config, cls.config_class):
            raise SpecError(
                f"{cls.kind}: config={type(config).__name__}: expected {cls.config_class.__name__}"
            )
        if config.rank is not None:
            check_rank(config.rank, config.seed_bits, layer=layer)
        seeds = check_seed_vector(incumbent_seeds, config.seed_bits, "incumbent_seeds", config.rank, layer)
        rank = len(seeds) - N_LAYER_SEEDS
        check_rank(rank, config.seed_bits, layer=layer)  # (a longer vector repeated a seed already)
        return seeds, check_slots(config.slots, rank, layer=layer)

    def __init__(
        self,
        config: ProposerConfig,
        incumbent_seeds: Sequence[int],
        incumbent_loss: float = math.inf,
        *,
        layer: int | None = None,
    ):
        """Raises SpecError if the config is of the wrong class, the incumbent is not one layer's vector
        (``config.rank + 4`` seeds when the config names a rank) of distinct components in
        ``[0, 2**seed_bits)``, or a slot lies outside it. ``layer`` only names the layer in errors.

        ``self.config`` is the given config with ``rank`` and ``slots`` resolved (what ``state_dict`` saves).
        """
        seeds, slots = self.check(config, incumbent_seeds, layer=layer)
        self.layer = layer
        self.seed_bits: int = config.seed_bits
        self.seed_space: int = 1 << config.seed_bits
        self.rank: int = len(seeds) - N_LAYER_SEEDS
        self.n_seeds: int = len(seeds)
        self.slots: tuple[int, ...] = slots
        searched = set(self.slots)
        self.unsearched: tuple[int, ...] = tuple(i for i in range(self.n_seeds) if i not in searched)
        self.searched_components: tuple[int, ...] = tuple(i for i in self.slots if i < self.rank)
        self.config = config.model_copy(update={"rank": self.rank, "slots": self.slots})
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
    def from_incumbent(
        cls, seeds: Sequence[int], loss: float = math.inf, *, layer: int | None = None, **fields: Any
    ) -> Self:
        """A fresh proposer around the table's incumbent (no saved state); raises SpecError on bad fields."""
        return cls(build_config(cls.config_class, cls.kind, fields), seeds, loss, layer=layer)

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

        Raises SpecError if ``loss`` is not a number, ``candidate`` is neither a Candidate nor a tag, or a
        Candidate's seeds are not those asked under its tag (a repeated component seed is named).
        """
        value = clean_loss(loss)
        tag = tag_of(candidate)
        seeds = self._pending.get(tag)
        if isinstance(candidate, Candidate) and candidate.seeds is not seeds and candidate.seeds != seeds:
            self._check_told(candidate)
        self._pending.pop(tag, None)
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
        """Adopt the table's current row for this layer; raises SpecError if the seeds are out of range,
        repeat a component seed, or are not ``rank + 4`` long (this proposer's rank)."""
        new = (self.check_vector(seeds, "incumbent_seeds"), clean_loss(loss))
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
            "rank": self.rank,
            "n_seeds": self.n_seeds,
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
        """Continue from a saved state; raises SpecError (and changes nothing) if it is malformed, of another
        kind, seed width or slots, saved for a vector of another length (rank), or holds a vector with a
        repeated component seed.

        The tunables (budget, population, ...) stay as this proposer was built, so a resume may change them.
        """
        check_state_format(state)
        if state.get("kind") != self.kind:
            raise SpecError(f"state.kind={state.get('kind')!r}: expected {self.kind!r}")
        if state.get("rank") != self.rank or state.get("n_seeds") != self.n_seeds:
            raise SpecError(
                f"state.rank={state.get('rank')!r}: saved for {state.get('n_seeds')!r} seeds, but this "
                f"proposer's layer has rank {self.rank} ({self.n_seeds} seeds)"
            )
        cfg = state.get("config") or {}
        if cfg.get("seed_bits") != self.seed_bits:
            raise SpecError(
                f"state.config.seed_bits={cfg.get('seed_bits')!r}: this proposer has {self.seed_bits}"
            )
        if cfg.get("slots") is None or tuple(cfg["slots"]) != self.slots:
            raise SpecError(f"state.config.slots={cfg.get('slots')!r}: this proposer has {list(self.slots)}")
        before = dict(self.__dict__)  # a refused state leaves this proposer as it was
        try:
            inc, best = state["incumbent"], state["best"]
            self._incumbent = (
                self.check_vector(inc["seeds"], "state.incumbent.seeds"),
                loss_from_json(inc["loss"]),
            )
            self._best = (self.check_vector(best["seeds"], "state.best.seeds"), loss_from_json(best["loss"]))
            self._next_tag = int(state["next_tag"])
            self.asked, self.told = int(state["asked"]), int(state["told"])
            self.ignored = int(state.get("ignored", 0))
            self._pending = {
                int(tag): self.check_vector(seeds, f"state.pending[{i}]")
                for i, (tag, seeds) in enumerate(state["pending"])
            }
            self._pending_meta = {}
            self._rng = rng_from_json(state["rng"])
            self._load_extra_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            self.__dict__.clear()
            self.__dict__.update(before)
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"state: malformed {self.kind} state ({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ helpers for subclasses

    def check_vector(self, seeds: Sequence[int], field: str) -> tuple[int, ...]:
        """``seeds`` as this layer's vector (rank + 4 ints in range, distinct components), or SpecError."""
        return check_seed_vector(seeds, self.seed_bits, field, self.rank, self.layer)

    def _check_told(self, candidate: Candidate) -> None:
        """A told Candidate whose seeds are not the vector asked under its tag: refused."""
        self.check_vector(candidate.seeds, f"candidate {candidate.tag}: seeds")
        if candidate.tag in self._pending:
            raise SpecError(
                f"candidate {candidate.tag}: seeds={list(candidate.seeds)} are not the vector asked under "
                f"this tag ({list(self._pending[candidate.tag])})"
            )

    def distinct(self, seeds: list[int], fresh: Iterable[int] = ()) -> tuple[int, ...]:
        """``seeds`` (a full vector, changed in place) with no component seed repeated, as a tuple.

        Only searched component slots are redrawn, each uniformly among the seeds no other component of
        the vector holds. Who keeps a repeated seed: unsearched slots first, then searched slots not in
        ``fresh`` (what the parent held), then the ``fresh`` ones (just drawn), each group in slot order.
        """
        r = self.rank
        if len(set(seeds[:r])) == r:
            return tuple(seeds)
        fresh_set, searched = set(fresh), set(self.searched_components)
        order = [k for k in range(r) if k not in searched]  # the incumbent's seeds: distinct already
        order += [k for k in self.searched_components if k not in fresh_set]
        order += [k for k in self.searched_components if k in fresh_set]
        used: set[int] = set()
        for k in order:
            if seeds[k] in used:
                seeds[k] = self.free_seed(used)
            used.add(seeds[k])
        return tuple(seeds)

    def free_seed(self, used: set[int]) -> int:
        """A seed uniform over ``[0, 2**seed_bits)`` minus ``used`` (which must leave one); a Python int."""
        for _ in range(_REDRAW_TRIES):
            s = self.random_seed()
            if s not in used:
                return s
        free = self.seed_space - len(used)
        if free <= 0:
            raise SpecError(f"seed_bits={self.seed_bits}: no seed left outside the {len(used)} held")
        if self.seed_space > 1 << 20:  # a few thousand held among millions: keep drawing
            while (s := self.random_seed()) in used:
                pass
            return s
        i = int(self._rng.integers(0, free))  # the i-th value not in used
        for s in range(self.seed_space):
            if s not in used:
                if i == 0:
                    return s
                i -= 1
        raise AssertionError("unreachable")

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

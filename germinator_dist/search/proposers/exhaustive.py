"""Exhaustive coordinate-wise enumeration, for seed spaces small enough for the budget (8-bit: 256).

One slot at a time: every value of slot k, with the other slots at the best vector known when the
candidate is asked; then slot k+1, and so on (one sweep). Values come in a full-cycle affine order
``(a * i + c) mod 2**seed_bits`` (``a`` odd, ``a`` and ``c`` drawn per slot from the rng), so a partial
pass is spread over the range and the position is three integers in ``state_dict``.

Asynchronous, never blocking on lost results: the next slot starts as soon as the current one has been
fully asked, built on whatever is best by then; a late result that beats the best still moves it.
Each value of a slot is asked exactly once per sweep, except the value the best vector already holds
when its turn comes (already measured; skipped only if the best loss is finite) and, for a component
slot, the seeds the best vector's other components hold (a layer never repeats a component seed).
After a sweep with no improvement, or after ``max_sweeps``, the proposer is ``exhausted`` and ``ask``
returns ``[]``; ``set_incumbent`` with different seeds starts a new sweep. An improvement told after
its sweep was fully asked counts for the next sweep, so with batches in flight the search may run one
extra confirming sweep (never blocking for results is worth that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from germinator_dist.errors import SpecError
from germinator_dist.search.proposers.base import BaseProposer, ProposerConfig


class ExhaustiveConfig(ProposerConfig):
    max_sweeps: int | None = Field(default=None, ge=1)  # None: sweep until a sweep improves nothing
    max_values_per_slot: int = Field(default=1 << 16, ge=2)  # refuse seed spaces larger than this


class ExhaustiveProposer(BaseProposer):
    """Coordinate-wise enumeration of every value of every searched slot; see the module docstring."""

    kind = "exhaustive"
    config_class = ExhaustiveConfig
    config: ExhaustiveConfig

    @classmethod
    def check(cls, config, incumbent_seeds: Sequence[int], *, layer: int | None = None):
        if isinstance(config, ExhaustiveConfig) and (1 << config.seed_bits) > config.max_values_per_slot:
            raise SpecError(
                f"exhaustive: seed_bits={config.seed_bits}: 2**{config.seed_bits} values per slot exceed "
                f"max_values_per_slot={config.max_values_per_slot}; use 'evolutionary' or fewer bits"
            )
        return super().check(config, incumbent_seeds, layer=layer)

    def __init__(
        self,
        config: ExhaustiveConfig,
        incumbent_seeds: Sequence[int],
        incumbent_loss: float = math.inf,
        *,
        layer: int | None = None,
    ):
        """Raises SpecError if 2**seed_bits exceeds ``max_values_per_slot``."""
        super().__init__(config, incumbent_seeds, incumbent_loss, layer=layer)
        self._sweep = 0
        self._slot_pos = 0  # index into self.slots
        self._index = 0  # next i of the affine order for the current slot
        self._improved_in_sweep = False
        self._done = False
        self._mult, self._offset = self._new_order()

    @property
    def exhausted(self) -> bool:
        return self._done

    @property
    def position(self) -> tuple[int, int, int]:
        """(sweep, index into slots, values of that slot handed out so far)."""
        return self._sweep, self._slot_pos, self._index

    def evaluations_per_sweep(self) -> int:
        """An upper bound: a component slot skips the seeds the other components hold."""
        return len(self.slots) * self.seed_space

    def _new_order(self) -> tuple[int, int]:
        mult = int(self._rng.integers(0, self.seed_space >> 1)) * 2 + 1
        return mult, int(self._rng.integers(0, self.seed_space))

    def _advance_slot(self) -> None:
        self._slot_pos += 1
        self._index = 0
        if self._slot_pos == len(self.slots):
            self._sweep += 1
            self._slot_pos = 0
            limit = self.config.max_sweeps
            if not self._improved_in_sweep or (limit is not None and self._sweep >= limit):
                self._done = True
            self._improved_in_sweep = False
        self._mult, self._offset = self._new_order()

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        out: list[tuple[tuple[int, ...], Any]] = []
        while len(out) < n and not self._done:
            if self._index == self.seed_space:
                self._advance_slot()
                continue
            slot = self.slots[self._slot_pos]
            value = (self._mult * self._index + self._offset) % self.seed_space
            self._index += 1
            base, base_loss = self._best
            if value == base[slot]:
                if math.isfinite(base_loss):
                    continue
            elif slot < self.rank and value in base[: self.rank]:  # another component holds it: skip
                continue
            seeds = list(base)
            seeds[slot] = value
            out.append((self.with_searched(self.searched_values(seeds)), None))
        return out

    def _observe(self, seeds: tuple[int, ...], loss: float, improved: bool, meta: Any) -> None:
        if improved:
            self._improved_in_sweep = True

    def set_incumbent(self, seeds: Sequence[int], loss: float) -> None:
        """As ``BaseProposer.set_incumbent``; a vector other than the best found starts a new sweep."""
        previous_best = self._best[0]
        super().set_incumbent(seeds, loss)
        if self._best[0] != previous_best:
            self._improved_in_sweep = True
            if self._done:  # the table moved away from what this search converged on: sweep again
                self._done = False
                self._slot_pos, self._index = 0, 0
                self._mult, self._offset = self._new_order()

    def _extra_state(self) -> dict[str, Any]:
        return {
            "sweep": self._sweep,
            "slot_pos": self._slot_pos,
            "index": self._index,
            "order": [self._mult, self._offset],
            "improved_in_sweep": self._improved_in_sweep,
            "done": self._done,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._sweep = int(state["sweep"])
        self._slot_pos = int(state["slot_pos"])
        self._index = int(state["index"])
        self._mult, self._offset = (int(v) for v in state["order"])
        self._improved_in_sweep = bool(state["improved_in_sweep"])
        self._done = bool(state["done"])
        if not (0 <= self._slot_pos < len(self.slots) and 0 <= self._index <= self.seed_space):
            raise ValueError(f"position {self._slot_pos}, {self._index} outside the seed space")
        if self._mult % 2 != 1:
            raise ValueError(f"order multiplier {self._mult} is even")

"""Built-in population-based evolutionary proposer (steady-state, elitist mu+lambda).

A population of at most ``population`` seed vectors per layer, always holding the incumbent. Each child:
pick a parent by tournament, optionally cross it uniformly (slot by slot) with a second tournament
winner, then redraw between 1 and ``k`` searched slots uniformly in [0, 2**seed_bits), each to a value
different from the parent's. ``k`` starts at ``redraw_max`` and, with ``redraw_decay``, falls linearly
to 1 as the asked count approaches ``budget``. A component slot left holding a seed another component
holds (by a redraw or by crossover) is redrawn again: a child never repeats a component seed. Every
told child joins the population and the worst non-incumbent member leaves (selection keeps the best).
Results may come back in any order; the population simply absorbs them as they arrive. Deterministic
given ``rng_seed`` and the order of calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from germinator_dist.search.proposers.base import BaseProposer, ProposerConfig
from germinator_dist.search.proposers.vectors import loss_from_json, loss_to_json

_DEDUP_TRIES = 8


class EvolutionaryConfig(ProposerConfig):
    population: int = Field(default=8, ge=1)
    redraw_max: int | None = Field(default=None, ge=1)  # None: a quarter of the searched slots, at least 1
    redraw_decay: bool = True
    crossover_rate: float = Field(default=0.3, ge=0.0, le=1.0)
    tournament: int = Field(default=3, ge=1)


class EvolutionaryProposer(BaseProposer):
    """Elitist steady-state evolution over the searched slots; see the module docstring."""

    kind = "evolutionary"
    config_class = EvolutionaryConfig
    config: EvolutionaryConfig

    def __init__(
        self,
        config: EvolutionaryConfig,
        incumbent_seeds: Sequence[int],
        incumbent_loss: float = math.inf,
        *,
        layer: int | None = None,
    ):
        super().__init__(config, incumbent_seeds, incumbent_loss, layer=layer)
        # members: [seeds, loss, seq]; seq breaks ties (older first) so selection is deterministic
        self._members: list[list[Any]] = [[self._incumbent[0], self._incumbent[1], 0]]
        self._next_seq = 1

    # ------------------------------------------------------------------ inspection

    @property
    def population(self) -> list[tuple[tuple[int, ...], float]]:
        """Current members as (seeds, loss), best first."""
        return [(m[0], m[1]) for m in sorted(self._members, key=lambda m: (m[1], m[2]))]

    def redraw_limit(self) -> int:
        """How many slots a child may redraw at most right now (decays to 1 over the budget)."""
        top = min(self.config.redraw_max or max(1, len(self.slots) // 4), len(self.slots))
        if not self.config.redraw_decay:
            return top
        progress = min(1.0, self.asked / self.config.budget)
        return max(1, round(top - (top - 1) * progress))

    # ------------------------------------------------------------------ hooks

    def _tournament(self) -> list[Any]:
        picks = self._rng.integers(0, len(self._members), size=self.config.tournament)
        return min((self._members[int(i)] for i in picks), key=lambda m: (m[1], m[2]))

    def _child(self) -> tuple[int, ...]:
        values = list(self.searched_values(self._tournament()[0]))
        if len(self._members) > 1 and self._rng.random() < self.config.crossover_rate:
            other = self.searched_values(self._tournament()[0])
            take_other = self._rng.random(len(values)) < 0.5
            values = [o if t else v for v, o, t in zip(values, other, take_other, strict=True)]
        k = int(self._rng.integers(1, self.redraw_limit() + 1))
        # k distinct slots: one draw for k = 1 (most children late in a search), else a permutation's head
        # (Generator.choice without replacement costs ~10x more per call, and the driver asks thousands)
        picks = [int(self._rng.integers(len(values)))] if k == 1 else self._rng.permutation(len(values))[:k]
        for j in picks:
            values[int(j)] = self.different_seed(values[int(j)])
        return self.distinct(list(self.with_searched(values)), fresh=[self.slots[int(j)] for j in picks])

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        taken = {m[0] for m in self._members} | set(self._pending.values())
        out = []
        for _ in range(n):
            child = self._child()
            for _ in range(_DEDUP_TRIES):  # small seed spaces: avoid re-asking what is known or in flight
                if child not in taken:
                    break
                child = self._child()
            taken.add(child)
            out.append((child, None))
        return out

    def _observe(self, seeds: tuple[int, ...], loss: float, improved: bool, meta: Any) -> None:
        for m in self._members:
            if m[0] == seeds:  # measured again: keep the lower loss
                m[1] = min(m[1], loss)
                return
        self._members.append([seeds, loss, self._next_seq])
        self._next_seq += 1
        self._truncate()

    def _truncate(self) -> None:
        inc = self._incumbent[0]
        others = sorted((m for m in self._members if m[0] != inc), key=lambda m: (m[1], m[2]))
        keep = [m for m in self._members if m[0] == inc][:1] + others
        self._members = keep[: max(1, self.config.population)]

    def _on_incumbent(self, old: tuple[tuple[int, ...], float], rebased: bool) -> None:
        seeds, loss = self._incumbent
        if rebased:  # another landscape: the old members' losses mean nothing now
            self._members = [[seeds, loss, self._next_seq]]
        else:
            self._members = [m for m in self._members if m[0] != seeds]
            self._members.insert(0, [seeds, loss, self._next_seq])
            self._truncate()
        self._next_seq += 1

    def _extra_state(self) -> dict[str, Any]:
        return {
            "members": [[list(m[0]), loss_to_json(m[1]), m[2]] for m in self._members],
            "next_seq": self._next_seq,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._members = [
            [self.check_vector(s, f"state.members[{i}]"), loss_from_json(loss), int(seq)]
            for i, (s, loss, seq) in enumerate(state["members"])
        ]
        self._next_seq = int(state["next_seq"])
        if not any(m[0] == self._incumbent[0] for m in self._members):
            self._members.insert(0, [self._incumbent[0], self._incumbent[1], self._next_seq])
            self._next_seq += 1

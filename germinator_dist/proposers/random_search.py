"""Pure random search: every candidate redraws all searched slots uniformly (the baseline)."""

from __future__ import annotations

from typing import Any

from germinator_dist.proposers.base import BaseProposer, ProposerConfig


class RandomSearchConfig(ProposerConfig):
    """Random search has no settings beyond the shared ones."""


class RandomSearchProposer(BaseProposer):
    """Uniform, independent redraws of every searched slot; deterministic given ``rng_seed``."""

    kind = "random"
    config_class = RandomSearchConfig

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        return [(self.with_searched([self.random_seed() for _ in self.slots]), None) for _ in range(n)]

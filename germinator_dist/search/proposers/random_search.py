"""Pure random search: every candidate redraws all searched slots uniformly (the baseline).

A searched component slot that drew a seed another component holds is redrawn (components stay distinct).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from germinator_dist.search.proposers.base import BaseProposer, ProposerConfig


class RandomSearchConfig(ProposerConfig):
    """Random search has no settings beyond the shared ones."""


class RandomSearchProposer(BaseProposer):
    """Uniform, independent redraws of every searched slot (components distinct); deterministic given
    ``rng_seed``."""

    kind = "random"
    config_class = RandomSearchConfig

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        out: list[tuple[tuple[int, ...], Any]] = []
        for _ in range(n):
            drawn = self._rng.integers(0, self.seed_space, size=len(self.slots), dtype=np.int64).tolist()
            seeds = list(self.with_searched(drawn))  # .tolist(): Python ints
            out.append((self.distinct(seeds, fresh=self.slots), None))
        return out

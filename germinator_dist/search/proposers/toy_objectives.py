"""Deterministic toy objectives over a full seed vector, for tests and the proposer benchmark.

They stand in for "regenerate the layer and measure the loss": cheap, pure Python, reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

_MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finalizer: a well-mixed 64-bit hash of a non-negative int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def unit_hash(*parts: int) -> float:
    """A deterministic pseudo-random float in [0, 1) from integers."""
    h = 0
    for p in parts:
        h = mix64(h ^ (p & _MASK64))
    return (h >> 11) / float(1 << 53)


class SeparableHashLandscape:
    """Structured like real seed search: each slot's seed contributes an independent random term.

    ``loss = sum_k u(k, seed_k) + coupling * sum_k u(k, seed_k, seed_{k+1})`` with ``u`` uniform in
    [0, 1). Slot-wise search can improve one term at a time; random search must get all at once.
    """

    def __init__(self, salt: int = 0, coupling: float = 0.1):
        self.salt = salt
        self.coupling = coupling

    def __call__(self, seeds: Sequence[int]) -> float:
        n = len(seeds)
        loss = sum(unit_hash(self.salt, k, s) for k, s in enumerate(seeds))
        pairs = sum(unit_hash(self.salt, 1000 + k, seeds[k], seeds[(k + 1) % n]) for k in range(n))
        return loss + self.coupling * pairs


class HammingToTarget:
    """Number of slots whose seed differs from a hidden target (0 at the target)."""

    def __init__(self, target: Sequence[int]):
        self.target = tuple(int(t) for t in target)

    def __call__(self, seeds: Sequence[int]) -> float:
        return float(sum(1 for s, t in zip(seeds, self.target, strict=True) if s != t))

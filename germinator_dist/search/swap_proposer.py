"""The swap proposer: which component slots of a layer to attack, and with which candidate seeds.

Ask/tell over plain state (docs/layout.md, docs/learning.md):
  * slots: ``weakest`` attacks the component with the smallest ``|g_k|`` times its norm, each slot's
    priority discounted by the attempts it failed since its seed last changed (so a slot whose
    candidates keep losing yields to the next weakest); ``round_robin`` cycles through the slots.
  * candidates: for ``seed_bits <= 16`` disjoint ranges of the slot's seed space, call by call (a cursor per
    slot), so nothing is screened twice for the same slot state; a slot whose whole space was screened
    at its current generation is skipped until its seed changes. For wider seeds, and in ``loss`` mode,
    candidates are drawn by the generator from a per-call key. The worker drops candidates the layer
    already holds, so no swap can duplicate a component.
Its state is JSON (``state_dict``/``load_state_dict``), kept in the seed table by the driver, so a resumed
job does not screen a range again. Pure core: no ray, no redis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from germinator_dist.config import SwapConfig
from germinator_dist.core import prng
from germinator_dist.errors import SpecError
from germinator_dist.records import SEED_WIDTHS, CandidateBlock, LayerEntry, SlotTask, SwapResult, SwapTask

DRAW_ROLE = 0xD2A0  # generator role of candidate draws (a stream no layer tensor uses)
STATE_FORMAT = 1


def expand_block(block: CandidateBlock, seed_bits: int) -> np.ndarray:
    """The candidate seeds a block stands for (see ``CandidateBlock``): int64 (N,)."""
    space = 1 << seed_bits
    if block.kind == "range":
        count = min(block.count, space)
        return (np.arange(count, dtype=np.int64) + block.start % space) % space  # block.start < 2**63
    words = prng._random_words(block.start & ((1 << 63) - 1), DRAW_ROLE, 0, 0, 2 * block.count)  # (2N,)
    vals = (words[0::2] | (words[1::2] << 32)) & (space - 1)  # (N,) int64, below 2**63
    return vals.numpy()


class SwapProposer:
    """Plans swap calls for one layer (rank ``rank``); ``norm(seed)`` is a component's norm (or None:
    every component counts as 1). Raises SpecError on a bad seed width or state."""

    def __init__(
        self,
        config: SwapConfig,
        layer: int,
        rank: int,
        seed_bits: int,
        seed: int = 0,
        norm: Callable[[int], float] | None = None,
    ) -> None:
        if seed_bits not in SEED_WIDTHS:
            raise SpecError(f"seed_bits: expected 8, 16, 32 or 63, got {seed_bits!r}")
        self.config, self.layer, self.rank, self.seed_bits = config, layer, rank, seed_bits
        self.seed, self.norm = seed, norm
        self.space = 1 << seed_bits
        self.exhaustive = seed_bits <= 16 and config.mode == "screen"
        # per slot: the generation the counters refer to, the next range start, candidates handed out at
        # that generation, attempts at that generation that found nothing
        self.gen = [0] * rank
        self.cursor = [(k * self.space) // max(1, rank) for k in range(rank)]  # spread the starts
        self.handed = [0] * rank
        self.fails = [0] * rank
        self.calls = 0  # draw key counter
        self.next_slot = 0  # round robin
        self.screened = 0
        self.verified = 0

    # ---- ask ---------------------------------------------------------------------------------------------
    def _sync(self, entry: LayerEntry) -> None:
        gens = entry.generations
        for k in range(self.rank):
            if gens[k] != self.gen[k]:  # the slot changed: a new state to screen
                self.gen[k], self.handed[k], self.fails[k] = gens[k], 0, 0

    def _open(self, k: int) -> bool:
        return not self.exhaustive or self.handed[k] < self.space

    def _order(self, entry: LayerEntry) -> list[int]:
        open_slots = [k for k in range(self.rank) if self._open(k)]
        if self.config.slot_choice == "round_robin":
            start = self.next_slot
            return sorted(open_slots, key=lambda k: (k - start) % self.rank)
        g = entry.floats[2 : 2 + self.rank]

        def weakness(k: int) -> float:
            norm = self.norm(entry.seeds[k]) if self.norm is not None else 1.0
            return abs(g[k]) * norm * (1.0 + self.fails[k])

        return sorted(open_slots, key=weakness)

    def call_size(self) -> int:
        """Candidates one full call considers: ``slots_per_call`` blocks of ``candidates`` (``top_k`` in
        loss mode)."""
        cfg = self.config
        return cfg.slots_per_call * (cfg.candidates if cfg.mode == "screen" else cfg.top_k)

    def _block(self, k: int, cap: int) -> CandidateBlock:
        cfg = self.config
        if self.exhaustive:
            count = min(cfg.candidates, cap, self.space - self.handed[k])
            block = CandidateBlock(kind="range", start=self.cursor[k], count=count)
            self.cursor[k] = (self.cursor[k] + count) % self.space
            self.handed[k] += count
            return block
        count = min(cfg.candidates if cfg.mode == "screen" else cfg.top_k, cap)
        key = (self.seed * 1_000_003 + self.layer * 65_537 + self.calls) & ((1 << 63) - 1)
        self.calls += 1
        self.handed[k] += count
        return CandidateBlock(kind="draw", start=key, count=count)

    def ask(self, entry: LayerEntry, limit: int | None = None, busy=()) -> SwapTask | None:
        """The next swap call for this layer against ``entry`` (the snapshot's row), considering at most
        ``limit`` candidates (a budget's remainder) and skipping the ``busy`` slots (calls in flight on
        them: a second call on the same slot would go stale as soon as the first swap is accepted). None
        when every free slot's seed space is screened at its current generation (or ``limit`` < 1)."""
        if limit is not None and limit < 1:
            return None
        if entry.rank != self.rank:
            raise SpecError(f"layer {self.layer}: the proposer has rank {self.rank}, the row {entry.rank}")
        self._sync(entry)
        slots = [k for k in self._order(entry) if k not in busy][: self.config.slots_per_call]
        if not slots:
            return None
        if self.config.slot_choice == "round_robin":
            self.next_slot = (slots[-1] + 1) % self.rank
        if limit is not None:
            slots = slots[:limit]  # at least one candidate a slot
        cap = self.call_size() if limit is None else max(1, limit // len(slots))
        tasks = tuple(SlotTask(slot=k, slot_gen=self.gen[k], block=self._block(k, cap)) for k in slots)
        return SwapTask(layer=self.layer, slots=tasks, mode=self.config.mode, top_k=self.config.top_k)

    def give_back(self, task: SwapTask) -> None:
        """A call that was lost for good: its range blocks count as not handed out (screened later)."""
        for st in task.slots:
            k = st.slot
            if st.block.kind == "range" and k < self.rank and st.slot_gen == self.gen[k]:
                self.handed[k] = max(0, self.handed[k] - st.block.count)
                if self.cursor[k] == (st.block.start + st.block.count) % self.space:
                    self.cursor[k] = st.block.start  # the latest block: rewind over it

    # ---- tell --------------------------------------------------------------------------------------------
    def tell(self, result: SwapResult, accepted: Sequence[bool], stale: bool = False) -> None:
        """Record a call's outcome: ``accepted[i]`` says whether slot i's swap was committed; ``stale``: the
        call's results were dropped unjudged (its layer changed meanwhile), which is no fault of its slots."""
        for swap, ok in zip(result.swaps, accepted):
            self.screened += swap.screened
            self.verified += swap.verified
            k = swap.slot
            if k < self.rank and not ok and not stale and swap.slot_gen == self.gen[k]:
                self.fails[k] += 1

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT, "kind": "swap", "rank": self.rank, "seed_bits": self.seed_bits,
            "gen": list(self.gen), "cursor": list(self.cursor), "handed": list(self.handed),
            "fails": list(self.fails), "calls": self.calls, "next_slot": self.next_slot,
            "screened": self.screened, "verified": self.verified,
        }  # fmt: skip

    def load_state_dict(self, state: object) -> None:
        """Restore a saved state. Raises SpecError naming the field and value if it does not fit."""
        if not isinstance(state, dict) or state.get("kind") != "swap":
            raise SpecError(f"swap proposer state: expected a swap state object, got {str(state)[:80]!r}")
        for name, want in (("format", STATE_FORMAT), ("rank", self.rank), ("seed_bits", self.seed_bits)):
            if state.get(name) != want:
                raise SpecError(f"swap proposer state.{name}: {state.get(name)!r}, this layer needs {want}")
        lists = {}
        for name in ("gen", "cursor", "handed", "fails"):
            v = state.get(name)
            if not (isinstance(v, list) and len(v) == self.rank and all(_nonneg_int(x) for x in v)):
                raise SpecError(
                    f"swap proposer state.{name}: expected {self.rank} integers >= 0, got {str(v)[:80]}"
                )
            lists[name] = [int(x) for x in v]
        if any(c >= self.space for c in lists["cursor"]):
            bad = max(lists["cursor"])
            raise SpecError(f"swap proposer state.cursor: {bad} is outside [0, 2**{self.seed_bits})")
        scalars = {}
        for name in ("calls", "next_slot", "screened", "verified"):
            if not _nonneg_int(state.get(name)):
                raise SpecError(
                    f"swap proposer state.{name}: {state.get(name)!r} is not a non-negative integer"
                )
            scalars[name] = int(state[name])
        self.gen, self.cursor, self.handed, self.fails = (
            lists[n] for n in ("gen", "cursor", "handed", "fails")
        )
        self.calls, self.screened, self.verified = scalars["calls"], scalars["screened"], scalars["verified"]
        self.next_slot = scalars["next_slot"] % self.rank


def _nonneg_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def component_norms(layer) -> Callable[[int], float]:
    """A cached ``seed -> norm`` of a layer's components: ``sqrt(p |a1|^2 |b1|^2 + (1-p) |a2|^2 |b2|^2)``,
    the expected Frobenius norm of its contribution under the mask density p (``layer``: a SeedLinear)."""
    cache: dict[int, float] = {}
    p = layer.mask_density

    def norm(seed: int) -> float:
        if seed not in cache:
            a1, b1, a2, b2 = (v[0] for v in layer.component_batch([seed], "cpu"))
            n1 = float(a1.pow(2).sum() * b1.pow(2).sum())
            n2 = float(a2.pow(2).sum() * b2.pow(2).sum())
            cache[seed] = math.sqrt(p * n1 + (1 - p) * n2)
        return cache[seed]

    return norm

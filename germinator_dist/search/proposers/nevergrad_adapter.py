"""One adapter for any nevergrad optimizer (``ng.optimizers.registry`` name) over a layer's searched slots.

Parametrization: one ``ng.p.Array`` with integer casting, one coordinate per *limb*, bounds
``[-0.49, 2**limb_bits - 0.51]`` so that rounding lands exactly on ``[0, 2**limb_bits)`` (plain bounds
``[0, 2**b - 1]`` never return the top value). Seeds of up to 32 bits are one limb each (a float64
holds them exactly). A 63-bit seed is two limbs, ``seed = hi << 32 | lo`` with a 31-bit ``hi`` and a
32-bit ``lo``, because a float64 coordinate cannot represent every integer below 2**63; a mutation of
either limb is a new seed, which is all that matters for seeds (their numeric closeness means nothing).
Values leave the adapter as Python ints (nevergrad hands back numpy int64), clipped into range.

A layer never repeats a component seed. An ask whose vector would (a searched component slot landing on
a seed another component holds) is infeasible: the adapter tells it to nevergrad at once with the capped
loss -- what nevergrad does itself for a violated cheap constraint -- counts it in ``infeasible`` and asks
again; after 16 such asks in a row it redraws the repeated seeds itself and hands that vector out, fed to
nevergrad like a point it did not ask when its result comes back.

The optimizer is always built with ``budget`` (NGOpt asserts without one) and ``num_workers``. Losses
above 1e20 (and +inf) are capped at 1e20 before nevergrad sees them (it would clip and warn).
The incumbent, when its loss is known, is fed in first (``suggest`` + ``ask`` + ``tell``), so the
search starts from it. Results for candidates nevergrad did not hand out itself (after a resume) are
fed the same way.

State: nevergrad optimizers are live objects that do not serialize to JSON, so ``state_dict`` records
the told history (searched values, loss) -- the last ``max_history`` results plus the best one -- and
``load_state_dict`` replays it into a fresh optimizer. The resumed optimizer knows the same points but
its internal state (step sizes, DE population order, rng) is rebuilt, so its next asks are not those an
uninterrupted run would have made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from germinator_dist.errors import SpecError
from germinator_dist.records import duplicate_component
from germinator_dist.search.proposers.base import BaseProposer, ProposerConfig
from germinator_dist.search.proposers.vectors import loss_from_json, loss_to_json

LOSS_CAP = 1e20
_INFEASIBLE_TRIES = 16  # asks per candidate before a repeated component seed is redrawn by the adapter


def nevergrad_registry() -> Any:
    """``ng.optimizers.registry`` (nevergrad is imported on first use: it takes about a second)."""
    import nevergrad as ng

    return ng.optimizers.registry


def limb_bits_for(seed_bits: int) -> tuple[int, ...]:
    """How one seed is split into nevergrad coordinates, most significant limb first."""
    return (seed_bits,) if seed_bits <= 32 else (seed_bits - 32, 32)


class NevergradConfig(ProposerConfig):
    optimizer: str = "NGOpt"
    num_workers: int = Field(default=8, ge=1)
    max_history: int = Field(default=1024, ge=1)


class NevergradProposer(BaseProposer):
    """Any nevergrad optimizer behind the proposer protocol; see the module docstring."""

    kind = "nevergrad"
    config_class = NevergradConfig
    config: NevergradConfig

    @classmethod
    def check(cls, config, incumbent_seeds: Sequence[int], *, layer: int | None = None):
        if isinstance(config, NevergradConfig) and config.optimizer not in nevergrad_registry():
            raise SpecError(f"nevergrad: optimizer={config.optimizer!r}: not in ng.optimizers.registry")
        return super().check(config, incumbent_seeds, layer=layer)

    def __init__(
        self,
        config: NevergradConfig,
        incumbent_seeds: Sequence[int],
        incumbent_loss: float = math.inf,
        *,
        layer: int | None = None,
    ):
        """Raises SpecError if ``config.optimizer`` is not in nevergrad's registry."""
        super().__init__(config, incumbent_seeds, incumbent_loss, layer=layer)
        self.infeasible = 0  # asks nevergrad made that repeated a component seed (told LOSS_CAP, skipped)
        self._limb_bits = limb_bits_for(self.seed_bits)
        self._history: list[tuple[tuple[int, ...], float]] = []  # (searched values, loss), oldest first
        self._history_best: tuple[tuple[int, ...], float] | None = None
        self._opt = self._fresh_optimizer()

    @property
    def optimizer(self) -> Any:
        """The live nevergrad optimizer (rebuilt on a rebase or a load; never saved)."""
        return self._opt

    # ------------------------------------------------------------------ encoding

    def encode(self, values: Sequence[int]) -> np.ndarray:
        """Searched-slot seeds -> nevergrad coordinates (limbs, as floats)."""
        limbs: list[float] = []
        for v in values:
            shift = sum(self._limb_bits)
            for b in self._limb_bits:
                shift -= b
                limbs.append(float((int(v) >> shift) & ((1 << b) - 1)))
        return np.asarray(limbs, dtype=np.float64)

    def decode(self, coords: Sequence[float]) -> tuple[int, ...]:
        """Nevergrad coordinates -> searched-slot seeds as Python ints, each clipped into its limb range."""
        flat = [int(round(float(x))) for x in np.asarray(coords).ravel()]
        out: list[int] = []
        per = len(self._limb_bits)
        for i in range(0, len(flat), per):
            seed = 0
            for b, x in zip(self._limb_bits, flat[i : i + per], strict=True):
                seed = (seed << b) | min(max(x, 0), (1 << b) - 1)
            out.append(seed)
        return tuple(out)

    # ------------------------------------------------------------------ nevergrad plumbing

    def _fresh_optimizer(self) -> Any:
        import nevergrad as ng

        n = len(self.slots) * len(self._limb_bits)
        upper = np.tile([float(1 << b) - 0.51 for b in self._limb_bits], len(self.slots))
        init = self.encode(self.searched_values(self._incumbent[0]))
        param = ng.p.Array(init=init, lower=np.full(n, -0.49), upper=upper).set_integer_casting()
        param.random_state = np.random.RandomState(self.config.rng_seed % (1 << 32))
        opt = nevergrad_registry()[self.config.optimizer](
            parametrization=param, budget=self.config.budget, num_workers=self.config.num_workers
        )
        if math.isfinite(self._incumbent[1]):
            self._feed(opt, self.searched_values(self._incumbent[0]), self._incumbent[1])
        return opt

    @staticmethod
    def _capped(loss: float) -> float:
        return min(loss, LOSS_CAP)

    def _feed(self, opt: Any, values: Sequence[int], loss: float) -> None:
        """Tell ``opt`` a point it did not hand out itself (suggest, ask, tell)."""
        opt.suggest(self.encode(values))
        opt.tell(opt.ask(), self._capped(loss))

    def _record(self, values: tuple[int, ...], loss: float) -> None:
        self._history.append((values, loss))
        if len(self._history) > self.config.max_history:
            del self._history[0]
        if self._history_best is None or loss < self._history_best[1]:
            self._history_best = (values, loss)

    # ------------------------------------------------------------------ hooks

    def _propose(self, n: int) -> list[tuple[tuple[int, ...], Any]]:
        out: list[tuple[tuple[int, ...], Any]] = []
        for _ in range(n):
            for _ in range(_INFEASIBLE_TRIES):
                cand = self._opt.ask()
                seeds = self.with_searched(self.decode(cand.value))
                if not self.searched_components or duplicate_component(seeds) is None:
                    out.append((seeds, cand))
                    break
                self.infeasible += 1  # a repeated component seed: infeasible, as nevergrad itself treats
                self._opt.tell(cand, LOSS_CAP)  # a cheap-constraint violation (it tells DE an inf loss)
            else:  # nevergrad keeps landing on held seeds: redraw them, and feed the result when told
                out.append((self.distinct(list(seeds)), None))
        return out

    def _observe(self, seeds: tuple[int, ...], loss: float, improved: bool, meta: Any) -> None:
        values = self.searched_values(seeds)
        if meta is None:
            self._feed(self._opt, values, loss)
        else:
            self._opt.tell(meta, self._capped(loss))
        self._record(values, loss)

    def _on_incumbent(self, old: tuple[tuple[int, ...], float], rebased: bool) -> None:
        if rebased:  # another landscape: start over around the new incumbent
            self._history, self._history_best = [], None
            self._pending_meta.clear()
            self._opt = self._fresh_optimizer()
        elif math.isfinite(self._incumbent[1]):
            self._feed(self._opt, self.searched_values(self._incumbent[0]), self._incumbent[1])

    def _saved_history(self) -> list[tuple[tuple[int, ...], float]]:
        best = self._history_best
        return ([best] if best is not None and best not in self._history else []) + self._history

    def _extra_state(self) -> dict[str, Any]:
        return {"history": [[list(v), loss_to_json(loss)] for v, loss in self._saved_history()]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        history = []
        for values, loss in state["history"]:
            vals = tuple(int(v) for v in values)
            if len(vals) != len(self.slots) or not all(0 <= v < self.seed_space for v in vals):
                raise ValueError(f"history values {list(values)} do not fit slots {list(self.slots)}")
            self.check_vector(self.with_searched(vals), "state.history")  # no repeated component seed
            history.append((vals, loss_from_json(loss)))
        self._history, self._history_best = [], None
        self._opt = self._fresh_optimizer()
        for vals, loss in history:
            self._feed(self._opt, vals, loss)
            self._record(vals, loss)

"""Fair evaluation of seed candidates for one layer against its incumbent (docs/layout.md).

A :class:`LayerEvaluator` holds the model and one fixed data batch. Given a snapshot (every layer's seeds
and floats, with versions) it caches the activations entering each layer, so a batch of candidates for
layer k re-runs only layers k.. . The incumbent and every candidate are measured in the same call on the
same batch; with ``refit_steps > 0`` each of them (incumbent included, so the comparison stays fair)
first gets a few Adam steps on that layer's floats, on the cached inputs.

Per snapshot it also remembers the incumbent's measurement for each (layer, refit settings): the same
snapshot, batch and floats give the same number, so later batches against that snapshot (and one-candidate
calls) do not pay for it again. Layers after k are fixed within a snapshot; their seeded tensors come from
the per-tensor cache instead of being regenerated for every candidate. A new snapshot drops only what its
changed layers touch. Without refit, a classifier stage (MLP layers without experts) goes through
``search.stage_scorer.StageScorer``, the hot loop; the LM and refit take the generic path.

:meth:`LayerEvaluator.swap` is the swap search's worker side (``swap_scorer.py``): per snapshot and layer it
keeps the layer's gradient and, on classifier stages, the incumbent's W less each attacked slot's term.

Pure core: torch only. The Ray worker actor and the local demo both wrap it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict

import numpy as np
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core.layers import FixedTensors, component_phi
from germinator_dist.core.model import Batch, GerminatorMLP, GerminatorModel, build_model
from germinator_dist.errors import SpecError
from germinator_dist.records import LAYER_SEED_NAMES, EvalResult, SlotSwap, Snapshot, SwapResult, SwapTask
from germinator_dist.search.stage_scorer import StageScorer
from germinator_dist.search.swap_proposer import expand_block
from germinator_dist.search.swap_scorer import SwapScorer


class LayerEvaluator:
    """Evaluates candidate seed vectors of one layer on a fixed batch, against a snapshot."""

    def __init__(
        self,
        spec: ModelSpec,
        batch: Batch,
        device: str | torch.device = "cpu",
        tensor_cache_mb: float = 32.0,
        worker_id: str = "local",
    ) -> None:
        self.device = torch.device(device)
        self.model: GerminatorModel = build_model(spec).to(self.device)
        self.batch = batch.to(self.device)
        self.worker_id = worker_id
        self._versions: tuple[int, ...] | None = None
        self._prefix: dict[int, dict] = {}  # layer -> state entering it, for the loaded snapshot
        self._incumbent: dict[tuple, tuple] = {}  # (layer, refit_steps, refit_lr) -> (loss, floats)
        self._fixed_after: dict[int, FixedTensors] = {}  # layer -> its tensors in the loaded snapshot
        self._scorers: dict[int, StageScorer | None] = {}  # layer -> its no-refit scorer for the snapshot
        self._parts: dict[int, tuple] = {}  # layer -> (its floats, its scorer's incumbent parts by seeds)
        self._loaded: list[tuple] = []  # per layer: (seeds, floats) as loaded
        self._swap: dict[tuple, object] = {}  # per snapshot: (layer, mode) -> SwapScorer, (layer, slot) -> W0
        self._tensor_budget = int(tensor_cache_mb * 2**20)
        share = self._tensor_budget // max(1, len(self.model.layers))
        for layer in self.model.layers:
            layer.requires_grad_(False)
            layer.cache = TensorLRU(share)  # generated tensors by (kind, seed, device, dtype)
            layer.cache_derived = True  # candidates change a slot or two: keep F1, F2, sigma_t*T per seed

    # ---- one call -------------------------------------------------------------------------------
    def run(
        self,
        snapshot: Snapshot,
        layer: int,
        candidates,
        refit_steps: int = 0,
        refit_lr: float = 0.02,
        *,
        swap: SwapTask | None = None,
        seed_bits: int = 16,
    ) -> EvalResult | SwapResult:
        """One call of the search, the same for a local pool's thread and a Ray worker: load the snapshot
        (a no-op when its versions are the loaded ones), then run the swap call ``swap``, or evaluate
        ``candidates`` (seed vectors) of ``layer``."""
        self.load_snapshot(snapshot.seeds(), snapshot.floats(), snapshot.versions)
        if swap is not None:
            return self.swap(swap, seed_bits)
        return self.evaluate(layer, candidates, refit_steps, refit_lr)

    # ---- snapshot --------------------------------------------------------------------------------
    def load_snapshot(self, seeds, floats, versions) -> None:
        """Load every layer's seeds and floats; a no-op when the versions equal the loaded ones.

        Caches survive for what the changed layers do not touch: the activations entering layers up to the
        first changed one, the finished weights of unchanged layers, and a searched layer's parts while its
        floats stay (a commit from a no-refit search changes one layer's seeds: every worker gets that
        snapshot, so rebuilding everything after every commit would cost each of them a full forward).
        """
        versions = tuple(int(v) for v in versions)
        if versions == self._versions:
            return
        given = [(tuple(int(v) for v in s), tuple(float(v) for v in f)) for s, f in zip(seeds, floats)]
        changed = [k for k, g in enumerate(given) if k >= len(self._loaded) or self._loaded[k] != g]
        for k in changed:
            self.model.layers[k].set_seeds(given[k][0])
            self.model.layers[k].set_floats(given[k][1])
        self._loaded = given
        self._versions = versions
        if not changed:  # new versions, same contents (e.g. the trainer republished): every number holds
            return
        first = min(changed)
        self._swap = {}
        self._prefix = {j: state for j, state in self._prefix.items() if j <= first}  # depends on layers < j
        self._incumbent = {}
        self._fixed_after = {j: f for j, f in self._fixed_after.items() if j not in changed}
        self._scorers = {}
        self._parts = {k: p for k, p in self._parts.items() if p[0] == given[k][1]}  # valid while floats are

    def _state_entering(self, k: int) -> dict:
        if k not in self._prefix:
            start = max((j for j in self._prefix if j < k), default=0)
            state = (
                self._prefix[start] if start in self._prefix else self.model.initial_state(self.batch.inputs)
            )
            with torch.no_grad():
                for j in range(start, k):
                    state = self.model.step(j, state, self._fixed(j, self.model.layers[j].get_seeds()))
                    if j + 1 < k and j + 1 not in self._prefix and len(self._prefix) < 64:
                        self._prefix[j + 1] = state
            self._prefix[k] = state
        return self._prefix[k]

    # ---- generation through each layer's LRU (a swap of one slot generates one component) ------------
    def _fixed(self, k: int, seeds) -> FixedTensors:
        return self.model.layers[k].generate(seeds=seeds, device=self.device)

    def _trim(self) -> None:
        for layer in self.model.layers:
            layer.cache.trim()

    @property
    def _tensor_bytes(self) -> int:
        return sum(layer.cache.nbytes for layer in self.model.layers)

    def _tensor(self, k: int, name: str, seed: int) -> torch.Tensor:
        """Layer k's layer tensor ``name`` for ``seed``, from the LRU (generated if it is not there)."""
        key = (name, seed, str(self.device), torch.float32)
        cache = self.model.layers[k].cache
        if key not in cache:
            self._prefetch_tensors(k, [(name, seed)])
        return cache[key]

    def _component(self, k: int, seed: int):
        """Layer k's component vectors of ``seed``, from the LRU (generated if it is not there)."""
        key = ("comp", seed, str(self.device), torch.float32)
        cache = self.model.layers[k].cache
        if key not in cache:
            self._prefetch_components(k, [seed])
        return cache[key]

    def _prefetch(self, k: int, seed_vectors) -> None:
        """Generate every seeded tensor of layer k these seed vectors need and the LRU lacks, in at most
        three generator calls (a compiled call costs ~20 us before it computes: one per tensor would
        dominate)."""
        r = self.model.layers[k].rank
        self._prefetch_components(k, {int(c) for seeds in seed_vectors for c in seeds[:r]})
        pairs = {(n, int(v)) for seeds in seed_vectors for n, v in zip(LAYER_SEED_NAMES, seeds[r:])}
        self._prefetch_tensors(k, pairs)

    def _prefetch_components(self, k: int, seeds) -> None:
        layer, dev = self.model.layers[k], str(self.device)
        missing = [c for c in seeds if ("comp", c, dev, torch.float32) not in layer.cache]
        if missing:
            for c, vec in layer.make_components(missing, self.device).items():
                layer.cache[("comp", c, dev, torch.float32)] = vec

    def _prefetch_tensors(self, k: int, pairs) -> None:
        layer, dev = self.model.layers[k], str(self.device)
        missing = [(n, v) for n, v in pairs if (n, v, dev, torch.float32) not in layer.cache]
        if missing:
            for (name, seed), t in layer.make_tensors(missing, self.device).items():
                layer.cache[(name, seed, dev, torch.float32)] = t

    # ---- evaluation ------------------------------------------------------------------------------
    def _snapshot_fixed(self, j: int) -> FixedTensors:
        """Layer j's tensors for the loaded snapshot (layers after the searched one do not change within
        a snapshot); kept while they fit in half the tensor budget, else rebuilt from the tensor LRU."""
        fixed = self._fixed_after.get(j)
        if fixed is None:
            seeds = self.model.layers[j].get_seeds()
            fixed = self._built(j, seeds, self._fixed(j, seeds))  # layer j's floats are fixed in a call
            held = sum(f.nbytes() for f in self._fixed_after.values())
            if held + fixed.nbytes() <= self._tensor_budget // 2:
                self._fixed_after[j] = fixed
        return fixed

    # ---- the fast path: floats fixed (no refit), so each layer's finished weight W is built once ------
    def _built(self, k: int, seeds, fixed: FixedTensors) -> FixedTensors:
        """``fixed`` with its finished weight W for the loaded floats (layers without experts; else as is)."""
        layer = self.model.layers[k]
        if layer.splits:
            return fixed
        with torch.no_grad():
            w = layer.weight(fixed, layer.g.unsqueeze(0))[0]  # (out, in)
        return dataclasses.replace(fixed, w=w)

    def _scorer(self, k: int) -> StageScorer | None:
        """The no-refit scorer of layer k for the snapshot: classifier stages without experts, else None."""
        if k not in self._scorers:
            layers = self.model.layers
            scorer = None
            if isinstance(self.model, GerminatorMLP) and not any(layer.splits for layer in layers[k:]):
                later = []
                for j in range(k + 1, len(layers)):
                    fixed = self._snapshot_fixed(j)
                    later.append((fixed.w, (layers[j].beta * fixed.bias).detach()))  # (out_j, in_j), (out_j,)
                floats = self._loaded[k][1]
                kept = self._parts[k][1] if k in self._parts else {}  # load_snapshot keeps same-float parts
                scorer = StageScorer(
                    layers[k],
                    self._state_entering(k)["h"],
                    self.batch.targets,
                    lambda name, seed: self._tensor(k, name, seed),
                    lambda seed: self._component(k, seed),
                    later,
                    self.model.act_ or self.model.act,
                    self.model.loss_from_logits,
                    parts=kept,
                )
                self._parts[k] = (floats, scorer.parts)
            self._scorers[k] = scorer
        return self._scorers[k]

    def _loss(self, k: int, state: dict, fixed: FixedTensors) -> torch.Tensor:
        fixed_all = {j: self._snapshot_fixed(j) for j in range(k + 1, len(self.model.layers))}
        fixed_all[k] = fixed
        out = self.model.run(state, k, fixed=fixed_all)
        return self.model.loss_from_logits(out["logits"], self.batch.targets)

    def _score(self, k: int, seeds, floats0, refit_steps: int, refit_lr: float):
        layer = self.model.layers[k]
        state = self._state_entering(k)
        fixed = self._fixed(k, seeds)
        if refit_steps <= 0:  # the layer holds floats0 (evaluate restores them): nothing to reset or read
            built = fixed if layer.splits else self._built(k, seeds, fixed)
            with torch.no_grad():
                loss = float(self._loss(k, state, built))
            return (loss if math.isfinite(loss) else math.inf), tuple(floats0)
        layer.set_floats(floats0)
        params = list(layer.parameters())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=refit_lr)
        for _ in range(refit_steps):
            loss = self._loss(k, state, fixed)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad():
            loss = float(self._loss(k, state, fixed))
        floats = layer.get_floats()
        if not all(math.isfinite(v) for v in floats):
            loss, floats = math.inf, tuple(floats0)
        return (loss if math.isfinite(loss) else math.inf), floats

    def evaluate(self, k: int, candidates, refit_steps: int = 0, refit_lr: float = 0.02) -> EvalResult:
        """Loss of the incumbent and of every candidate seed vector for layer ``k``, same batch.

        Returns an EvalResult (losses in candidate order; non-finite losses reported as inf).
        Raises SpecError for out-of-range seeds (checked before anything is computed).
        """
        t0 = time.perf_counter()
        layer = self.model.layers[k]
        incumbent_seeds = layer.get_seeds()
        floats0 = layer.get_floats()
        for seeds in candidates:  # validate all before computing anything (the layer stays as it is)
            layer.check_seeds(seeds)
        self._prefetch(k, [incumbent_seeds, *candidates])
        key = (k, int(refit_steps), float(refit_lr))
        scorer = self._scorer(k) if refit_steps <= 0 else None
        try:
            if scorer is not None:  # the hot loop: floats fixed, a classifier stage
                measure_incumbent = key not in self._incumbent
                losses = scorer.losses([incumbent_seeds, *candidates] if measure_incumbent else candidates)
                if measure_incumbent:
                    self._incumbent[key] = (losses.pop(0), tuple(floats0))
                floats = [tuple(floats0)] * len(candidates)
            else:
                if key not in self._incumbent:
                    self._incumbent[key] = self._score(k, incumbent_seeds, floats0, refit_steps, refit_lr)
                losses, floats = [], []
                for seeds in candidates:
                    loss, fl = self._score(k, seeds, floats0, refit_steps, refit_lr)
                    losses.append(loss)
                    floats.append(fl)
            inc_loss, inc_floats = self._incumbent[key]
        finally:
            layer.set_seeds(incumbent_seeds)
            layer.set_floats(floats0)
            self._trim()
        return EvalResult(
            layer=k,
            versions=self._versions or (),
            incumbent_loss=inc_loss,
            incumbent_floats=inc_floats,
            losses=tuple(losses),
            floats=tuple(floats),
            worker=self.worker_id,
            seconds=time.perf_counter() - t0,
        )

    # ---- swaps (docs/learning.md): screen by the gradient, verify on the loss --------------------------
    def _grad(self, k: int) -> torch.Tensor:
        """dL/dW of layer k (out, in) on the batch for the loaded snapshot, the routing groups summed."""
        layer = self.model.layers[k]
        probe = torch.zeros(layer.out_features, layer.in_features, device=self.device, requires_grad=True)
        layer.probe = probe
        try:
            with torch.enable_grad():
                self._loss(k, self._state_entering(k), self._fixed(k, layer.get_seeds())).backward()
        finally:
            layer.probe = None
        return probe.grad

    def _swap_scorer(self, k: int, mode: str) -> SwapScorer:
        key = (k, mode)
        if key not in self._swap:
            layer = self.model.layers[k]
            fixed = self._fixed(k, layer.get_seeds())
            grad = self._grad(k) if mode == "screen" else None
            self._swap[key] = SwapScorer(layer, grad, fixed.f1, fixed.f2, self._loss_with(k, fixed))
        return self._swap[key]

    def _loss_with(self, k: int, fixed: FixedTensors):
        """``loss_with(slot, seed, comp, g_scaled)`` for layer k (see SwapScorer). On a classifier stage the
        layer's output is linear in the slot's scalar: ``x W_without^T + beta b`` is kept per slot and
        ``x Phi^T`` per candidate, so each point of the line search costs one (B, out) add and the later
        layers. Elsewhere the layer's own forward with the slot's seed and floats set."""
        layer = self.model.layers[k]
        scorer = self._scorer(k)
        seeds = layer.get_seeds()
        if scorer is not None:
            phi_buf = torch.empty_like(fixed.f1)  # (out, in)
            xphi_buf = torch.empty_like(scorer.scratch["y"])  # (B, out)
            lam = scorer.lam  # (r,) alpha c g
            memo: list = [None, None]  # (slot, seed) -> x Phi^T of the candidate last verified

            def without(slot: int) -> torch.Tensor:  # x W^T + beta b with the slot's term removed
                kept = self._swap.get((k, "w0"))
                if kept is None or kept[0] != slot:
                    old = self._component(k, seeds[slot])
                    phi_old = component_phi(fixed.f1, fixed.f2, old)  # (out, in)
                    w0 = scorer.incumbent_weight() - float(lam[slot]) * phi_old  # (out, in)
                    kept = (slot, scorer.output_of_weight(w0))  # (B, out)
                    self._swap[(k, "w0")] = kept
                return kept[1]

            def fast(slot: int, seed: int, comp, g_scaled: float) -> float:
                with torch.no_grad():
                    if memo[0] != (slot, seed):
                        phi = component_phi(fixed.f1, fixed.f2, comp, out=phi_buf)  # (out, in)
                        memo[0], memo[1] = (slot, seed), torch.mm(scorer.x, phi.T, out=xphi_buf)  # (B, out)
                    y = torch.add(without(slot), memo[1], alpha=g_scaled, out=scorer.scratch["y"])
                    loss = float(scorer.loss_of_output(y))
                return loss if math.isfinite(loss) else math.inf

            return fast
        state = self._state_entering(k)
        scale = float(layer.alpha * layer.c)

        def generic(slot: int, seed: int, comp, g_scaled: float) -> float:
            cand = list(seeds)
            cand[slot] = seed
            layer.set_seeds(cand)
            with torch.no_grad():
                g_old, e_old = float(layer.g[slot]), layer.experts[:, slot].clone()
                layer.g[slot] = g_scaled / scale
                layer.experts[:, slot] = 0.0
                try:
                    loss = float(self._loss(k, state, self._fixed(k, cand)))
                finally:
                    layer.g[slot] = g_old
                    layer.experts[:, slot] = e_old
                    layer.set_seeds(seeds)
            return loss if math.isfinite(loss) else math.inf

        return generic

    def swap(self, task: SwapTask, seed_bits: int) -> SwapResult:
        """Per slot of ``task``, the best verified swap against the loaded snapshot (screen the candidates
        by ``<G, Phi>``, verify the top K with a line search of the slot's rank scalar; see swap_scorer),
        and the incumbent's loss measured in the same call. Candidates the layer already holds are dropped.
        Raises SpecError for a slot outside the rank."""
        t0 = time.perf_counter()
        k = task.layer
        layer = self.model.layers[k]
        seeds, floats0 = layer.get_seeds(), layer.get_floats()
        for st in task.slots:
            if not 0 <= st.slot < layer.rank:
                raise SpecError(f"slots: slot {st.slot} is outside [0, {layer.rank}) for layer {k}")
        key = (k, 0, 0.0)
        if key not in self._incumbent:
            scorer = self._scorer(k)
            if scorer is not None:
                self._incumbent[key] = (scorer.losses([seeds])[0], tuple(floats0))
            else:
                self._incumbent[key] = self._score(k, seeds, floats0, 0, 0.0)
        inc_loss = self._incumbent[key][0]
        sw = self._swap_scorer(k, task.mode)
        held = set(seeds[: layer.rank])
        n_experts = sum(layer.splits)
        out = []
        try:
            for st in task.slots:
                cands = _fresh(expand_block(st.block, seed_bits), held)  # (N,) int64
                if len(cands) and int(cands.max()) >> layer.seed_bits:
                    raise SpecError(
                        f"slots[{st.slot}].block: a candidate seed {int(cands.max())} is outside "
                        f"[0, 2**{layer.seed_bits}) for layer {k}"
                    )
                if task.mode == "screen" and len(cands):
                    scores = sw.screen(cands)  # (N,)
                    top = scores.abs().topk(min(task.top_k, len(cands))).indices.tolist()
                    # dL/dg_k = alpha c score: search the descent direction (alpha may be negative)
                    picks = [
                        (int(cands[j]), (-1.0 if float(scores[j]) * sw.scale > 0 else 1.0,)) for j in top
                    ]
                else:
                    picks = [(int(c), (1.0, -1.0)) for c in cands[: task.top_k]]
                comps = layer.make_components([c for c, _ in picks], self.device) if picks else {}
                best_loss, best_seed, best_g = inc_loss, None, 0.0
                for seed, signs in picks:
                    loss, g, _ = sw.verify(st.slot, seed, comps[seed], signs)
                    if loss < best_loss:
                        best_loss, best_seed, best_g = loss, seed, g
                out.append(
                    SlotSwap(
                        slot=st.slot,
                        slot_gen=st.slot_gen,
                        seed=best_seed,
                        slot_floats=(best_g, *([0.0] * n_experts)) if best_seed is not None else (),
                        loss=best_loss if best_seed is not None else math.inf,
                        screened=len(cands) if task.mode == "screen" else 0,
                        verified=len(picks),
                    )
                )
        finally:
            layer.set_seeds(seeds)
            layer.set_floats(floats0)
            self._trim()
        return SwapResult(
            layer=k,
            versions=self._versions or (),
            incumbent_loss=inc_loss,
            swaps=tuple(out),
            worker=self.worker_id,
            seconds=time.perf_counter() - t0,
        )

    def full_loss(self) -> float:
        """Loss of the loaded snapshot on the batch."""
        with torch.no_grad():
            return float(self.model.loss(self.batch))


class TensorLRU(OrderedDict):
    """A layer's cache of generated tensors (a tensor or a tuple of tensors per key), least recently used
    first; :meth:`trim` drops the oldest until it holds at most ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget, self.nbytes = budget, 0

    @staticmethod
    def _size(value) -> int:
        parts = value if isinstance(value, tuple) else (value,)
        return sum(t.numel() * t.element_size() for t in parts)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        if key in self:
            self.nbytes -= self._size(super().__getitem__(key))
        super().__setitem__(key, value)
        self.nbytes += self._size(value)

    def trim(self) -> None:
        while self.nbytes > self.budget and self:
            _, value = self.popitem(last=False)
            self.nbytes -= self._size(value)


def _fresh(seeds: np.ndarray, held: set[int]) -> np.ndarray:
    """``seeds`` (N,) without repeats (first occurrence kept, order kept) and without the ``held`` ones."""
    _, first = np.unique(seeds, return_index=True)
    out = seeds[np.sort(first)]
    return out[~np.isin(out, np.fromiter(held, dtype=np.int64, count=len(held)))]

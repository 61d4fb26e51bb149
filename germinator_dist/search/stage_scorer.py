"""No-refit losses of seed candidates for one layer of a classifier: the search worker's hot loop.

With the floats fixed, a candidate for layer k of a :class:`GerminatorMLP` (no experts) differs from the
incumbent in a slot or two, and its loss is

    W = F1 * W1' + F2 * W2' + t'   (alpha c folded in: W1' = A1 diag(alpha c g) B1, t' = alpha c sigma_t T)
    h = act(x W^T + beta b);  later layers on h with their finished weights;  loss = CE(logits, targets)

built with the layer's own ``core.layers.compose`` and ``core.layers.fine_factors``. The scorer keeps every
part of the incumbent for the snapshot (W1', W2' for its component set, F1 and F2 per mask/scale pair, t'
per shift seed, beta b per bias seed, and x W^T); a candidate that swaps a few components gets W1', W2' as
the incumbent's plus rank-one corrections (two ``addr`` per swapped component), and computes only the other
parts its changed slots touch, into scratch buffers allocated once. A candidate that changes only the bias
seed reuses the incumbent's x W^T (a bias add, no matmul).

Pure core: torch only. ``search.evaluator.LayerEvaluator`` builds one per (snapshot, layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from germinator_dist.core.layers import Component, SeedLinear, compose, factor_product, fine_factors

TensorSource = Callable[[str, int], torch.Tensor]  # (layer tensor name, seed) -> that tensor, as generated
ComponentSource = Callable[[int], Component]  # component seed -> (a1 (out,), b1 (in,), a2 (out,), b2 (in,))


class StageScorer:
    """Losses of candidate seed vectors for layer ``layer`` fed by ``x``, with fixed later layers.

    ``tensors(name, seed)`` returns a layer tensor and ``components(seed)`` a component's vectors (the
    evaluator's cache, after a prefetch); ``later`` holds (W, beta b) of every later layer, finished for the
    snapshot; ``act_`` is the activation between layers, in place (the scorer owns the buffers it is applied
    to); ``loss`` maps logits and targets to the scalar loss the table stores.
    """

    def __init__(
        self,
        layer: SeedLinear,
        x: torch.Tensor,  # (B, in)
        targets: torch.Tensor,  # (B,)
        tensors: TensorSource,
        components: ComponentSource,
        later: Sequence[tuple[torch.Tensor, torch.Tensor]],  # [(W (out_j, in_j), beta b (out_j,))]
        act_: Callable[[torch.Tensor], torch.Tensor],
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        parts: dict[tuple, object] | None = None,
    ) -> None:
        assert not layer.splits and x.dim() == 2, "classifier stages without experts only"
        self.x, self.targets, self.act_, self.loss = x, targets, act_, loss
        self.tensors, self.components = tensors, components
        self.rank = layer.rank
        self.incumbent = layer.get_seeds()
        with torch.no_grad():
            self.lam = layer.scaled_lam(layer.g.detach())  # (r,)
            self.t_scale = float(layer.alpha.detach() * layer.c * layer.sigma_t)
            self.beta = float(layer.beta)
        self.lam_list = self.lam.tolist()
        self.sigma_s = layer.sigma_s
        out, inp, batch = layer.out_features, layer.in_features, x.shape[0]
        empty = lambda *shape: torch.empty(*shape, device=x.device, dtype=x.dtype)  # noqa: E731
        # one scratch buffer per part: a candidate's own parts live only until its loss is taken
        self.scratch = {
            "w12": (empty(out, inp), empty(out, inp)), "f": (empty(out, inp), empty(out, inp)),
            "t": empty(out, inp), "b": empty(out), "w": empty(out, inp), "y": empty(batch, out),
        }  # fmt: skip
        self.later = [(w, b, empty(batch, w.shape[0])) for w, b in later]  # (W, beta b, output buffer)
        # the incumbent's parts, kept for the snapshot; ``parts`` of an earlier scorer of this layer with the
        # same floats carries over those the new incumbent still uses (a commit changes a slot or two)
        self.parts: dict[tuple, object] = {key: v for key, v in (parts or {}).items() if self._uses(key)}
        self._xw: torch.Tensor | None = None  # (B, out) x @ W_incumbent^T, made on first need

    # ---- parts ---------------------------------------------------------------------------------------
    def _uses(self, key: tuple) -> bool:
        """Whether the incumbent uses the part ``key`` (its kind, then the seeds it is made from)."""
        r, inc = self.rank, self.incumbent
        made_of = {"w12": inc[:r], "f": inc[r : r + 2], "t": inc[r + 2 : r + 3], "b": inc[r + 3 :]}
        return key[0] in made_of and tuple(made_of[key[0]]) == tuple(key[1:])

    def _part(self, key: tuple, keep: bool, make):
        value = self.parts.get(key)
        if value is None:
            value = make(None if keep else self.scratch[key[0]])
            if keep:
                self.parts[key] = value
        return value

    def _factors(self, comps: tuple[int, ...], out=None):
        """W1', W2' (out, in) of a whole component set, by two rank-r products."""
        vecs = [self.components(c) for c in comps]
        a1, b1, a2, b2 = (torch.stack([v[i] for v in vecs]) for i in range(4))  # (r, out), (r, in), ...
        o1, o2 = (None, None) if out is None else out
        return factor_product(a1.T, self.lam, b1, out=o1), factor_product(a2.T, self.lam, b2, out=o2)

    def _w12(self, comps: tuple[int, ...]):
        inc = tuple(self.incumbent[: self.rank])
        if comps == inc:
            return self._part(("w12", *comps), True, lambda o: self._factors(comps))
        changed = [k for k in range(self.rank) if comps[k] != inc[k]]
        if len(changed) > max(2, self.rank // 8):  # many swapped components: rebuild
            return self._factors(comps, out=self.scratch["w12"])
        w1_inc, w2_inc = self._part(("w12", *inc), True, lambda o: self._factors(inc))
        w1, w2 = self.scratch["w12"]
        w1.copy_(w1_inc)
        w2.copy_(w2_inc)
        for k in changed:  # swap component k: add the new one's rank-one term, remove the old one's
            lam = self.lam_list[k]
            new, old = self.components(comps[k]), self.components(inc[k])
            w1.addr_(new[0], new[1], alpha=lam).addr_(old[0], old[1], alpha=-lam)
            w2.addr_(new[2], new[3], alpha=lam).addr_(old[2], old[3], alpha=-lam)
        return w1, w2

    def _w(self, s: tuple[int, ...], out: torch.Tensor) -> torch.Tensor:
        """The finished W (out, in) of seed vector ``s`` into ``out``."""
        r, inc, get = self.rank, self.incumbent, self.tensors
        mask, scale, shift = s[r], s[r + 1], s[r + 2]
        w1, w2 = self._w12(tuple(s[:r]))
        fine = lambda o: fine_factors(get("mask", mask), get("scale", scale), self.sigma_s, out=o)  # noqa: E731
        f1, f2 = self._part(("f", mask, scale), (mask, scale) == tuple(inc[r : r + 2]), fine)
        make_t = lambda o: torch.mul(get("shift", shift), self.t_scale, out=o)  # noqa: E731
        t = self._part(("t", shift), shift == inc[r + 2], make_t)  # (out, in)
        return compose(f1, w1, f2, w2, t, out=out)

    def _bias(self, seed: int, keep: bool) -> torch.Tensor:
        make = lambda o: torch.mul(self.tensors("bias", seed), self.beta, out=o)  # noqa: E731
        return self._part(("b", seed), keep, make)  # (out,)

    def loss_of_output(self, y: torch.Tensor) -> torch.Tensor:
        """The loss (0-dim) from this layer's output y (B, out): the later layers run in the scorer's
        buffers and the activation is applied to ``y`` in place, so ``y`` must be a buffer of the caller's."""
        for w_j, b_j, buf in self.later:
            y = torch.addmm(b_j, self.act_(y), w_j.T, out=buf)  # (B, out_j)
        return self.loss(y, self.targets)

    def output_of_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``x w^T + beta b`` (B, out) with the incumbent's bias, a new tensor: the layer's output for a
        finished weight ``w`` (out, in)."""
        return torch.addmm(self._bias(self.incumbent[-1], True), self.x, w.T)

    def incumbent_weight(self) -> torch.Tensor:
        """The incumbent's finished W (out, in), kept for the snapshot."""
        make = lambda o: self._w(tuple(self.incumbent), torch.empty_like(self.scratch["w"]))  # noqa: E731
        return self._part(("wfull",), True, make)

    # ---- losses --------------------------------------------------------------------------------------
    def losses(self, candidates: Sequence[Sequence[int]]) -> list[float]:
        """The loss of each seed vector (non-finite losses as inf). Seeds must already be checked."""
        inc = tuple(self.incumbent)
        y_buf = self.scratch["y"]
        values = []
        with torch.no_grad():
            for seeds in candidates:
                s = tuple(int(v) for v in seeds)
                bias = self._bias(s[-1], s[-1] == inc[-1])  # (out,)
                if s[:-1] == inc[:-1]:  # the incumbent's W: reuse x W^T
                    if self._xw is None:
                        self._xw = self.x @ self._w(inc, self.scratch["w"]).T  # (B, out)
                    y = torch.add(self._xw, bias, out=y_buf)
                else:
                    w = self._w(s, self.scratch["w"])  # (out, in)
                    y = torch.addmm(bias, self.x, w.T, out=y_buf)  # (B, out)
                values.append(self.loss_of_output(y))
            out = torch.stack(values).tolist() if values else []
        return [v if math.isfinite(v) else math.inf for v in out]

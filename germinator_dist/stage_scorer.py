"""No-refit losses of seed candidates for one layer of a classifier: the search worker's hot loop.

With the floats fixed, a candidate for layer k of a :class:`GerminatorMLP` (no experts) differs from the
incumbent in a slot or two, and its loss is

    W = F1 * W1 + F2 * W2 + t          (alpha c folded in: W1 = A1 diag(alpha c g) B1, t = alpha c sigma_t T)
    h = act(x W^T + beta b);  later layers on h with their finished weights;  loss = CE(logits, targets)

which is the layer's formula (DESIGN.md section 2) in the order ``SeedLinear.weight`` computes it. The scorer
keeps every part of the incumbent for the snapshot (W1, W2 per factor-seed pair, F1 and F2 per mask/scale
pair, t per shift seed, beta b per bias seed, and x W^T); a candidate computes only the parts its changed
slots touch, into scratch buffers that are allocated once. Nothing per candidate allocates megabytes: on VMs
where a fresh allocation page-faults, that alone was 0.3-3 ms a candidate. A candidate that changes only the
bias seed reuses the incumbent's x W^T (a bias add, no matmul).

Pure core: torch only. :class:`~germinator_dist.evaluator.LayerEvaluator` builds one per (snapshot, layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from germinator_dist.layers import SeedLinear
from germinator_dist.records import SEED_NAMES

# the seed slots each part of W is made from (a part is kept under its kind and those seeds)
PART_SLOTS = {"w1": ("a1", "b1"), "w2": ("a2", "b2"), "f": ("mask", "scale"), "t": ("shift",), "b": ("bias",)}
TensorSource = Callable[[str, int], torch.Tensor]  # (seed name, seed) -> that seeded tensor, as generated


class StageScorer:
    """Losses of candidate seed vectors for layer ``layer`` fed by ``x``, with fixed later layers.

    ``tensors(name, seed)`` returns a seeded tensor of this layer (the evaluator's LRU, after a prefetch);
    ``later`` holds (W, beta b) of every later layer, finished for the snapshot; ``act_`` is the activation
    between layers, in place (the scorer owns the buffers it is applied to); ``loss`` maps logits and targets
    to the scalar loss the table stores.
    """

    def __init__(
        self,
        layer: SeedLinear,
        x: torch.Tensor,  # (B, in)
        targets: torch.Tensor,  # (B,)
        tensors: TensorSource,
        later: Sequence[tuple[torch.Tensor, torch.Tensor]],  # [(W (out_j, in_j), beta b (out_j,))]
        act_: Callable[[torch.Tensor], torch.Tensor],
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        parts: dict[tuple, object] | None = None,
    ) -> None:
        assert not layer.splits and x.dim() == 2, "classifier stages without experts only"
        self.x, self.targets, self.tensors, self.act_, self.loss = x, targets, tensors, act_, loss
        self.incumbent = layer.get_seeds()
        with torch.no_grad():
            scale = layer.alpha.detach() * layer.c  # 0-dim
            self.lam = layer.g.detach() * scale  # (r,)
            self.t_scale = float(scale * layer.sigma_t)
            self.beta = float(layer.beta)
        self.sigma_s = layer.sigma_s
        out, inp, batch = layer.out_features, layer.in_features, x.shape[0]
        empty = lambda *shape: torch.empty(*shape, device=x.device, dtype=x.dtype)  # noqa: E731
        # one scratch buffer per part: a candidate's own parts live only until its loss is taken
        self.scratch = {
            "w1": empty(out, inp), "w2": empty(out, inp), "f": (empty(out, inp), empty(out, inp)),
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
        inc = dict(zip(SEED_NAMES, self.incumbent))
        return tuple(inc[n] for n in PART_SLOTS[key[0]]) == key[1:]

    def _part(self, key: tuple, keep: bool, make):
        value = self.parts.get(key)
        if value is None:
            value = make(None if keep else self.scratch[key[0]])
            if keep:
                self.parts[key] = value
        return value

    def _w(self, s: dict[str, int], inc: dict[str, int], out: torch.Tensor) -> torch.Tensor:
        """The finished W (out, in) of seed vector ``s`` into ``out``."""
        get = self.tensors

        def factor(a: str, b: str):
            return lambda o: torch.mm(get(a, s[a]) * self.lam, get(b, s[b]), out=o)  # (out, r) @ (r, in)

        def fine(o):  # F1 = M * (1 + sigma_s S), F2 = (1 - M) * (1 + sigma_s S)
            o1, o2 = (None, None) if o is None else o
            f = torch.mul(get("scale", s["scale"]), self.sigma_s, out=o2).add_(1.0)  # (out, in)
            f1 = torch.mul(get("mask", s["mask"]), f, out=o1)
            return f1, f.sub_(f1)

        same = lambda *names: all(s[n] == inc[n] for n in names)  # noqa: E731
        w1 = self._part(("w1", s["a1"], s["b1"]), same("a1", "b1"), factor("a1", "b1"))  # (out, in)
        w2 = self._part(("w2", s["a2"], s["b2"]), same("a2", "b2"), factor("a2", "b2"))  # (out, in)
        f1, f2 = self._part(("f", s["mask"], s["scale"]), same("mask", "scale"), fine)
        shift = lambda o: torch.mul(get("shift", s["shift"]), self.t_scale, out=o)  # noqa: E731
        t = self._part(("t", s["shift"]), same("shift"), shift)  # (out, in)
        return torch.addcmul(t, f1, w1, out=out).addcmul_(f2, w2)

    def _bias(self, seed: int, keep: bool) -> torch.Tensor:
        make = lambda o: torch.mul(self.tensors("bias", seed), self.beta, out=o)  # noqa: E731
        return self._part(("b", seed), keep, make)  # (out,)

    # ---- losses --------------------------------------------------------------------------------------
    def losses(self, candidates: Sequence[Sequence[int]]) -> list[float]:
        """The loss of each seed vector (non-finite losses as inf). Seeds must already be range-checked."""
        inc = dict(zip(SEED_NAMES, self.incumbent))
        y_buf = self.scratch["y"]
        values = []
        with torch.no_grad():
            for seeds in candidates:
                s = dict(zip(SEED_NAMES, (int(v) for v in seeds)))
                bias = self._bias(s["bias"], s["bias"] == inc["bias"])  # (out,)
                if all(s[n] == inc[n] for n in SEED_NAMES if n != "bias"):  # the incumbent's W: reuse x W^T
                    if self._xw is None:
                        self._xw = self.x @ self._w(inc, inc, self.scratch["w"]).T  # (B, out)
                    y = torch.add(self._xw, bias, out=y_buf)
                else:
                    w = self._w(s, inc, self.scratch["w"])  # (out, in)
                    y = torch.addmm(bias, self.x, w.T, out=y_buf)  # (B, out)
                for w_j, b_j, buf in self.later:
                    y = torch.addmm(b_j, self.act_(y), w_j.T, out=buf)  # (B, out_j)
                values.append(self.loss(y, self.targets))
            out = torch.stack(values).tolist() if values else []
        return [v if math.isfinite(v) else math.inf for v in out]

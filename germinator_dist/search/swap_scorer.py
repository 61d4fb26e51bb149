"""Swap candidates for one component slot of one layer: gradient screen, then loss verification.

For layer l and a snapshot, ``G = dL/dW_l`` on the fitness batch is computed once at the incumbent (one
backward pass through the layers after l; with experts, summed over the routing groups, since a swapped
slot's expert entries start at zero and its new component then adds the same term to every group). A
candidate seed s for slot k adds ``alpha c lam_k Phi_s`` to W with ``Phi_s = F1 * a1 b1^T + F2 * a2 b2^T``,
so to first order around the incumbent

    d/dt L(W + t alpha c Phi_s) at t = 0  =  alpha c <G, Phi_s>
                                          =  alpha c (a1^T (G * F1) b1 + a2^T (G * F2) b2)

and one matrix product per factor scores a whole batch of candidates (their vectors stacked), with no
forward pass each. The top K by ``|score|`` are then verified on the fitness loss with slot k replaced and
its rank scalar fitted by a 1-D line search along the descent direction (a grid of magnitudes around the
layer's median ``|g|``, then a parabola through the best three). ``loss`` mode skips the screen: K
candidates, both signs. A swap is proposed only if its loss is below the incumbent's, measured in the
same call on the same batch; the screen only orders candidates.

Pure core: torch only. ``search.evaluator.LayerEvaluator`` builds one per (snapshot, layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from germinator_dist.core import prng
from germinator_dist.core.layers import Component, SeedLinear

MAGNITUDES = (0.25, 0.5, 1.0, 2.0, 4.0)  # line-search grid, in units of the layer's median |g|
SCREEN_CHUNK = 2048  # candidates scored per product (bounds the (N, in) temporaries)


class SwapScorer:
    """Screens and verifies swap candidates for the component slots of one layer, for one snapshot.

    ``grad`` is dL/dW of the layer (out, in) (the routing groups summed); ``fixed`` its generated tensors
    (F1, F2 used); ``loss_with(slot, seed, comp, g_scaled)`` returns the fitness loss with ``slot`` holding
    component ``comp`` of ``seed`` at scaled rank scalar ``g_scaled`` (alpha c included) and that slot's
    expert entries at zero.
    """

    def __init__(
        self,
        layer: SeedLinear,
        grad: torch.Tensor | None,  # (out, in), None in loss mode
        f1: torch.Tensor,  # (out, in)
        f2: torch.Tensor,  # (out, in)
        loss_with: Callable[[int, int, Component, float], float],
    ) -> None:
        self.layer, self.loss_with = layer, loss_with
        with torch.no_grad():
            self.scale = float(layer.alpha * layer.c)
            g = layer.g.detach().abs()
            self.g_unit = float(g.median()) if float(g.median()) > 0 else float(g.mean()) or 1.0
        self.gf = None if grad is None else (grad * f1, grad * f2)  # (out, in) each
        self._buf: torch.Tensor | None = None  # the screen's component buffer (prng.components ``out``)

    def screen(self, seeds: Sequence[int]) -> torch.Tensor:
        """``<G, Phi_s>`` (N,) of each candidate seed, per unit of its scaled rank scalar."""
        assert self.gf is not None, "screening needs the layer's gradient"
        gf1, gf2 = self.gf
        out = []
        if self._buf is None:  # one buffer for every batch this scorer screens
            lay = self.layer
            size = prng.component_values(SCREEN_CHUNK, lay.out_features, lay.in_features)
            self._buf = torch.empty(size, dtype=gf1.dtype, device=gf1.device)
        with torch.no_grad():
            for i in range(0, len(seeds), SCREEN_CHUNK):
                chunk = seeds[i : i + SCREEN_CHUNK]
                a1, b1, a2, b2 = self.layer.component_batch(chunk, gf1.device, gf1.dtype, out=self._buf)
                s = ((a1 @ gf1) * b1).sum(1) + ((a2 @ gf2) * b2).sum(1)  # (n,)
                out.append(s)
        return torch.cat(out) if out else torch.empty(0)

    def verify(
        self, slot: int, seed: int, comp: Component, signs: Sequence[float]
    ) -> tuple[float, float, int]:
        """Line search of the slot's rank scalar for candidate ``seed``: (loss, g (unscaled), evals).

        Each sign in ``signs`` is searched over ``MAGNITUDES`` of the median |g|, then a parabola through the
        best grid point and its neighbours (in log magnitude) proposes one more point.
        """
        best, best_g, evals = math.inf, 0.0, 0
        for sign in signs:
            losses = []
            for m in MAGNITUDES:
                g = sign * m * self.g_unit
                losses.append(self.loss_with(slot, seed, comp, g * self.scale))
                evals += 1
            i = min(range(len(losses)), key=losses.__getitem__)
            if 0 < i < len(losses) - 1:
                x = [math.log(MAGNITUDES[j]) for j in (i - 1, i, i + 1)]
                y = [losses[j] for j in (i - 1, i, i + 1)]
                denom = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
                a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / denom
                b = (
                    x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])
                ) / denom
                if a > 0:
                    xv = min(max(-b / (2 * a), x[0]), x[2])
                    g = sign * math.exp(xv) * self.g_unit
                    v = self.loss_with(slot, seed, comp, g * self.scale)
                    evals += 1
                    if v < losses[i]:
                        losses.append(v)
                        if v < best:
                            best, best_g = v, g
            if losses[i] < best:
                best, best_g = losses[i], sign * MAGNITUDES[i] * self.g_unit
        return best, best_g, evals

"""The GERMINATOR layer: weights regenerated from integer seeds, a few float scalars trained by gradient.

Rank stacking (docs/layout.md): every rank component k has its own seed ``s_k``, which generates column k
of ``A1``, ``A2`` and row k of ``B1``, ``B2``; the layer adds four seeds of its own (mask, scale, shift,
bias). For routing group t (rank scalars ``lam(t) = g + sum_j e[j][t mod e_j]``):

    W1(t) = A1 diag(lam(t)) B1          W2(t) = A2 diag(lam(t)) B2
    W(t)  = alpha * c * ((M * W1(t) + (1 - M) * W2(t)) * (1 + sigma_s * S) + sigma_t * T)
    y     = x W(t)^T + beta * b

:func:`compose` is the one place W is built: ``F1 * W1' + F2 * W2' + t'`` with ``F1 = M (1 + sigma_s S)``,
``F2 = (1 - M)(1 + sigma_s S)`` and alpha c folded into the rank scalars and into ``t' = alpha c sigma_t T``
(:func:`scaled_lam`, :func:`scaled_shift`), which is the same formula. The forward pass, the search
evaluator and the stage scorer all call it, each with buffers of its own. Seeds are integer buffers;
alpha, beta, g and the expert vectors are the only parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from germinator_dist.core import prng
from germinator_dist.errors import SpecError
from germinator_dist.records import (
    LAYER_SEED_NAMES,
    N_LAYER_SEEDS,
    SEED_WIDTHS,
    duplicate_component,
    seed_names,
)

# Philox role word per seeded tensor: the component vectors a1, b1, a2, b2, then the layer tensors
ROLE = {"a1": 1, "b1": 2, "a2": 3, "b2": 4, "mask": 5, "scale": 6, "shift": 7, "bias": 8}
SECOND_MOMENT = 1.0 / 3.0  # E[a^2] of int8/128 (and of uint8/256): about 1/3
# Tensors with fewer elements are generated as the head of a stream this long and cut: the same bits
# (element i always comes from Philox block i // per_block), but on the generator's compiled path rather
# than its eager one, whose per-operation overhead dominates a request of a few hundred elements.
SMALL_TENSOR = 4096
Component = tuple  # (a1 (out,), b1 (in,), a2 (out,), b2 (in,)) of one component seed


@dataclass
class FixedTensors:
    """The seeded (non-trainable) tensors of one layer, generated for one seed vector."""

    a1: torch.Tensor  # (out, r)
    b1: torch.Tensor  # (r, in)
    a2: torch.Tensor  # (out, r)
    b2: torch.Tensor  # (r, in)
    f1: torch.Tensor  # (out, in)  M * (1 + sigma_s S)
    f2: torch.Tensor  # (out, in)  (1 - M) * (1 + sigma_s S)
    t: torch.Tensor  # (out, in)  sigma_t * T
    bias: torch.Tensor  # (out,)
    # the finished weight W (alpha, c and g applied) of a layer without experts, for the floats it was built
    # with: an evaluator that holds floats fixed builds it once per seed vector; forward then skips weight()
    w: torch.Tensor | None = None  # (out, in)

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in vars(self).values() if x is not None)


# ---- the formula -----------------------------------------------------------------------------------------
def factor_product(a: torch.Tensor, lam: torch.Tensor, b: torch.Tensor, out=None) -> torch.Tensor:
    """``A diag(lam) B``: a (out, r), lam (r,) or (G, r), b (r, in) -> (out, in) or (G, out, in)."""
    if lam.dim() == 1:
        return torch.mm(a * lam, b, out=out)  # (out, in)
    return torch.einsum("ok,gk,ki->goi", a, lam, b)  # (G, out, in)


def fine_factors(mask: torch.Tensor, scale: torch.Tensor, sigma_s: float, out=None):
    """``F1 = M (1 + sigma_s S)``, ``F2 = (1 - M)(1 + sigma_s S)``, each (out, in); ``out`` a buffer pair."""
    o1, o2 = (None, None) if out is None else out
    fine = torch.mul(scale, sigma_s, out=o2).add_(1.0)  # (out, in)
    f1 = torch.mul(mask, fine, out=o1)
    return f1, fine.sub_(f1)


def compose(f1, w1, f2, w2, t, out=None) -> torch.Tensor:
    """The finished weight ``F1 * W1' + F2 * W2' + t'`` (alpha c already folded into W1', W2', t')."""
    return torch.addcmul(t, f1, w1, out=out).addcmul_(f2, w2)


def component_phi(f1, f2, comp: Component, out=None) -> torch.Tensor:
    """What one component adds to W per unit of its (scaled) rank scalar: ``F1 * a1 b1^T + F2 * a2 b2^T``."""
    a1, b1, a2, b2 = comp
    phi = torch.outer(a1, b1, out=out).mul_(f1)  # (out, in)
    return phi.addcmul_(f2, torch.outer(a2, b2))


class SeedLinear(nn.Module):
    """One seeded layer ``in_features -> out_features`` (see module docstring).

    Raises SpecError on invalid sizes, splits, int dtype, out-of-range or duplicated component seeds.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        splits: tuple[int, ...] = (),
        *,
        int_dtype: str = "int8",
        seed_bits: int = 16,
        mask_density: float = 0.5,
        sigma_s: float = 0.1,
        sigma_t: float = 0.1,
        stream: int = 0,
        seeds: tuple[int, ...] | None = None,
        fan_in_norm: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("rank", rank)):
            if not isinstance(v, int) or v < 1:
                raise SpecError(f"{name}: expected a positive integer, got {v!r}")
        if any(e < 1 for e in splits):
            raise SpecError(f"splits: every expert count must be >= 1, got {list(splits)}")
        if int_dtype not in ("int8", "uint8"):
            raise SpecError(f"int_dtype: expected 'int8' or 'uint8', got {int_dtype!r}")
        if seed_bits not in SEED_WIDTHS:
            raise SpecError(f"seed_bits: expected 8, 16, 32 or 63, got {seed_bits!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.splits = tuple(splits)
        self.int_dtype, self.seed_bits, self.mask_density = int_dtype, seed_bits, mask_density
        self.sigma_s, self.sigma_t, self.stream = sigma_s, sigma_t, stream
        # c keeps activations at about unit scale at initialization (lam = 1, alpha = 1)
        fan = rank * in_features if fan_in_norm else rank
        self.c = 1.0 / (math.sqrt(fan) * SECOND_MOMENT)
        self.register_buffer("seeds", torch.zeros(rank + N_LAYER_SEEDS, dtype=torch.int64))
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.full((), 0.1))
        self.g = nn.Parameter(torch.ones(rank))  # (r,)
        self.experts = nn.Parameter(torch.zeros(sum(self.splits), rank))  # (sum e_j, r)
        self.cache: dict | None = None  # (role, seed, device, dtype) -> tensor, when caching is on
        # with a cache, also keep the products F1, F2 (per mask and scale seed) and sigma_t * T (per shift
        # seed): an evaluator whose candidates change one slot at a time then skips their recomputation
        self.cache_derived = False
        # a (out, in) tensor added to every routing group's W when set: the search takes dL/dW from its grad
        self.probe: torch.Tensor | None = None
        if seeds is not None:
            self.set_seeds(seeds)

    # ---- seeds and floats ---------------------------------------------------------------------------
    @property
    def n_seeds(self) -> int:
        return self.rank + N_LAYER_SEEDS

    def get_seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.seeds.tolist())

    def component_seeds(self) -> tuple[int, ...]:
        return self.get_seeds()[: self.rank]

    def check_seeds(self, seeds) -> tuple[int, ...]:
        """``seeds`` as checked ints. Raises SpecError on a wrong count, an out-of-range seed or a component
        seed held twice (naming the slot)."""
        seeds = tuple(seeds)
        if len(seeds) != self.n_seeds:
            raise SpecError(
                f"seeds: layer {self.stream} (rank {self.rank}) expects {self.n_seeds} seeds "
                f"(components c0..c{self.rank - 1}, then {', '.join(LAYER_SEED_NAMES)}), got {len(seeds)}"
            )
        names = seed_names(self.rank)
        checked = tuple(prng.check_seed(s, self.seed_bits, f"seeds.{n}") for n, s in zip(names, seeds))
        dup = duplicate_component(checked)
        if dup is not None:
            raise SpecError(
                f"seeds.c{dup}: component seed {checked[dup]} is already held by slot "
                f"c{checked.index(checked[dup])} of layer {self.stream}"
            )
        return checked

    def set_seeds(self, seeds) -> None:
        """Set the rank + 4 seeds (components, then mask, scale, shift, bias). Raises like check_seeds."""
        self.seeds.copy_(torch.tensor(self.check_seeds(seeds), dtype=torch.int64))

    @property
    def num_floats(self) -> int:
        return 2 + self.rank * (1 + sum(self.splits))

    def float_names(self) -> list[str]:
        names = ["alpha", "beta"] + [f"g[{i}]" for i in range(self.rank)]
        for j, e in enumerate(self.splits):
            names += [f"e[{j}][{k}][{i}]" for k in range(e) for i in range(self.rank)]
        return names

    def get_floats(self) -> tuple[float, ...]:
        flat = torch.cat(
            [
                self.alpha.detach().reshape(1),
                self.beta.detach().reshape(1),
                self.g.detach(),
                self.experts.detach().reshape(-1),
            ]
        )
        return tuple(float(v) for v in flat.float().cpu().tolist())

    def set_floats(self, floats) -> None:
        """Set alpha, beta, g and the experts from one flat list. Raises SpecError on a wrong length/NaN."""
        floats = [float(v) for v in floats]
        if len(floats) != self.num_floats:
            raise SpecError(
                f"floats: layer {self.stream} expects {self.num_floats} floats, got {len(floats)}"
            )
        if not all(math.isfinite(v) for v in floats):
            raise SpecError(f"floats: layer {self.stream} got a non-finite value")
        r = self.rank
        with torch.no_grad():
            self.alpha.fill_(floats[0])
            self.beta.fill_(floats[1])
            self.g.copy_(torch.tensor(floats[2 : 2 + r]))
            self.experts.copy_(torch.tensor(floats[2 + r :]).reshape(self.experts.shape))

    def reduce_seed_bits(self, seed_bits: int) -> None:
        """Move to fewer seed bits: each seed keeps its low ``seed_bits`` bits (the tensors change)."""
        if seed_bits not in SEED_WIDTHS or seed_bits > self.seed_bits:
            raise SpecError(
                f"seed_bits: can only reduce from {self.seed_bits} to 8/16/32/63, got {seed_bits}"
            )
        narrowed = [s & ((1 << seed_bits) - 1) for s in self.get_seeds()]
        old, self.seed_bits = self.seed_bits, seed_bits
        try:
            self.set_seeds(narrowed)
        except SpecError:
            self.seed_bits = old
            raise

    # ---- generation ---------------------------------------------------------------------------------
    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the layer tensor ``name`` (mask, scale, shift or bias)."""
        return (self.out_features,) if name == "bias" else (self.out_features, self.in_features)

    def make_tensors(self, wanted, device, dtype=torch.float32) -> dict[tuple[str, int], torch.Tensor]:
        """The layer tensors for (name, seed) pairs (names from mask, scale, shift, bias), in at most two
        generator calls (masks, and the rest)."""
        wanted = list(dict.fromkeys((name, int(seed)) for name, seed in wanted))
        masks = [(n, s) for n, s in wanted if n == "mask"]
        ints = [(n, s) for n, s in wanted if n != "mask"]
        req = lambda pairs: [(s, ROLE[n], self.stream, self.tensor_shape(n)) for n, s in pairs]  # noqa: E731
        made = prng.int_tensors(req(ints), self.int_dtype, dtype=dtype, device=device)
        made += prng.bernoulli_masks(req(masks), self.mask_density, dtype=dtype, device=device)
        return dict(zip(ints + masks, made))

    def make_components(self, seeds, device, dtype=torch.float32) -> dict[int, Component]:
        """Component vectors (a1 (out,), b1 (in,), a2 (out,), b2 (in,)) of each seed, one generator call."""
        seeds = list(dict.fromkeys(int(s) for s in seeds))
        batch = self.component_batch(seeds, device, dtype)  # each (N, out) or (N, in)
        return dict(zip(seeds, zip(*(t.unbind(0) for t in batch))))

    def component_batch(self, seeds, device, dtype=torch.float32, out=None):
        """a1 (N, out), b1 (N, in), a2 (N, out), b2 (N, in) of N candidate component seeds (a screen);
        with ``out`` views into that buffer (``prng.components``)."""
        return prng.components(
            seeds, self.stream, self.out_features, self.in_features, self.int_dtype,
            dtype=dtype, device=device, out=out,
        )  # fmt: skip

    def _cached(self, key, make):
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        value = make()
        if self.cache is not None:
            self.cache[key] = value
        return value

    def generate(
        self, seeds: tuple[int, ...] | None = None, device=None, dtype=torch.float32
    ) -> FixedTensors:
        """Regenerate the seeded tensors for ``seeds`` (default: this layer's own).

        With ``self.cache`` (a dict) set, tensors are looked up there first and stored there: per component
        seed ``("comp", seed, device, dtype)``, per layer tensor ``(name, seed, device, dtype)``, and with
        ``cache_derived`` also F1, F2 (key seed: the (mask, scale) pair) and sigma_t T.
        """
        seeds = self.get_seeds() if seeds is None else tuple(int(v) for v in seeds)
        device = self.alpha.device if device is None else device
        dev, r = str(device), self.rank
        comps, lay = seeds[:r], dict(zip(LAYER_SEED_NAMES, seeds[r:]))
        cache = self.cache
        missing = [c for c in comps if cache is None or ("comp", c, dev, dtype) not in cache]
        if len(missing) == r:  # nothing cached: the batch is the layer's factors as generated
            a1, b1, a2, b2 = self.component_batch(comps, device, dtype)  # (r, out), (r, in), ...
            if cache is not None:
                for c, vec in zip(comps, zip(*(t.unbind(0) for t in (a1, b1, a2, b2)))):
                    cache[("comp", c, dev, dtype)] = vec
        else:
            for c, vec in self.make_components(missing, device, dtype).items():
                cache[("comp", c, dev, dtype)] = vec
            vecs = [cache[("comp", c, dev, dtype)] for c in comps]
            a1, b1, a2, b2 = (torch.stack([v[i] for v in vecs]) for i in range(4))  # (r, out), (r, in), ...

        def tensor(name: str) -> torch.Tensor:
            make = lambda: self._tensor(name, lay[name], device, dtype)  # noqa: E731
            return self._cached((name, lay[name], dev, dtype), make)

        derived = self.cache_derived and self.cache is not None
        pair = (lay["mask"], lay["scale"])
        if derived and ("f1", pair, dev, dtype) in self.cache:
            f1, f2 = self.cache[("f1", pair, dev, dtype)], self.cache[("f2", pair, dev, dtype)]
        else:
            f1, f2 = fine_factors(tensor("mask"), tensor("scale"), self.sigma_s)
            if derived:
                self.cache[("f1", pair, dev, dtype)], self.cache[("f2", pair, dev, dtype)] = f1, f2
        if derived and ("t", lay["shift"], dev, dtype) in self.cache:
            t = self.cache[("t", lay["shift"], dev, dtype)]
        else:
            t = self.sigma_t * tensor("shift")
            if derived:
                self.cache[("t", lay["shift"], dev, dtype)] = t
        return FixedTensors(a1=a1.T, b1=b1, a2=a2.T, b2=b2, f1=f1, f2=f2, t=t, bias=tensor("bias"))

    def _tensor(self, name: str, seed: int, device, dtype) -> torch.Tensor:
        shape = self.tensor_shape(name)
        numel = math.prod(shape)
        gen_shape = shape if numel >= SMALL_TENSOR else (SMALL_TENSOR,)
        if name == "mask":
            t = prng.bernoulli_mask(
                seed, ROLE[name], self.stream, gen_shape, self.mask_density, dtype=dtype, device=device
            )
        else:
            t = prng.int_tensor(
                seed, ROLE[name], self.stream, gen_shape, self.int_dtype, dtype=dtype, device=device
            )
        if gen_shape is not shape:
            t = t[:numel].reshape(shape).clone()
        return t

    def scaled_lam(self, lam: torch.Tensor) -> torch.Tensor:
        """Rank scalars with alpha c folded in: (r,) or (G, r)."""
        return lam * (self.alpha * self.c)

    def scaled_shift(self, fixed: FixedTensors) -> torch.Tensor:
        """``alpha c sigma_t T`` (out, in)."""
        return fixed.t * (self.alpha * self.c)

    # ---- routing ------------------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return math.prod(self.splits) if self.splits else 1

    def group_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Mixed-radix routing group of each token: sum_j (t mod e_j) * prod_{i<j} e_i."""
        gid = torch.zeros_like(token_ids)
        radix = 1
        for e in self.splits:
            gid = gid + (token_ids % e) * radix
            radix *= e
        return gid

    def lam(self, groups: torch.Tensor) -> torch.Tensor:
        """Rank scalars for routing groups (G,) -> (G, r)."""
        lam = self.g.unsqueeze(0).expand(groups.numel(), -1)  # (G, r)
        offset, rem = 0, groups
        for e in self.splits:
            lam = lam + self.experts[offset + rem % e]
            rem, offset = rem // e, offset + e
        return lam

    def weight(self, fixed: FixedTensors, lam: torch.Tensor) -> torch.Tensor:
        """W for each row of lam (G, r) -> (G, out, in), through :func:`compose`."""
        lam = self.scaled_lam(lam)  # (G, r)
        t = self.scaled_shift(fixed)  # (out, in)
        if lam.shape[0] == 1:  # one routing group (no experts): two small matmuls, fused elementwise
            w1 = factor_product(fixed.a1, lam[0], fixed.b1)  # (out, in)
            w2 = factor_product(fixed.a2, lam[0], fixed.b2)
            return compose(fixed.f1, w1, fixed.f2, w2, t).unsqueeze(0)  # (1, out, in)
        w1 = factor_product(fixed.a1, lam, fixed.b1)  # (G, out, in)
        w2 = factor_product(fixed.a2, lam, fixed.b2)
        return compose(fixed.f1, w1, fixed.f2, w2, t)

    # ---- forward ------------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, fixed: FixedTensors | None = None
    ) -> torch.Tensor:
        """x (..., in) -> (..., out); token_ids (...) route expert rank scalars (needed when splits)."""
        fixed = self.generate(device=x.device, dtype=x.dtype) if fixed is None else fixed
        bias = self.beta * fixed.bias  # (out,)
        if not self.splits:
            w = self.weight(fixed, self.g.unsqueeze(0))[0] if fixed.w is None else fixed.w  # (out, in)
            return F.linear(x, w if self.probe is None else w + self.probe, bias)  # x @ w.T + bias
        if token_ids is None:
            raise SpecError(
                f"token_ids: layer {self.stream} has expert splits {list(self.splits)} and needs them"
            )
        gid = self.group_ids(token_ids)  # (...)
        present = torch.unique(gid)  # (G',)
        out = x.new_empty(*x.shape[:-1], self.out_features)
        ws = self.weight(fixed, self.lam(present))  # (G', out, in)
        ws = ws if self.probe is None else ws + self.probe
        for group, w in zip(present.tolist(), ws):  # w (out, in)
            sel = gid == group
            out[sel] = x[sel] @ w.T
        return out + bias

    def embed(self, token_ids: torch.Tensor, fixed: FixedTensors | None = None) -> torch.Tensor:
        """Use the layer as an embedding table (in_features = vocab): column ``t`` of W(t) plus bias.

        token_ids (...) -> (..., out). Only the needed columns are computed.
        """
        fixed = self.generate() if fixed is None else fixed
        flat = token_ids.reshape(-1)  # (N,)
        lam = self.lam(self.group_ids(flat)) if self.splits else self.g.unsqueeze(0)  # (N or 1, r)
        b1, b2 = fixed.b1[:, flat], fixed.b2[:, flat]  # (r, N)
        w1 = fixed.a1 @ (lam.T * b1)  # (out, N)
        w2 = fixed.a2 @ (lam.T * b2)  # (out, N)
        cols = (self.alpha * self.c) * compose(fixed.f1[:, flat], w1, fixed.f2[:, flat], w2, fixed.t[:, flat])
        if self.probe is not None:
            cols = cols + self.probe[:, flat]  # (out, N)
        return (cols.T + self.beta * fixed.bias).reshape(*token_ids.shape, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}->{self.out_features}, rank={self.rank}, splits={list(self.splits)}, "
            f"{self.int_dtype}, seed_bits={self.seed_bits}, floats={self.num_floats}"
        )

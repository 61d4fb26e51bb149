"""The GERMINATOR layer: weights regenerated from integer seeds, a few float scalars trained by gradient.

DESIGN.md section 2, for routing group t (rank scalars ``lam(t) = g + sum_j e[j][t mod e_j]``):

    W1(t) = A1 diag(lam(t)) B1          W2(t) = A2 diag(lam(t)) B2
    W(t)  = alpha * c * ((M * W1(t) + (1 - M) * W2(t)) * (1 + sigma_s * S) + sigma_t * T)
    y     = x W(t)^T + beta * b

computed here as ``alpha * c * (F1 * W1 + F2 * W2 + sigma_t * T)`` with ``F1 = M * (1 + sigma_s S)`` and
``F2 = (1 - M) * (1 + sigma_s S)``, which is the same formula. Seeds are integer buffers; alpha, beta, g and
the expert vectors are the only parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from germinator_dist import prng
from germinator_dist.errors import SpecError
from germinator_dist.records import N_SEEDS, SEED_NAMES

ROLE = {name: i + 1 for i, name in enumerate(SEED_NAMES)}  # Philox role word per seeded tensor
SECOND_MOMENT = 1.0 / 3.0  # E[a^2] of int8/128 (and of uint8/256): about 1/3
# Tensors with fewer elements are generated as the head of a stream this long and cut: the same bits
# (element i always comes from Philox block i // per_block), but on the generator's compiled path,
# which for a few hundred elements is about 8x faster than its eager path for tiny requests.
SMALL_TENSOR = 4096


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


class SeedLinear(nn.Module):
    """One seeded layer ``in_features -> out_features`` (see module docstring).

    Raises SpecError on invalid sizes, splits, int dtype or out-of-range seeds.
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
        if seed_bits not in (8, 16, 32, 63):
            raise SpecError(f"seed_bits: expected 8, 16, 32 or 63, got {seed_bits!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.splits = tuple(splits)
        self.int_dtype, self.seed_bits, self.mask_density = int_dtype, seed_bits, mask_density
        self.sigma_s, self.sigma_t, self.stream = sigma_s, sigma_t, stream
        # c keeps activations at about unit scale at initialization (lam = 1, alpha = 1)
        fan = rank * in_features if fan_in_norm else rank
        self.c = 1.0 / (math.sqrt(fan) * SECOND_MOMENT)
        self.register_buffer("seeds", torch.zeros(N_SEEDS, dtype=torch.int64))
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.full((), 0.1))
        self.g = nn.Parameter(torch.ones(rank))  # (r,)
        self.experts = nn.Parameter(torch.zeros(sum(self.splits), rank))  # (sum e_j, r)
        self.cache: dict | None = None  # (role, seed, device, dtype) -> tensor, when caching is on
        # with a cache, also keep the products F1, F2 (per mask and scale seed) and sigma_t * T (per shift
        # seed): an evaluator whose candidates change one slot at a time then skips their recomputation
        self.cache_derived = False
        if seeds is not None:
            self.set_seeds(seeds)

    # ---- seeds and floats ---------------------------------------------------------------------------
    def get_seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.seeds.tolist())

    def set_seeds(self, seeds) -> None:
        """Set the 8 seeds (order SEED_NAMES). Raises SpecError on a wrong count or out-of-range seed."""
        seeds = tuple(seeds)
        if len(seeds) != N_SEEDS:
            raise SpecError(f"seeds: expected {N_SEEDS} seeds {SEED_NAMES}, got {len(seeds)}")
        checked = [prng.check_seed(s, self.seed_bits, f"seeds.{n}") for n, s in zip(SEED_NAMES, seeds)]
        self.seeds.copy_(torch.tensor(checked, dtype=torch.int64))

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
        if seed_bits not in (8, 16, 32, 63) or seed_bits > self.seed_bits:
            raise SpecError(
                f"seed_bits: can only reduce from {self.seed_bits} to 8/16/32/63, got {seed_bits}"
            )
        self.seed_bits = seed_bits
        self.set_seeds([s & ((1 << seed_bits) - 1) for s in self.get_seeds()])

    # ---- generation ---------------------------------------------------------------------------------
    def _tensor(self, name: str, seed: int, device, dtype) -> torch.Tensor:
        key = (name, seed, str(device), dtype)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
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
        if self.cache is not None:
            self.cache[key] = t
        return t

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the seeded tensor ``name`` (one of SEED_NAMES)."""
        out, inp, r = self.out_features, self.in_features, self.rank
        shapes = {"a1": (out, r), "a2": (out, r), "b1": (r, inp), "b2": (r, inp), "bias": (out,)}
        return shapes.get(name, (out, inp))

    def generate_many(self, wanted, device, dtype=torch.float32) -> dict[tuple[str, int], torch.Tensor]:
        """The seeded tensors for (name, seed) pairs, as ``generate`` makes them, in at most two generator
        calls (masks, and all the rest): for a worker that needs a few small tensors per candidate."""
        wanted = list(dict.fromkeys((name, int(seed)) for name, seed in wanted))
        masks = [(n, s) for n, s in wanted if n == "mask"]
        ints = [(n, s) for n, s in wanted if n != "mask"]
        req = lambda pairs: [(s, ROLE[n], self.stream, self.tensor_shape(n)) for n, s in pairs]  # noqa: E731
        made = prng.int_tensors(req(ints), self.int_dtype, dtype=dtype, device=device)
        made += prng.bernoulli_masks(req(masks), self.mask_density, dtype=dtype, device=device)
        return dict(zip(ints + masks, made))

    def cache_keys(self, seeds, device, dtype=torch.float32) -> list[tuple]:
        """The keys ``generate(seeds, device, dtype)`` looks up in ``self.cache``: one per seeded tensor,
        then (with ``cache_derived``) those of F1, F2 and sigma_t * T. Each is (name, seed, device, dtype);
        the seed of F1 and F2 is the pair (mask seed, scale seed)."""
        s = {n: int(v) for n, v in zip(SEED_NAMES, seeds)}
        dev = str(device)
        keys = [(n, s[n], dev, dtype) for n in SEED_NAMES]
        if self.cache_derived:
            pair = (s["mask"], s["scale"])
            keys += [("f1", pair, dev, dtype), ("f2", pair, dev, dtype), ("t", s["shift"], dev, dtype)]
        return keys

    def generate(
        self, seeds: tuple[int, ...] | None = None, device=None, dtype=torch.float32
    ) -> FixedTensors:
        """Regenerate the seeded tensors for ``seeds`` (default: this layer's own)."""
        seeds = self.get_seeds() if seeds is None else tuple(seeds)
        device = self.alpha.device if device is None else device
        s = dict(zip(SEED_NAMES, seeds))
        get = lambda n: self._tensor(n, s[n], device, dtype)  # noqa: E731
        cache = self.cache if self.cache_derived else None
        k1, k2, kt = self.cache_keys(seeds, device, dtype)[-3:] if cache is not None else (None,) * 3
        if cache is not None and k1 in cache and k2 in cache:
            f1, f2 = cache[k1], cache[k2]
        else:
            m = get("mask")  # (out, in)
            fine = 1.0 + self.sigma_s * get("scale")  # (out, in)
            f1, f2 = m * fine, (1.0 - m) * fine
            if cache is not None:
                cache[k1], cache[k2] = f1, f2
        if cache is not None and kt in cache:
            t = cache[kt]
        else:
            t = self.sigma_t * get("shift")
            if cache is not None:
                cache[kt] = t
        return FixedTensors(
            a1=get("a1"), b1=get("b1"), a2=get("a2"), b2=get("b2"), f1=f1, f2=f2, t=t, bias=get("bias")
        )

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
        """W for each row of lam (G, r) -> (G, out, in)."""
        if lam.shape[0] == 1:  # one routing group (no experts): two small matmuls, fused elementwise
            w1 = ((fixed.a1 * lam) @ fixed.b1).unsqueeze(0)  # (1, out, in)
            w2 = ((fixed.a2 * lam) @ fixed.b2).unsqueeze(0)
        else:
            w1 = torch.einsum("ok,gk,ki->goi", fixed.a1, lam, fixed.b1)  # (G, out, in)
            w2 = torch.einsum("ok,gk,ki->goi", fixed.a2, lam, fixed.b2)  # (G, out, in)
        mixed = torch.addcmul(fixed.t, fixed.f1, w1).addcmul_(fixed.f2, w2)  # F1*W1 + F2*W2 + sigma_t*T
        return (self.alpha * self.c) * mixed

    # ---- forward ------------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, fixed: FixedTensors | None = None
    ) -> torch.Tensor:
        """x (..., in) -> (..., out); token_ids (...) route expert rank scalars (needed when splits)."""
        fixed = self.generate(device=x.device, dtype=x.dtype) if fixed is None else fixed
        bias = self.beta * fixed.bias  # (out,)
        if not self.splits:
            w = self.weight(fixed, self.g.unsqueeze(0))[0] if fixed.w is None else fixed.w  # (out, in)
            return F.linear(x, w, bias)  # x @ w.T + bias in one call
        if token_ids is None:
            raise SpecError(
                f"token_ids: layer {self.stream} has expert splits {list(self.splits)} and needs them"
            )
        gid = self.group_ids(token_ids)  # (...)
        present = torch.unique(gid)  # (G',)
        out = x.new_empty(*x.shape[:-1], self.out_features)
        for group, w in zip(present.tolist(), self.weight(fixed, self.lam(present))):  # w (out, in)
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
        cols = (self.alpha * self.c) * (fixed.f1[:, flat] * w1 + fixed.f2[:, flat] * w2 + fixed.t[:, flat])
        return (cols.T + self.beta * fixed.bias).reshape(*token_ids.shape, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}->{self.out_features}, rank={self.rank}, splits={list(self.splits)}, "
            f"{self.int_dtype}, seed_bits={self.seed_bits}, floats={self.num_floats}"
        )

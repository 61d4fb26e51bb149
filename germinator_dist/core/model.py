"""GERMINATOR models built from a ModelSpec: a classifier over vectors and a byte/token language model.

A model is a chain of seeded layers (``model.layers``; the index of a layer there is its index in the
seed table) run in *stages*: stage k applies layer k to a small state dict. That lets a worker cache the
state entering layer k for a snapshot and re-run only layers k.. for each candidate (docs/layout.md).

Streaming: each stage generates its layer's seeded tensors right before use and drops them after, so at
most one layer's generated weights are alive at a time (unless a layer's cache is switched on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from germinator_dist.config import ModelSpec
from germinator_dist.core import prng
from germinator_dist.core.layers import FixedTensors, SeedLinear
from germinator_dist.errors import SpecError
from germinator_dist.records import N_LAYER_SEEDS

INIT_ROLE = 0xFFFF  # Philox role used to derive initial seeds from spec.init_seed


@dataclass
class Batch:
    """inputs: float (B, d) (classifier) or int64 tokens (B, T) (LM); targets: int64 (B,) or (B, T)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device))

    def __len__(self) -> int:
        return self.inputs.shape[0]


def initial_seeds(spec: ModelSpec, layer: int) -> tuple[int, ...]:
    """Deterministic starting seeds of a layer (rank + 4: distinct components, then the layer seeds),
    derived from ``spec.init_seed`` with the portable generator. Raises SpecError if the seed space
    holds fewer than ``rank`` distinct seeds."""
    rank, space = spec.rank, 1 << spec.seed_bits
    if rank > space:
        raise SpecError(f"rank: {rank} distinct component seeds do not fit seed_bits={spec.seed_bits}")
    comps: list[int] = []
    seen: set[int] = set()
    draws = 0
    while len(comps) < rank:  # a repeat (likely only for narrow seeds) takes the stream's next draw
        want = 2 * (rank - len(comps)) + 8
        words = prng._random_words(spec.init_seed, INIT_ROLE, layer, 2 * draws, 2 * (draws + want))
        vals = ((words[0::2] | (words[1::2] << 32)) & (space - 1)).tolist()  # (want,)
        draws += want
        for v in vals:
            if v not in seen and len(comps) < rank:
                seen.add(v)
                comps.append(int(v))
    # the layer seeds: a stream of their own (role INIT_ROLE - 1), so they do not depend on the rank
    words = prng._random_words(spec.init_seed, INIT_ROLE - 1, layer, 0, 2 * N_LAYER_SEEDS)  # (8,)
    lay = ((words[0::2] | (words[1::2] << 32)) & (space - 1)).tolist()  # (4,)
    return (*comps, *(int(v) for v in lay))


class GerminatorModel(nn.Module):
    """Base: a list of SeedLinear layers run stage by stage. Subclasses define the stages."""

    spec: ModelSpec
    layers: nn.ModuleList

    def _layer(self, i: int, fan_in: int, fan_out: int, *, fan_in_norm: bool = True, splits=()) -> SeedLinear:
        s = self.spec
        return SeedLinear(
            fan_in,
            fan_out,
            s.rank,
            splits,
            int_dtype=s.int_dtype,
            seed_bits=s.seed_bits,
            mask_density=s.mask_density,
            sigma_s=s.sigma_s,
            sigma_t=s.sigma_t,
            stream=i,
            seeds=initial_seeds(s, i),
            fan_in_norm=fan_in_norm,
        )

    # -- to be provided by subclasses
    def initial_state(self, inputs: torch.Tensor) -> dict:
        raise NotImplementedError

    def step(self, k: int, state: dict, fixed: FixedTensors | None = None) -> dict:
        raise NotImplementedError

    # -- shared
    def run(
        self,
        state: dict,
        start: int = 0,
        stop: int | None = None,
        fixed: dict[int, FixedTensors] | None = None,
    ) -> dict:
        """Apply layers start..stop-1 to ``state``; ``fixed`` overrides some layers' generated tensors."""
        stop = len(self.layers) if stop is None else stop
        for k in range(start, stop):
            state = self.step(k, state, None if fixed is None else fixed.get(k))
        return state

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs -> logits ((B, classes) or (B, T, vocab))."""
        return self.run(self.initial_state(inputs))["logits"]

    def loss_from_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats (the loss the table stores)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.loss_from_logits(self(batch.inputs), batch.targets)

    # -- seeds and floats of every layer
    def get_seeds(self) -> list[tuple[int, ...]]:
        return [layer.get_seeds() for layer in self.layers]

    def get_floats(self) -> list[tuple[float, ...]]:
        return [layer.get_floats() for layer in self.layers]

    def set_layer(self, k: int, seeds=None, floats=None) -> None:
        if seeds is not None:
            self.layers[k].set_seeds(seeds)
        if floats is not None:
            self.layers[k].set_floats(floats)

    def num_floats(self) -> int:
        return sum(layer.num_floats for layer in self.layers)

    def reduce_seed_bits(self, seed_bits: int) -> None:
        """Move every layer to fewer seed bits (keeps each seed's low bits); updates the spec."""
        for layer in self.layers:
            layer.reduce_seed_bits(seed_bits)
        self.spec = self.spec.with_seed_bits(seed_bits)

    def set_cache(self, on: bool) -> None:
        """Keep generated tensors between calls (trainer: fast steps) or stream them (default)."""
        for layer in self.layers:
            layer.cache = {} if on else None


class GerminatorMLP(GerminatorModel):
    """Classifier over vectors: input_dim -> hidden... -> num_classes, activation between layers."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec.require_resolved()
        self.spec = spec
        dims = [spec.input_dim, *spec.hidden, spec.num_classes]
        self.layers = nn.ModuleList(self._layer(i, a, b) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])))
        self.act = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}[spec.activation]
        self.act_ = {"relu": torch.relu_, "tanh": torch.tanh_}.get(spec.activation)  # in place, or None

    def initial_state(self, inputs: torch.Tensor) -> dict:
        return {"h": inputs}

    def step(self, k: int, state: dict, fixed: FixedTensors | None = None) -> dict:
        h = self.layers[k](state["h"], fixed=fixed)  # (B, d_k+1)
        if k == len(self.layers) - 1:
            return {"logits": h}
        if not torch.is_grad_enabled() and self.act_ is not None:  # no autograd: h is ours to overwrite
            return {"h": self.act_(h)}
        return {"h": self.act(h)}


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class GerminatorLM(GerminatorModel):
    """Byte/token language model: seeded embedding, blocks of seeded layers with a token mixer, seeded head.

    Block b: u = rms(x); m = [u, u shifted by one position, causal EMA of u]  (B, T, 3d);
             x = x + down(act(up(m)))   with up: 3d -> d_ff and down: d_ff -> d, both seeded.
    Layers: 0 embedding (vocab -> d), then up/down per block, last the head (d -> vocab).
    Every layer routes its expert rank scalars by the input token id at each position.
    """

    EMA_DECAY = 0.9

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec.require_resolved()
        self.spec = spec
        d, v, sp = spec.d_model, spec.vocab_size, spec.splits
        layers = [self._layer(0, v, d, fan_in_norm=False, splits=sp)]
        for b in range(spec.n_blocks):
            layers.append(self._layer(1 + 2 * b, 3 * d, spec.d_ff, splits=sp))
            layers.append(self._layer(2 + 2 * b, spec.d_ff, d, splits=sp))
        layers.append(self._layer(1 + 2 * spec.n_blocks, d, v, splits=sp))
        self.layers = nn.ModuleList(layers)
        self.act = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}[spec.activation]
        t = torch.arange(spec.context)
        decay = self.EMA_DECAY ** (t.unsqueeze(1) - t.unsqueeze(0)).clamp(min=0).float()
        self.register_buffer("ema", torch.tril(decay) * (1 - self.EMA_DECAY), persistent=False)  # (T, T)

    def initial_state(self, inputs: torch.Tensor) -> dict:
        return {"tok": inputs}

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        u = _rms_norm(x)  # (B, T, d)
        shifted = F.pad(u, (0, 0, 1, 0))[:, :-1]  # (B, T, d) previous position
        t = u.shape[1]
        ema = torch.einsum("ts,bsd->btd", self.ema[:t, :t].to(u.dtype), u)  # (B, T, d)
        return torch.cat((u, shifted, ema), dim=-1)  # (B, T, 3d)

    def step(self, k: int, state: dict, fixed: FixedTensors | None = None) -> dict:
        tok = state["tok"]  # (B, T)
        layer = self.layers[k]
        last = len(self.layers) - 1
        if k == 0:
            return {"tok": tok, "x": layer.embed(tok, fixed=fixed)}  # (B, T, d)
        if k == last:
            return {"logits": layer(_rms_norm(state["x"]), tok, fixed=fixed)}  # (B, T, vocab)
        if k % 2 == 1:  # up
            h = self.act(layer(self._mix(state["x"]), tok, fixed=fixed))  # (B, T, d_ff)
            return {"tok": tok, "x": state["x"], "h": h}
        return {"tok": tok, "x": state["x"] + layer(state["h"], tok, fixed=fixed)}  # down


def build_model(spec: ModelSpec) -> GerminatorModel:
    """Build the model a (resolved) spec describes. Raises SpecError if a dimension is still unknown."""
    return GerminatorMLP(spec) if spec.kind == "mlp" else GerminatorLM(spec)

"""The local core demo: digits, seed picking by a small local search, float training, tiny checkpoint.

No Ray, no Redis: this is the whole GERMINATOR idea on one process, next to a dense nn.Linear MLP of the
same shape trained by Adam for the same number of steps.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from germinator_dist.config import ModelSpec
from germinator_dist.core.checkpoint import load_checkpoint, save_checkpoint
from germinator_dist.core.data import load_digits_dataset
from germinator_dist.core.model import GerminatorModel, build_model
from germinator_dist.records import N_LAYER_SEEDS, seed_names
from germinator_dist.search.evaluator import LayerEvaluator

LAYER_SLOT_SHARE = 0.25  # the share of redrawn slots that are layer slots (mask, scale, shift, bias)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train_floats(model: GerminatorModel, data, steps: int, lr: float, seed: int = 0) -> float:
    """Adam on the floats with the seeds fixed; returns the last minibatch loss."""
    model.set_cache(True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = data.train_batch(256, 0, g)
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.set_cache(False)
    return float(loss.detach())


def mutate_seeds(seeds, rank: int, seed_bits: int, changes: int, rng: random.Random) -> tuple[int, ...]:
    """A candidate seed vector: ``changes`` distinct slots of ``seeds`` (rank components, then mask, scale,
    shift, bias; docs/layout.md) redrawn at random. Each redrawn slot is a layer slot with probability
    ``LAYER_SLOT_SHARE``, else a component slot; a component slot only takes a seed that no other
    component of the layer holds (a layer never holds a component seed twice)."""
    seeds = list(seeds)
    space = 1 << seed_bits
    changes = min(changes, rank + N_LAYER_SEEDS)
    slots: set[int] = set()
    while len(slots) < changes:
        if rng.random() < LAYER_SLOT_SHARE:
            slots.add(rank + rng.randrange(N_LAYER_SEEDS))
        else:
            slots.add(rng.randrange(rank))
    held = set(seeds[:rank])
    for slot in sorted(slots):
        if slot >= rank:
            seeds[slot] = rng.randrange(space)
        elif len(held) < space:  # a full seed space (rank == 2**seed_bits) has no free seed
            new = rng.randrange(space)
            while new in held:
                new = rng.randrange(space)
            held.discard(seeds[slot])
            held.add(new)
            seeds[slot] = new
    return tuple(seeds)


def pick_seeds(model: GerminatorModel, data, candidates: int, refit_steps: int, rng: random.Random) -> int:
    """For each layer: evaluate random mutations (one to three redrawn slots, component or layer slots)
    against the incumbent (same batch, same refit); keep the best. Returns the number of layers whose
    seeds changed."""
    ev = LayerEvaluator(model.spec, data.fitness_batch(1024))
    changed = 0
    bits = model.spec.seed_bits
    for k, layer in enumerate(model.layers):
        ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(k, *model.get_seeds()[k]))
        inc = layer.get_seeds()
        cands = [mutate_seeds(inc, layer.rank, bits, rng.randint(1, 3), rng) for _ in range(candidates)]
        res = ev.evaluate(k, cands, refit_steps=refit_steps)
        best = min(range(len(cands)), key=lambda i: res.losses[i])
        if res.losses[best] < res.incumbent_loss:
            model.set_layer(k, seeds=cands[best], floats=res.floats[best])
            changed += 1
        slots = [i for i, (a, b) in enumerate(zip(inc, cands[best])) if a != b]
        names = ", ".join(seed_names(layer.rank)[i] for i in slots)
        print(
            f"  layer {k}: incumbent {res.incumbent_loss:.4f}  best of {candidates} candidates "
            f"{res.losses[best]:.4f} (redrew {names})  ({res.seconds:.1f}s)"
        )
    return changed


def run_local_demo(
    rank: int = 64, steps: int = 600, candidates: int = 8, refit_steps: int = 10, seed: int = 0
) -> dict:
    """Run the demo and return its figures (also printed)."""
    torch.manual_seed(seed)
    data = load_digits_dataset()
    spec = ModelSpec(hidden=(256, 256), rank=rank, seed_bits=16).resolved(**data.dims())
    model = build_model(spec)
    t0 = time.perf_counter()
    print(
        f"digits: {len(data.x_train)} train / {len(data.x_test)} test; model {spec.input_dim}-256-256-"
        f"{spec.num_classes}, rank {rank}, {model.num_floats()} floats"
    )
    train_floats(model, data, steps // 2, 0.03, seed)
    print(f"after {steps // 2} float steps: test accuracy {accuracy(model, data.x_test, data.y_test):.3f}")
    changed = pick_seeds(model, data, candidates, refit_steps, random.Random(seed))
    train_floats(model, data, steps - steps // 2, 0.01, seed + 1)
    germ_acc = accuracy(model, data.x_test, data.y_test)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        size = save_checkpoint(model, path)
        reloaded = load_checkpoint(path)
        assert accuracy(reloaded, data.x_test, data.y_test) == germ_acc
    germ_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    dense = nn.Sequential(
        nn.Linear(spec.input_dim, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, spec.num_classes),
    )
    opt = torch.optim.Adam(dense.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = data.train_batch(256, 0, g)
        loss = nn.functional.cross_entropy(dense(b.inputs), b.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dense_acc = accuracy(dense, data.x_test, data.y_test)
    dense_bytes = sum(p.numel() * 4 for p in dense.parameters())
    dense_s = time.perf_counter() - t0
    print(f"{'model':<28}{'test acc':>10}{'trained floats':>16}{'checkpoint bytes':>18}{'seconds':>9}")
    print(
        f"{'GERMINATOR (seeds+floats)':<28}{germ_acc:>10.3f}{model.num_floats():>16}{size:>18}{germ_s:>9.1f}"
    )
    print(
        f"{'dense nn.Linear MLP':<28}{dense_acc:>10.3f}{dense_bytes // 4:>16}{dense_bytes:>18}{dense_s:>9.1f}"
    )
    print(f"layers whose seeds the search changed: {changed} of {len(model.layers)}")
    return {
        "accuracy": germ_acc,
        "checkpoint_bytes": size,
        "dense_accuracy": dense_acc,
        "dense_bytes": dense_bytes,
        "layers_changed": changed,
    }

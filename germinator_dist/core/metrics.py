"""Metrics of a tiny checkpoint on its job's test split (or a user's data), and text generation."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import ValidationError

from germinator_dist.config import DataSpec
from germinator_dist.core.checkpoint import load_checkpoint, read_checkpoint
from germinator_dist.core.data import load_dataset
from germinator_dist.errors import CheckpointError, SpecError


def accuracy(model, dataset, context: int = 64) -> dict:
    """Test-split metrics: accuracy (classifiers) or bits per byte (LMs), and the mean loss."""
    total, n, correct = 0.0, 0, 0
    with torch.no_grad():
        for batch in dataset.test_batches(1024, context, limit=2000):
            logits = model(batch.inputs)
            total += float(model.loss_from_logits(logits, batch.targets)) * batch.targets.numel()
            n += batch.targets.numel()
            correct += int((logits.argmax(-1) == batch.targets).sum())
    loss = total / max(n, 1)
    if dataset.kind == "text":
        return {"loss": loss, "bits_per_byte": loss / math.log(2), "accuracy": correct / max(n, 1)}
    return {"loss": loss, "accuracy": correct / max(n, 1)}


def _dataset_for(model, meta: dict, data: str | None):
    if data is not None:
        path = Path(data)
        if model.spec.kind == "lm":
            return load_dataset(DataSpec(kind="text", paths=(str(path),)))
        if path.suffix != ".npz":
            raise SpecError(f"--data: expected a .npz file with X and y for a classifier (value {data!r})")
        return load_dataset(DataSpec(kind="arrays", path=str(path)))
    if "data" not in meta:
        raise SpecError("--data: the checkpoint does not name its job's data; pass --data")
    try:
        spec = DataSpec.model_validate(meta["data"])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(["meta.data", *(str(p) for p in err["loc"])])
        shown = repr(err.get("input"))[:60]
        msg = err["msg"].removeprefix("Value error, ")
        raise CheckpointError(f"{loc}: {msg} (value {shown}); pass --data") from None
    return load_dataset(spec)


def evaluate_checkpoint(path: Path, data: str | None = None) -> dict:
    """{'accuracy' or 'bits_per_byte', 'loss', 'checkpoint_bytes', ...}. Raises CheckpointError/SpecError."""
    model, meta = read_checkpoint(path)
    ds = _dataset_for(model, meta, data)
    dims = ds.dims()
    for name, value in dims.items():
        have = getattr(model.spec, name)
        if name == "num_classes" and value <= have:
            continue  # a test split may lack the highest classes
        if have != value:
            raise SpecError(f"--data: the model has {name}={have} but the data has {value}")
    doc = accuracy(model, ds, model.spec.context)
    doc["checkpoint_bytes"] = path.stat().st_size
    doc["trained_floats"] = model.num_floats()
    return doc


MAX_GENERATE_BYTES = 1 << 20


def generate_text(path: Path, prompt: str, n_bytes: int, temperature: float, seed: int) -> str:
    """Sample ``n_bytes`` bytes after ``prompt`` from a language-model checkpoint.

    Raises SpecError for a temperature that is not a finite number > 0, a byte count outside
    [0, MAX_GENERATE_BYTES], a seed outside [0, 2**63), a model that is not a byte model (vocab_size
    other than 256: its tokens are not bytes) or a prompt byte the model's vocabulary lacks.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise SpecError(f"--temperature: must be a finite number > 0 (value {temperature})")
    if not 0 <= n_bytes <= MAX_GENERATE_BYTES:
        raise SpecError(f"--bytes: must lie in [0, {MAX_GENERATE_BYTES}] (value {n_bytes})")
    if not 0 <= seed < 1 << 63:
        raise SpecError(f"--seed: must lie in [0, 2**63) (value {seed})")
    model = load_checkpoint(path)
    if model.spec.kind != "lm":
        raise SpecError(f"model: generate needs a language model, {path} holds a {model.spec.kind!r}")
    if model.spec.vocab_size != 256:
        raise SpecError(
            f"model.vocab_size: generate samples bytes and needs a vocabulary of 256 "
            f"(value {model.spec.vocab_size})"
        )
    g = torch.Generator().manual_seed(seed)
    out = list(prompt.encode()) or [10]
    ctx = model.spec.context
    model.set_cache(True)
    with torch.no_grad():
        for _ in range(n_bytes):
            tok = torch.tensor([out[-ctx:]])
            logits = model(tok)[0, -1] / temperature  # (vocab,)
            out.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)))
    return bytes(out).decode("utf-8", errors="replace")

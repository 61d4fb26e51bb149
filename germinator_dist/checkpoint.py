"""The tiny checkpoint: seeds + floats + spec + generator version, as one JSON document (never pickle).

Floats are stored bit-exactly as base64 of little-endian float32 bytes; a SHA-256 over the content catches
corruption. Loading validates everything into a fresh model before returning it, so nothing is
half-loaded: on any problem a CheckpointError (or SpecError for a bad spec) names it and no model exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path

from germinator_dist import prng
from germinator_dist.errors import CheckpointError, SpecError
from germinator_dist.model import GerminatorModel, build_model
from germinator_dist.records import N_SEEDS
from germinator_dist.spec import load_model_spec

FORMAT = "germinator-checkpoint"
FORMAT_VERSION = 1
GENERATOR = "philox4x32-10"


def encode_floats(floats) -> str:
    """Floats as base64 of little-endian float32 bytes (bit-exact for float32 values)."""
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")


def decode_floats(text: str, field: str) -> tuple[float, ...]:
    """Inverse of encode_floats. Raises CheckpointError naming ``field`` on malformed content."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError):
        raise CheckpointError(f"{field}: not base64 float32 data ({str(text)[:40]!r})") from None
    if len(raw) % 4:
        raise CheckpointError(f"{field}: {len(raw)} bytes is not a whole number of float32 values")
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checkpoint_dict(model: GerminatorModel, meta: dict | None = None) -> dict:
    """The checkpoint of ``model`` as a JSON-able dict."""
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "generator_version": prng.GENERATOR_VERSION,
        "spec": model.spec.model_dump(mode="json"),
        "layers": [
            {"seeds": list(layer.get_seeds()), "floats": encode_floats(layer.get_floats())}
            for layer in model.layers
        ],
        "meta": meta or {},
    }
    return {**body, "sha256": _digest(body)}


def save_checkpoint(model: GerminatorModel, path: str | os.PathLike, meta: dict | None = None) -> int:
    """Write the checkpoint atomically (temp file + rename); returns its size in bytes."""
    data = json.dumps(checkpoint_dict(model, meta), separators=(",", ":")).encode()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def model_from_dict(data: dict, source: str = "checkpoint") -> GerminatorModel:
    """Validate a checkpoint dict fully and build the model. Raises CheckpointError / SpecError."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version {data.get('format_version')!r} is not supported "
            f"(this build reads {FORMAT_VERSION})"
        )
    if data.get("generator") != GENERATOR or data.get("generator_version") != prng.GENERATOR_VERSION:
        found = f"{data.get('generator')!r} v{data.get('generator_version')!r}"
        raise CheckpointError(
            f"{source}: generator {found} differs from this build's {GENERATOR} v{prng.GENERATOR_VERSION}"
        )
    body = {k: v for k, v in data.items() if k != "sha256"}
    if "sha256" in data and data["sha256"] != _digest(body):
        raise CheckpointError(f"{source}: sha256 does not match the content (corrupted or edited)")
    spec = load_model_spec(data.get("spec") or {})
    try:
        spec.require_resolved()
    except SpecError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    model = build_model(spec)
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) != len(model.layers):
        n = len(layers) if isinstance(layers, list) else layers
        raise CheckpointError(f"{source}: layers: spec has {len(model.layers)} layers, file has {n}")
    for k, (entry, layer) in enumerate(zip(layers, model.layers, strict=True)):
        seeds = entry.get("seeds") if isinstance(entry, dict) else None
        if not isinstance(seeds, list) or len(seeds) != N_SEEDS:
            raise CheckpointError(f"{source}: layers[{k}].seeds: expected {N_SEEDS} integers, got {seeds!r}")
        floats = decode_floats(entry.get("floats", ""), f"{source}: layers[{k}].floats")
        if len(floats) != layer.num_floats:
            raise CheckpointError(
                f"{source}: layers[{k}].floats: shape mismatch: layer needs "
                f"{layer.num_floats} floats, file has {len(floats)}"
            )
        if not all(math.isfinite(v) for v in floats):
            raise CheckpointError(f"{source}: layers[{k}].floats: non-finite value")
        try:
            layer.set_seeds(seeds)
        except SpecError as exc:
            raise CheckpointError(f"{source}: layers[{k}].{exc}") from None
        layer.set_floats(floats)
    return model


def load_checkpoint(path: str | os.PathLike) -> GerminatorModel:
    """Load a checkpoint file into a new model (bit-identical weights). Raises CheckpointError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    return model_from_dict(data, str(path))

"""The tiny checkpoint: seeds + floats + spec + generator version, as one JSON document (never pickle).

Format version 2 (the rank-stacked layout, docs/layout.md; generator version 2). Per layer:

  * ``seeds``: the layer's ``rank + 4`` seeds (components ``c0 .. c{r-1}``, then mask, scale, shift, bias),
    packed as little-endian unsigned integers of the narrowest width among 1/2/4/8 bytes that the spec's
    ``seed_bits`` allows, as base64 text -- or, when it is shorter, a plain JSON list of integers (small
    seed values); the loader takes either;
  * ``floats``: base64 of little-endian float32 bytes (bit-exact).

A SHA-256 over the content catches corruption. Loading validates everything into a fresh model before
returning it, so nothing is half-loaded: on any problem a one-line CheckpointError (or SpecError for a bad
spec) names the field and the value, and no model exists. Saving writes a temporary file and renames it
over the target, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path

from germinator_dist.config import load_model_spec
from germinator_dist.core import prng
from germinator_dist.core.model import GerminatorModel, build_model
from germinator_dist.errors import CheckpointError, SpecError
from germinator_dist.records import LAYER_SEED_NAMES, n_seeds

FORMAT = "germinator-checkpoint"
FORMAT_VERSION = 2  # 2: rank-stacked seeds (rank + 4 per layer), packed; 1: eight seeds per layer
GENERATOR = "philox4x32-10"
_PACK = {1: "B", 2: "H", 4: "I", 8: "Q"}  # struct codes of the seed widths
MAX_CHECKPOINT_BYTES = 64 << 20  # what the largest model the spec bounds allow needs, with room


def _shown(value, limit: int = 40) -> str:
    """A value for a one-line message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_floats(floats) -> str:
    """Floats as base64 of little-endian float32 bytes (bit-exact for float32 values)."""
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")


def decode_floats(text: str, field: str) -> tuple[float, ...]:
    """Inverse of encode_floats. Raises CheckpointError naming ``field`` on malformed content."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError):
        raise CheckpointError(f"{field}: not base64 float32 data (value {_shown(text)})") from None
    if len(raw) % 4:
        raise CheckpointError(f"{field}: {len(raw)} bytes is not a whole number of float32 values")
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def seed_width(seed_bits: int) -> int:
    """Bytes per packed seed: the narrowest of 1, 2, 4, 8 that holds ``seed_bits`` bits."""
    return next(w for w in (1, 2, 4, 8) if seed_bits <= 8 * w)


def pack_seeds(seeds, seed_bits: int) -> str:
    """Seeds as base64 of little-endian unsigned integers of ``seed_width(seed_bits)`` bytes each."""
    w = seed_width(seed_bits)
    return base64.b64encode(struct.pack(f"<{len(seeds)}{_PACK[w]}", *seeds)).decode("ascii")


def unpack_seeds(text: str, seed_bits: int, field: str) -> tuple[int, ...]:
    """Inverse of pack_seeds. Raises CheckpointError naming ``field`` on bad base64 or a bad length."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise CheckpointError(f"{field}: not base64 packed seeds (value {_shown(text)})") from None
    w = seed_width(seed_bits)
    if len(raw) % w:
        raise CheckpointError(
            f"{field}: {len(raw)} bytes is not a whole number of {w}-byte seeds "
            f"(seed_bits {seed_bits}; value {_shown(text)})"
        )
    return struct.unpack(f"<{len(raw) // w}{_PACK[w]}", raw)


def encode_seeds(seeds, seed_bits: int):
    """The layer's seeds as stored: packed base64 text, or a JSON list of integers when that is shorter."""
    seeds = [int(s) for s in seeds]
    packed = pack_seeds(seeds, seed_bits)
    listed = json.dumps(seeds, separators=(",", ":"))
    return seeds if len(listed) < len(packed) + 2 else packed  # + 2: the string's quotes


def decode_seeds(value, seed_bits: int, rank: int, field: str) -> tuple[int, ...]:
    """The seeds of a layer entry (packed text or a list), checked for count only (the layer checks the
    values). Raises a one-line CheckpointError naming ``field`` and the value."""
    if isinstance(value, str):
        seeds = unpack_seeds(value, seed_bits, field)
    elif isinstance(value, list):
        for i, s in enumerate(value):
            if isinstance(s, bool) or not isinstance(s, int):
                raise CheckpointError(f"{field}[{i}]: expected an integer seed, got {_shown(s)}")
        seeds = tuple(value)
    else:
        raise CheckpointError(
            f"{field}: expected packed seeds (base64 text) or a list of integers, got {_shown(value)}"
        )
    want = n_seeds(rank)
    if len(seeds) != want:
        raise CheckpointError(
            f"{field}: rank {rank} needs {want} seeds (c0..c{rank - 1}, {', '.join(LAYER_SEED_NAMES)}), "
            f"got {len(seeds)} (value {_shown(value)})"
        )
    return seeds


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checkpoint_dict(model: GerminatorModel, meta: dict | None = None) -> dict:
    """The checkpoint of ``model`` as a JSON-able dict."""
    bits = model.spec.seed_bits
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "generator_version": prng.GENERATOR_VERSION,
        "spec": model.spec.model_dump(mode="json"),
        "layers": [
            {"seeds": encode_seeds(layer.get_seeds(), bits), "floats": encode_floats(layer.get_floats())}
            for layer in model.layers
        ],
        "meta": meta or {},
    }
    return {**body, "sha256": _digest(body)}


def checkpoint_bytes(model: GerminatorModel, meta: dict | None = None) -> bytes:
    """The checkpoint file's exact content (what save_checkpoint writes)."""
    return json.dumps(checkpoint_dict(model, meta), separators=(",", ":")).encode()


def save_checkpoint(model: GerminatorModel, path: str | os.PathLike, meta: dict | None = None) -> int:
    """Write the checkpoint atomically (temp file, fsync, rename); returns its size in bytes.

    Raises CheckpointError naming the path for an empty path, a directory, a missing parent directory or
    any other write failure; nothing is left behind then (the temporary file is removed).
    """
    data = checkpoint_bytes(model, meta)
    if not str(path):
        raise CheckpointError("output: an empty path (value '')")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"output: {str(path)!r} is a directory; name a file in it")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        what = "no such directory" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise CheckpointError(f"output: cannot write {str(path)!r} ({what})") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _check_versions(data: dict, source: str) -> None:
    fv, gen, gv = data.get("format_version"), data.get("generator"), data.get("generator_version")
    if fv != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version {_shown(fv)} (generator_version {_shown(gv)}) is not supported: this "
            f"build reads format_version {FORMAT_VERSION} with generator_version {prng.GENERATOR_VERSION}"
        )
    if gen != GENERATOR or gv != prng.GENERATOR_VERSION:
        raise CheckpointError(
            f"{source}: generator {_shown(gen)} version {_shown(gv)} is not supported: this build "
            f"generates with {GENERATOR!r} version {prng.GENERATOR_VERSION}"
        )


def model_from_dict(data: dict, source: str = "checkpoint") -> GerminatorModel:
    """Validate a checkpoint dict fully and build the model. Raises CheckpointError / SpecError."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{source}: format is {_shown(data.get('format'))}, expected {FORMAT!r}")
    _check_versions(data, source)
    body = {k: v for k, v in data.items() if k != "sha256"}
    if "sha256" not in data:
        raise CheckpointError(
            f"{source}: sha256: missing (every checkpoint carries the digest of its content)"
        )
    if data["sha256"] != _digest(body):
        raise CheckpointError(f"{source}: sha256 does not match the content (corrupted or edited)")
    if not isinstance(data.get("meta", {}), dict):
        raise CheckpointError(f"{source}: meta: expected an object, got {_shown(data.get('meta'))}")
    spec = data.get("spec")
    try:  # every size is bounded (spec.MAX_*): a spec implying more is refused before anything is built
        spec = load_model_spec(spec if isinstance(spec, dict) else {})
    except SpecError as exc:
        raise CheckpointError(f"{source}: spec: {str(exc).splitlines()[0]}") from None
    try:
        spec.require_resolved()
    except SpecError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    model = build_model(spec)
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) != len(model.layers):
        n = len(layers) if isinstance(layers, list) else _shown(layers)
        raise CheckpointError(f"{source}: layers: spec has {len(model.layers)} layers, file has {n}")
    for k, (entry, layer) in enumerate(zip(layers, model.layers, strict=True)):
        if not isinstance(entry, dict):
            raise CheckpointError(f"{source}: layers[{k}]: expected an object, got {_shown(entry)}")
        seeds = decode_seeds(entry.get("seeds"), spec.seed_bits, layer.rank, f"{source}: layers[{k}].seeds")
        floats = decode_floats(entry.get("floats", ""), f"{source}: layers[{k}].floats")
        if len(floats) != layer.num_floats:
            raise CheckpointError(
                f"{source}: layers[{k}].floats: shape mismatch: layer needs "
                f"{layer.num_floats} floats, file has {len(floats)}"
            )
        if not all(math.isfinite(v) for v in floats):
            raise CheckpointError(f"{source}: layers[{k}].floats: non-finite value")
        try:
            layer.set_seeds(seeds)  # range and distinct components; names the slot (seeds.c3, seeds.mask)
        except SpecError as exc:
            raise CheckpointError(f"{source}: layers[{k}].{exc}") from None
        layer.set_floats(floats)
    return model


def read_checkpoint(path: str | os.PathLike) -> tuple[GerminatorModel, dict]:
    """Load a checkpoint file: (a new model with bit-identical weights, the file's ``meta`` object).

    Raises CheckpointError for a file above MAX_CHECKPOINT_BYTES, one that is not JSON (nested too
    deeply, an integer of more digits than Python parses), or any invalid content.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: larger than the bound of {MAX_CHECKPOINT_BYTES} bytes for a checkpoint"
        )
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a checkpoint (JSON nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise CheckpointError(f"{path}: not a checkpoint ({str(exc)[:80]})") from None
    model = model_from_dict(data, str(path))
    return model, data.get("meta", {})


def load_checkpoint(path: str | os.PathLike) -> GerminatorModel:
    """Load a checkpoint file into a new model (bit-identical weights). Raises CheckpointError."""
    return read_checkpoint(path)[0]

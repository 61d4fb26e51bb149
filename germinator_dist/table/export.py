"""The seed table's JSON document, export and import (no redis import here).

The export document is the tiny checkpoint of a job::

    {"format": "germinator-table/2", "job": "...", "spec": {...}, "seed_bits": 63, "state": "RUNNING",
     "epoch": 12, "desired_workers": 4,
     "layers": [{"layer": 0, "seeds": [rank + 4 ints], "gens": [rank + 4 ints], "floats": [...],
                 "loss": 0.52 | null, "version": 3, "writer": "driver", "time": 1700000000.25}, ...]}

``loss`` is null for +inf (a row never measured, allowed only at version 0); floats are the float32 values
as JSON numbers; ``gens`` the slot generations. ``parse_export`` checks all of it before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import SpecError
from ..records import JobState, Snapshot, seed_names
from .codec import (
    FORMAT,
    check_float_count,
    check_gens,
    check_int,
    check_seed_bits,
    check_seeds,
    check_writer,
    encode_floats,
    encode_gens,
    encode_loss,
    encode_seeds,
    seed_width,
)

EXPORT_FORMAT = f"germinator-table/{FORMAT}"
MAX_LAYERS = 4096
_TOP = {"format", "job", "spec", "seed_bits", "state", "epoch", "desired_workers", "layers"}
_ROW = {"layer", "seeds", "gens", "floats", "loss", "version", "writer", "time"}


@dataclass(frozen=True)
class ParsedExport:
    """An export document, checked and encoded, ready for the CREATE script."""

    spec_json: str
    seed_bits: int
    state: JobState
    epoch: int
    desired_workers: int
    rows: list[list[bytes]]  # per layer: seeds, gens, floats, loss, version, writer, time


def export_doc(
    job: str, spec_json: str, snap: Snapshot, seed_bits: int, state: JobState, desired: int
) -> dict:
    """The JSON-ready export document of one consistent read."""
    return {
        "format": EXPORT_FORMAT,
        "job": job,
        "spec": json.loads(spec_json),
        "seed_bits": seed_bits,
        "state": state.value,
        "epoch": snap.epoch,
        "desired_workers": desired,
        "layers": [
            {
                "layer": e.layer,
                "seeds": list(e.seeds),
                "gens": list(e.generations),
                "floats": list(e.floats),
                "loss": None if e.loss == math.inf else e.loss,
                "version": e.version,
                "writer": e.writer,
                "time": e.time,
            }
            for e in snap.layers
        ],
    }


def parse_export(data: object) -> ParsedExport:
    """Check an export document completely; raise SpecError naming the first bad field and its value."""
    if not isinstance(data, Mapping):
        raise SpecError(f"export: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != EXPORT_FORMAT:
        raise SpecError(
            f"export.format: found {data.get('format')!r}, expected {EXPORT_FORMAT!r} (this is table format "
            f"{FORMAT}; an export of another format cannot be imported)"
        )
    keys = set(data)
    if keys - _TOP or (_TOP - {"job"}) - keys:
        raise SpecError(f"export: expected keys {sorted(_TOP)}, got {sorted(keys)}")
    if not isinstance(data["spec"], Mapping):
        raise SpecError(f"export.spec: expected a JSON object, got {type(data['spec']).__name__}")
    try:
        spec_json = json.dumps(data["spec"], allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"export.spec: not JSON-serializable ({exc})") from None
    seed_bits = check_seed_bits(data["seed_bits"], "export.seed_bits")
    try:
        state = JobState(data["state"])
    except ValueError:
        raise SpecError(
            f"export.state: {data['state']!r} is not one of {[s.value for s in JobState]}"
        ) from None
    epoch = check_int(data["epoch"], "export.epoch")
    desired = check_int(data["desired_workers"], "export.desired_workers", 0, 100_000)
    layers = data["layers"]
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise SpecError(f"export.layers: expected a list of 1..{MAX_LAYERS} rows, got {str(layers)[:80]}")
    rows = [_parse_row(i, row, seed_bits) for i, row in enumerate(layers)]
    versions = sum(int(r[4]) for r in rows)
    if versions != epoch:
        raise SpecError(f"export.epoch: {epoch} is not the sum of the layer versions ({versions})")
    return ParsedExport(spec_json, seed_bits, state, epoch, desired, rows)


def _parse_row(i: int, row: object, seed_bits: int) -> list[bytes]:
    where = f"export.layers[{i}]"
    if not isinstance(row, Mapping) or set(row) != _ROW:
        raise SpecError(f"{where}: expected an object with keys {sorted(_ROW)}, got {str(row)[:80]}")
    if row["layer"] != i or isinstance(row["layer"], bool):
        raise SpecError(f"{where}.layer: {row['layer']!r} is not {i}")
    version = check_int(row["version"], f"{where}.version")
    loss = row["loss"]
    if loss is None and version == 0:
        loss = math.inf
    elif loss is None:
        raise SpecError(f"{where}.loss: null (unmeasured) is only allowed at version 0, not {version}")
    time = row["time"]
    if isinstance(time, bool) or not isinstance(time, int | float) or not (math.isfinite(time) and time >= 0):
        raise SpecError(f"{where}.time: {time!r} is not a non-negative number")
    seeds = check_seeds(row["seeds"], seed_bits, f"{where}.seeds")
    rank = len(seeds) - 4
    if not isinstance(row["gens"], list):
        raise SpecError(f"{where}.gens: expected a list of integers, got {str(row['gens'])[:80]}")
    gens = check_gens(row["gens"], len(seeds), f"{where}.gens")
    for name, g in zip(seed_names(rank), gens, strict=True):
        if g > version:
            raise SpecError(f"{where}.gens.{name}: {g} is more than the row's version {version}")
    floats = row["floats"]
    if not isinstance(floats, list):
        raise SpecError(f"{where}.floats: expected a list of floats, got {str(floats)[:80]}")
    check_float_count(len(floats), rank, f"{where}.floats")
    return [
        encode_seeds(seeds, seed_width(seed_bits)),
        encode_gens(gens),
        encode_floats(floats, f"{where}.floats"),
        encode_loss(loss, allow_inf=version == 0, what=f"{where}.loss"),
        str(version).encode(),
        check_writer(row["writer"], f"{where}.writer").encode(),
        repr(float(time)).encode(),
    ]

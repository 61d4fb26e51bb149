"""The seed table's JSON document (export / import) and the replay of its event stream (no redis import).

The export document is the tiny checkpoint of a job::

    {"format": "germinator-table/1", "job": "...", "spec": {...}, "seed_bits": 63, "state": "RUNNING",
     "epoch": 12, "desired_workers": 4,
     "layers": [{"layer": 0, "seeds": [8 ints], "floats": [...], "loss": 0.52 | null, "version": 3,
                 "writer": "driver", "time": 1700000000.25}, ...]}

``loss`` is null for +inf (a row never measured, allowed only at version 0); floats are the float32 values
as JSON numbers. ``parse_export`` checks all of it before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import SpecError, TableError
from ..records import JobState, LayerEntry, Snapshot, TableEvent
from .codec import (
    check_int,
    check_seed_bits,
    check_seeds,
    check_writer,
    decode_float,
    decode_floats,
    decode_seeds,
    decode_text,
    decode_uint,
    encode_floats,
    encode_loss,
    encode_seeds,
)

EXPORT_FORMAT = "germinator-table/1"
MAX_LAYERS = 4096
_TOP = {"format", "job", "spec", "seed_bits", "state", "epoch", "desired_workers", "layers"}
_ROW = {"layer", "seeds", "floats", "loss", "version", "writer", "time"}
EVENT_KINDS = ("init", "import", "seeds", "floats")


@dataclass(frozen=True)
class ParsedExport:
    """An export document, checked and encoded, ready for the CREATE script."""

    spec_json: str
    seed_bits: int
    state: JobState
    epoch: int
    desired_workers: int
    rows: list[list[bytes]]  # per layer: seeds, floats, loss, version, writer, time


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
    keys = set(data)
    if keys - _TOP or (_TOP - {"job"}) - keys:
        raise SpecError(f"export: expected keys {sorted(_TOP)}, got {sorted(keys)}")
    if data["format"] != EXPORT_FORMAT:
        raise SpecError(f"export.format: {data['format']!r} is not {EXPORT_FORMAT!r}")
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
    versions = sum(int(r[3]) for r in rows)
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
    return [
        encode_seeds(check_seeds(row["seeds"], seed_bits, f"{where}.seeds")),
        encode_floats(row["floats"], f"{where}.floats"),
        encode_loss(loss, allow_inf=version == 0, what=f"{where}.loss"),
        str(version).encode(),
        check_writer(row["writer"], f"{where}.writer").encode(),
        repr(float(time)).encode(),
    ]


def decode_event(key: str, entry_id: bytes, fields: Mapping[bytes, bytes], seed_bits: int) -> TableEvent:
    """One stream entry as a TableEvent; TableError naming the stream, the entry and the bad field.

    ``init``/``import`` entries carry the row's ``time``; a commit's time is its entry id's clock.
    """
    where = f"{key} entry {entry_id.decode(errors='replace')}"
    kind = decode_text(fields.get(b"kind"), where, "kind")
    if kind not in EVENT_KINDS:
        raise TableError(
            f"malformed seed table entry {where} field 'kind': {kind!r} (expected {EVENT_KINDS})"
        )
    version = decode_uint(fields.get(b"version"), where, "version")
    seeds = None if kind == "floats" else decode_seeds(fields.get(b"seeds"), where, "seeds", seed_bits)
    return TableEvent(
        id=entry_id.decode(),
        kind=kind,
        layer=decode_uint(fields.get(b"layer"), where, "layer"),
        version=version,
        epoch=decode_uint(fields.get(b"epoch"), where, "epoch"),
        seeds=seeds,
        floats=decode_floats(fields.get(b"floats"), where, "floats"),
        loss=decode_float(fields.get(b"loss"), where, "loss", allow_inf=kind in ("init", "import")),
        writer=decode_text(fields.get(b"writer"), where, "writer"),
        time=decode_float(fields[b"time"], where, "time") if b"time" in fields else _id_time(entry_id),
    )


def _id_time(entry_id: bytes) -> float:
    """A commit's time is its stream id's millisecond clock (the id is the server's time of the commit)."""
    ms = entry_id.split(b"-")[0]
    return float(ms[:-3] + b"." + ms[-3:])


def replay(job: str, key: str, events: Iterable[TableEvent], up_to_epoch: int | None = None) -> Snapshot:
    """Rebuild every layer row from the stream alone; TableError if the stream is not a consistent history.

    The stream is one batch of ``init``/``import`` rows (layers 0..n-1, written when the job was created or
    imported), then ``seeds``/``floats`` entries whose epochs go up by one and whose versions go up by one
    per layer. With ``up_to_epoch``, entries after that epoch are ignored (they landed after a snapshot).
    """
    rows: list[LayerEntry] = []
    epoch = -1
    batch_done = False
    for ev in events:
        if ev.kind in ("init", "import"):
            if batch_done or ev.layer != len(rows) or (rows and ev.epoch != epoch):
                raise TableError(
                    f"stream {key}: entry {ev.id} ({ev.kind} of layer {ev.layer}) is out of order"
                )
            epoch = ev.epoch
            rows.append(
                LayerEntry(
                    layer=ev.layer,
                    seeds=ev.seeds,
                    floats=ev.floats,
                    loss=ev.loss,
                    version=ev.version,
                    writer=ev.writer,
                    time=ev.time,
                )
            )
            continue
        batch_done = True
        if up_to_epoch is not None and ev.epoch > up_to_epoch:
            break
        if (
            not rows
            or ev.epoch != epoch + 1
            or ev.layer >= len(rows)
            or ev.version != rows[ev.layer].version + 1
        ):
            raise TableError(
                f"stream {key}: entry {ev.id} ({ev.kind} layer {ev.layer} version {ev.version} "
                f"epoch {ev.epoch}) does not follow the history before it (epoch {epoch})"
            )
        old = rows[ev.layer]
        rows[ev.layer] = LayerEntry(
            layer=ev.layer,
            seeds=ev.seeds if ev.seeds is not None else old.seeds,
            floats=ev.floats,
            loss=ev.loss,
            version=ev.version,
            writer=ev.writer,
            time=ev.time,
        )
        epoch = ev.epoch
    if not rows:
        raise TableError(f"stream {key} is empty: nothing to rebuild from")
    return Snapshot(job=job, epoch=epoch, layers=tuple(rows))


def first_difference(a: Snapshot, b: Snapshot) -> str | None:
    """A one-line description of where two snapshots differ, or None if they are equal."""
    if a.epoch != b.epoch:
        return f"epoch {a.epoch} != {b.epoch}"
    if len(a.layers) != len(b.layers):
        return f"{len(a.layers)} layers != {len(b.layers)}"
    for x, y in zip(a.layers, b.layers, strict=True):
        for field in ("seeds", "floats", "loss", "version", "writer", "time"):
            if getattr(x, field) != getattr(y, field):
                return f"layer {x.layer} {field}: {getattr(x, field)!r} != {getattr(y, field)!r}"
    return None

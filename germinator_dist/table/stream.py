"""The seed table's event stream: strict decoding of its entries and the replay that rebuilds every row from
them (no redis import here). Entry kinds and fields: docs/table.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..errors import TableError
from ..records import LayerEntry, Snapshot, TableEvent
from .codec import (
    decode_float,
    decode_floats,
    decode_format,
    decode_gens,
    decode_seeds,
    decode_text,
    decode_uint,
    seed_width,
)

EVENT_KINDS = ("init", "import", "seeds", "swap", "floats")
_KEPT_RE = re.compile(rb"(?:\d{1,6}(?:,\d{1,6})*)?")


class StreamEvent(TableEvent):
    """A ``TableEvent`` with what table format 2 adds (``TableEvent.seeds`` is None for ``swap`` and
    ``floats``; ``floats`` is the slot's floats for ``swap`` and the resulting row floats for ``floats``).

    ``gens``: the row's slot generations after an ``init``/``import``/``seeds`` entry; ``slot``, ``seed``
    and ``gen`` (the slot's generation after it) of a ``swap``; ``kept``: the component slots a ``floats``
    publish left at the table's floats (they had been swapped since the generations it trained against).
    """

    gens: tuple[int, ...] | None = None
    slot: int | None = None
    seed: int | None = None
    gen: int | None = None
    kept: tuple[int, ...] = ()


def decode_event(key: str, entry_id: bytes, fields: Mapping[bytes, bytes], seed_bits: int) -> StreamEvent:
    """One stream entry; TableError naming the stream, the entry and the bad field (an entry of another
    table format names the format found and the one expected).

    ``init``/``import`` entries carry the row's ``time``; a commit's time is its entry id's clock.
    """
    where = f"{key} entry {entry_id.decode(errors='replace')}"
    decode_format(fields.get(b"format"), where)
    kind = decode_text(fields.get(b"kind"), where, "kind")
    if kind not in EVENT_KINDS:
        raise TableError(
            f"malformed seed table entry {where} field 'kind': {kind!r} (expected one of {EVENT_KINDS})"
        )
    extra: dict = {}
    seeds = None
    if kind in ("init", "import", "seeds"):
        extra["gens"] = decode_gens(fields.get(b"gens"), where)
        seeds = decode_seeds(fields.get(b"seeds"), where, "seeds", seed_bits, len(extra["gens"]))
        floats = decode_floats(fields.get(b"floats"), where, "floats", len(seeds) - 4)
    else:
        floats = decode_floats(fields.get(b"floats"), where, "floats")
    if kind == "swap":
        extra["slot"] = decode_uint(fields.get(b"slot"), where, "slot")
        extra["gen"] = decode_uint(fields.get(b"gen"), where, "gen")
        extra["seed"] = _decode_seed(fields.get(b"seed"), where, seed_bits)
    if kind == "floats":
        raw = fields.get(b"kept")
        if not isinstance(raw, bytes) or not _KEPT_RE.fullmatch(raw):
            raise TableError(
                f"malformed seed table entry {where} field 'kept': {raw!r} (expected slot numbers, comma "
                "separated)"
            )
        extra["kept"] = tuple(int(k) for k in raw.split(b",")) if raw else ()
    return StreamEvent(
        id=entry_id.decode(),
        kind=kind,
        layer=decode_uint(fields.get(b"layer"), where, "layer"),
        version=decode_uint(fields.get(b"version"), where, "version"),
        epoch=decode_uint(fields.get(b"epoch"), where, "epoch"),
        seeds=seeds,
        floats=floats,
        loss=decode_float(fields.get(b"loss"), where, "loss", allow_inf=kind in ("init", "import")),
        writer=decode_text(fields.get(b"writer"), where, "writer"),
        time=decode_float(fields[b"time"], where, "time") if b"time" in fields else _id_time(entry_id),
        **extra,
    )


def _decode_seed(raw: object, where: str, seed_bits: int) -> int:
    width = seed_width(seed_bits)
    if not isinstance(raw, bytes) or len(raw) != width:
        raise TableError(
            f"malformed seed table entry {where} field 'seed': {raw!r} (expected {width} little-endian bytes)"
        )
    seed = int.from_bytes(raw, "little")
    if seed >> seed_bits:
        raise TableError(
            f"malformed seed table entry {where} field 'seed': {raw!r} (wider than seed_bits={seed_bits})"
        )
    return seed


def _id_time(entry_id: bytes) -> float:
    """A commit's time is its stream id's millisecond clock (the id is the server's time of the commit)."""
    ms = entry_id.split(b"-")[0]
    return float(ms[:-3] + b"." + ms[-3:])


def slot_positions(rank: int, n_floats: int, slot: int) -> list[int]:
    """Indices of slot ``slot``'s floats in a layer's float list: g[slot], then e[j][i][slot] per expert
    row."""
    return [2 + j * rank + slot for j in range((n_floats - 2) // rank)]


def replay(job: str, key: str, events: Iterable[TableEvent], up_to_epoch: int | None = None) -> Snapshot:
    """Rebuild every layer row from the stream alone; TableError if the stream is not a consistent history.

    The stream is one batch of ``init``/``import`` rows (layers 0..n-1, written when the job was created or
    imported), then ``seeds``/``swap``/``floats`` entries whose epochs go up by one and whose versions go up
    by one per layer. With ``up_to_epoch``, entries after that epoch are ignored (they landed after a
    snapshot).
    """
    rows: list[LayerEntry] = []
    epoch = -1
    batch_done = False
    for ev in events:
        if not isinstance(ev, StreamEvent):
            raise TableError(f"stream {key}: entry {ev.id} is not a table format 2 event")
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
                    gens=ev.gens,
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
        old = rows[ev.layer] if ev.layer < len(rows) else None
        new = None
        if old is not None and ev.epoch == epoch + 1 and ev.version == old.version + 1:
            new = _apply(old, ev)
        if new is None:
            raise TableError(
                f"stream {key}: entry {ev.id} ({ev.kind} layer {ev.layer} version {ev.version} "
                f"epoch {ev.epoch}) does not follow the history before it (epoch {epoch})"
            )
        rows[ev.layer] = new
        epoch = ev.epoch
    if not rows:
        raise TableError(f"stream {key} is empty: nothing to rebuild from")
    return Snapshot(job=job, epoch=epoch, layers=tuple(rows))


def _apply(old: LayerEntry, ev: StreamEvent) -> LayerEntry | None:
    """The row after ``ev``, or None if ``ev`` cannot follow ``old``."""
    seeds, gens, floats = old.seeds, old.generations, ev.floats
    if ev.kind == "seeds":
        bumped = tuple(g + (a != b) for g, a, b in zip(gens, old.seeds, ev.seeds, strict=False))
        if len(ev.seeds) != len(seeds) or len(floats) != len(old.floats) or ev.gens != bumped:
            return None
        seeds, gens = ev.seeds, ev.gens
    elif ev.kind == "swap":
        k = ev.slot
        at = slot_positions(old.rank, len(old.floats), k) if k < old.rank else []
        held = ev.seed in seeds[: old.rank] and seeds.index(ev.seed) != k
        if not at or ev.gen != gens[k] + 1 or len(ev.floats) != len(at) or held:
            return None
        seeds = seeds[:k] + (ev.seed,) + seeds[k + 1 :]
        gens = gens[:k] + (ev.gen,) + gens[k + 1 :]
        merged = list(old.floats)
        for i, v in zip(at, ev.floats, strict=True):
            merged[i] = v
        floats = tuple(merged)
    else:  # floats: slots it kept must hold the table's floats as they were
        if len(floats) != len(old.floats) or any(k >= old.rank for k in ev.kept):
            return None
        for k in ev.kept:
            if any(floats[i] != old.floats[i] for i in slot_positions(old.rank, len(floats), k)):
                return None
    return LayerEntry(
        layer=old.layer,
        seeds=seeds,
        gens=gens,
        floats=floats,
        loss=ev.loss,
        version=ev.version,
        writer=ev.writer,
        time=ev.time,
    )


def first_difference(a: Snapshot, b: Snapshot) -> str | None:
    """A one-line description of where two snapshots differ, or None if they are equal."""
    if a.epoch != b.epoch:
        return f"epoch {a.epoch} != {b.epoch}"
    if len(a.layers) != len(b.layers):
        return f"{len(a.layers)} layers != {len(b.layers)}"
    for x, y in zip(a.layers, b.layers, strict=True):
        if x.generations != y.generations:
            return f"layer {x.layer} gens: {x.generations!r} != {y.generations!r}"
        for field in ("seeds", "floats", "loss", "version", "writer", "time"):
            if getattr(x, field) != getattr(y, field):
                return f"layer {x.layer} {field}: {getattr(x, field)!r} != {getattr(y, field)!r}"
    return None

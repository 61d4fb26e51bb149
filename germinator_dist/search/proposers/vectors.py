"""One layer's seed vector and a proposer's saved state: the checks every proposer runs (rank against the
seed width, searched slots, distinct component seeds, the state format) and the JSON forms of losses and
random generators. Imports no proposer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from germinator_dist.errors import SpecError
from germinator_dist.records import (
    MAX_RANK,
    N_LAYER_SEEDS,
    Candidate,
    duplicate_component,
    n_seeds,
    rank_of,
    seed_names,
)

STATE_FORMAT = 2  # 2: rank-stacked vectors (rank + 4 seeds); 1 held the old 8 fixed seeds


# ----------------------------------------------------------------------------- JSON helpers


def loss_to_json(loss: float) -> float | None:
    return float(loss) if math.isfinite(loss) else None


def loss_from_json(value: float | None) -> float:
    return math.inf if value is None else float(value)


def clean_loss(loss: float) -> float:
    """A told loss as a float; NaN becomes +inf. Raises SpecError if it is not a number."""
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise SpecError(f"loss={loss!r}: not a number") from None
    return math.inf if math.isnan(value) else value


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """PCG64 state with its 128-bit words as hex strings (exact in any JSON reader)."""
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": hex(st["state"]["state"]),
        "inc": hex(st["state"]["inc"]),
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def rng_from_json(d: dict[str, Any]) -> np.random.Generator:
    """Rebuild a generator from ``rng_state_to_json``; raises SpecError on a malformed state."""
    try:
        if d["bit_generator"] != "PCG64":
            raise ValueError(d["bit_generator"])
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(d["state"], 16), "inc": int(d["inc"], 16)},
            "has_uint32": int(d["has_uint32"]),
            "uinteger": int(d["uinteger"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"state.rng={d!r}: not a PCG64 state ({exc})") from None
    return rng


def tag_of(candidate: Candidate | int) -> int:
    """The tag of a Candidate, or the int itself; raises SpecError for anything else."""
    if isinstance(candidate, Candidate):
        return candidate.tag
    if isinstance(candidate, int | np.integer) and not isinstance(candidate, bool):
        return int(candidate)
    raise SpecError(f"candidate={candidate!r}: expected a Candidate or its integer tag")


def _for_layer(rank: int, layer: int | None) -> str:
    return f"for layer {layer} (rank {rank})" if layer is not None else f"for rank {rank}"


def check_rank(rank: int, seed_bits: int, field: str = "rank", layer: int | None = None) -> int:
    """``rank`` if its components can hold distinct seeds of ``seed_bits`` bits; raises SpecError if not."""
    if rank > 1 << seed_bits:
        raise SpecError(
            f"{field}={rank}: {rank} components need distinct seeds but seed_bits={seed_bits} has only "
            f"{1 << seed_bits} values" + ("" if layer is None else f" (layer {layer})")
        )
    return rank


def check_slots(
    slots: Iterable[int] | None, rank: int, field: str = "slots", layer: int | None = None
) -> tuple[int, ...]:
    """The searched slots of a rank-``rank`` layer, sorted; ``None`` means all ``rank + 4``.

    Raises SpecError (one line, naming ``field`` and the value) unless they are distinct integers in
    ``[0, rank + 4)``, at least one.
    """
    n = n_seeds(rank)
    if slots is None:
        return tuple(range(n))
    if isinstance(slots, str | bytes) or not isinstance(slots, Iterable):
        raise SpecError(
            f"{field}={slots!r}: expected a list of slot indices in [0, {n}) {_for_layer(rank, layer)}"
        )
    values = list(slots)
    if not values:
        raise SpecError(f"{field}=[]: name at least one slot in [0, {n}) {_for_layer(rank, layer)}")
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise SpecError(f"{field}: slot {v!r} is not an integer index into the layer's {n} seeds")
        if not 0 <= int(v) < n:
            raise SpecError(f"{field}: slot {int(v)} is outside [0, {n}) {_for_layer(rank, layer)}")
        if int(v) in out:
            raise SpecError(f"{field}: slot {int(v)} is named twice (value {[int(x) for x in values]})")
        out.append(int(v))
    return tuple(sorted(out))


def check_seed_vector(
    seeds: Sequence[int],
    seed_bits: int,
    field: str,
    rank: int | None = None,
    layer: int | None = None,
) -> tuple[int, ...]:
    """``seeds`` as a tuple of Python ints; raises SpecError (naming ``field``, slot and value) unless it is
    one layer's vector -- ``rank + 4`` seeds (any rank when ``rank`` is None), each an integer in
    ``[0, 2**seed_bits)``, no component seed repeated."""
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence | np.ndarray):
        raise SpecError(f"{field}={seeds!r}: expected a list of integer seeds")
    values = tuple(seeds)
    if rank is None:
        try:
            rank = rank_of(len(values))
        except ValueError:
            raise SpecError(
                f"{field}: {len(values)} seeds is no layer's vector (rank + {N_LAYER_SEEDS}: components "
                f"c0..c(rank-1), then mask, scale, shift, bias; rank 1..{MAX_RANK})"
            ) from None
    elif len(values) != n_seeds(rank):
        raise SpecError(
            f"{field}: expected {n_seeds(rank)} seeds {_for_layer(rank, layer)} (c0..c{rank - 1}, mask, "
            f"scale, shift, bias), got {len(values)}"
        )
    names = seed_names(rank)
    out = []
    for i, s in enumerate(values):
        if isinstance(s, bool) or not isinstance(s, int | np.integer):
            raise SpecError(f"{field}[{i}]={s!r}: not an integer ({names[i]})")
        if not 0 <= s < (1 << seed_bits):
            raise SpecError(f"{field}[{i}]={int(s)}: outside [0, 2**{seed_bits}) ({names[i]})")
        out.append(int(s))
    dup = duplicate_component(out)
    if dup is not None:
        first = out.index(out[dup])
        raise SpecError(
            f"{field}[{dup}]={out[dup]}: component c{dup} repeats the seed of c{first} "
            "(a layer never holds the same component seed twice)"
        )
    return tuple(out)


def check_state_format(state: Any) -> None:
    """Raise SpecError unless ``state`` is a dict written by this ``state_dict`` format."""
    if not isinstance(state, dict):
        raise SpecError(f"state={type(state).__name__}: expected a dict from state_dict()")
    if state.get("format") == 1:
        raise SpecError(
            "state.format=1: saved for the old 8-seed layout (a1, b1, a2, b2, ...), not rank + 4 "
            f"seeds; expected {STATE_FORMAT}"
        )
    if state.get("format") != STATE_FORMAT:
        raise SpecError(f"state.format={state.get('format')!r}: expected {STATE_FORMAT}")

"""Portable counter-based generator: Philox4x32-10 written with torch integer ops.

Same seed, same bits, everywhere: on CPU or GPU, in any process, with any thread count, and in chunks of
any size. torch's own generators cannot promise that (mt19937 on CPU, Philox with an
SM-count-dependent layout on CUDA), so every seeded tensor of the project comes from here.

Stream layout (generator version ``GENERATOR_VERSION``):
  key     = the 64-bit seed as two 32-bit words (lo, hi)
  counter = (block index lo, block index hi, role, stream)   -- every tensor of a layer has its own
            (role, stream) pair, so no stream is ever reused for two tensors.
Each counter gives one block of four uint32 words, consumed in order:
  * int8 / uint8: 16 bytes per block, little-endian within a word;
  * 16-bit draws (Bernoulli masks): 8 halves per block, low half first;
  * uniform float32: one word each, ``(w >> 8) * 2**-24``;
  * normal: Box-Muller on word pairs, computed in float64 and rounded once to float32.
Element ``i`` of a tensor always comes from block ``i // per_block``, so a chunk ``[start, stop)`` is
generated without generating anything before it.

All integer arithmetic is int64 on uint32 values; products wrap modulo 2**64, which keeps the low 64 bits
of the 32x32 product exact, and results are masked back to 32 bits.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import numpy as np
import torch

from germinator_dist.errors import SpecError

GENERATOR_VERSION = 2  # 2: rank components, one seed each (docs/layout.md)
MAX_SEED_BITS = 63

_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def _rounds(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """The Philox4x32 rounds on int64 columns (each (N,) or broadcastable) -> four int64 uint32 columns."""
    for _ in range(rounds):
        p0 = c0 * _M0  # wraps mod 2**64; the low 64 bits of the 32x32 product are exact
        p1 = c2 * _M1
        c0, c1, c2, c3 = (
            ((p1 >> 32) & _MASK32) ^ c1 ^ k0,
            p1 & _MASK32,
            ((p0 >> 32) & _MASK32) ^ c3 ^ k1,
            p0 & _MASK32,
        )
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def _words(cols) -> torch.Tensor:
    # uint32 words stored in int32 (two's complement; viewing them as bytes gives little-endian order).
    # Each column is narrowed before the stack, written as arithmetic rather than a plain cast: the
    # compiled kernel then writes the (N, 4) int32 output in one pass instead of a pass per column.
    return torch.stack([(w - ((w >> 31) << 32)).to(torch.int32) for w in cols], dim=-1)  # (..., 4) int32


def _philox_rounds(c0, c1, c2, c3, k0, k1, rounds: int = 10) -> torch.Tensor:
    """The Philox4x32 rounds on int64 columns (each (N,) or broadcastable); returns int32 words (N, 4)."""
    return _words(_rounds(c0, c1, c2, c3, k0, k1, rounds))


def _stream_cols(idx, role, stream, k0, k1):
    """Philox output columns for block indices ``idx`` (N,) of one stream (role, stream, k0, k1: 0-dim)."""
    c2 = torch.zeros_like(idx) + role  # (N,)
    c3 = torch.zeros_like(idx) + stream
    return _rounds(idx & _MASK32, idx >> 32, c2, c3, k0, k1)


def _block_words(idx, role, stream, k0, k1) -> torch.Tensor:
    """Blocks for block indices ``idx`` (N,) of one stream: int32 words (N, 4)."""
    return _words(_stream_cols(idx, role, stream, k0, k1))


def _grid_words(idx, role, stream, keys) -> torch.Tensor:
    """Blocks of N keys x P counters, broadcast inside the kernel: ``idx``, ``role`` (1, P) (block index
    and role of each counter), ``stream`` 0-dim, ``keys`` (N, 1) (64-bit seeds below 2**63). Returns each
    block's four words as two int64 (low word first), viewed as bytes the little-endian block: (N, P, 2)."""
    k0, k1 = keys & _MASK32, keys >> 32  # (N, 1) each
    zero = torch.zeros_like(k0)  # (N, 1): block indices stay below 2**32, so the counter's high word is 0
    c0, c1, c2, c3 = _rounds(idx + zero, zero + (idx >> 32), role + zero, stream + zero, k0, k1)  # (N, P)
    # two int64 outputs instead of four int32: the compiled kernel then writes the block in one loop
    return torch.stack([c0 | (c1 << 32), c2 | (c3 << 32)], dim=-1)  # (N, P, 2) int64


# The fused mask kernel below gives exactly what the 16-bit view of ``_block_words`` gives (little-endian:
# the low half of word 0 first), already compared and converted: one compiled pass from the counters to the
# mask instead of a kernel, a view and four eager passes. Bytes take the words kernel plus one eager
# conversion: a fused float output writes four times the bytes from inside the kernel.
def _block_mask_values(idx, role, stream, k0, k1, threshold: int, dtype) -> torch.Tensor:
    """Bernoulli values (16-bit draw < threshold) of blocks ``idx``: (N, 8) in ``dtype`` (bool allowed)."""
    parts = []
    for c in _stream_cols(idx, role, stream, k0, k1):
        for shift in (0, 16):
            parts.append((((c >> shift) & 0xFFFF) < threshold).to(dtype))
    return torch.stack(parts, dim=1)  # (N, 8)


_compiled: dict = {}
_compile_failed = False


_eager_depth = 0


def compile_enabled() -> bool:
    """Whether the fused torch.compile kernels are in use (GERMINATOR_PRNG_COMPILE=0 turns them off)."""
    return not _compile_failed and _eager_depth == 0 and os.environ.get("GERMINATOR_PRNG_COMPILE", "1") != "0"


@contextlib.contextmanager
def eager():
    """Use the eager path inside the block: for one-off generation in a short-lived process (e.g. the CLI
    measuring a new job's initial loss), where compiling the kernel would cost more than it saves."""
    global _eager_depth
    _eager_depth += 1
    try:
        yield
    finally:
        _eager_depth -= 1


def fast_path() -> str:
    """Which implementation generates bits for large requests: 'compiled' (fused kernel) or 'eager'."""
    return "compiled" if compile_enabled() else "eager"


def _call(fn, n: int, *args) -> torch.Tensor:
    """Run ``fn`` compiled (one fused kernel, ~100x faster than eager on CPU) or eagerly.

    Both give identical bits; tests check the compiled path against the known-answer vectors.
    """
    global _compile_failed
    if n < _COMPILE_MIN or not compile_enabled():
        return fn(*args)
    try:
        if fn not in _compiled:
            _compiled[fn] = torch.compile(fn, dynamic=True)
        return _compiled[fn](*args)
    except Exception as exc:  # pragma: no cover - e.g. no C++ compiler on the machine
        warnings.warn(f"torch.compile of the Philox kernel failed ({exc!r:.200}); using eager", stacklevel=2)
        _compile_failed = True
        return fn(*args)


# Below this many blocks the eager path is as fast as a compiled call; it also avoids compiling
# specializations for tiny sizes.
_COMPILE_MIN = int(os.environ.get("GERMINATOR_PRNG_COMPILE_MIN", "256"))


def philox4x32(counter: torch.Tensor, key: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Philox4x32 with ``rounds`` rounds.

    counter: int64 (N, 4) of uint32 words; key: int64 (N, 2) or (2,). Returns int64 (N, 4) of uint32 words.
    Raises SpecError on wrong shapes or dtypes.
    """
    if counter.dtype != torch.int64 or counter.dim() != 2 or counter.shape[1] != 4:
        raise SpecError(f"counter: expected int64 (N, 4), got {counter.dtype} {tuple(counter.shape)}")
    if key.dtype != torch.int64 or key.shape[-1] != 2 or key.dim() not in (1, 2):
        raise SpecError(f"key: expected int64 (2,) or (N, 2), got {key.dtype} {tuple(key.shape)}")
    n = counter.shape[0]
    key = key.to(counter.device).expand(n, 2) if key.dim() == 1 else key.to(counter.device)
    cols = [counter[:, i].contiguous() & _MASK32 for i in range(4)]  # each (N,)
    k0, k1 = (key[:, i].contiguous() & _MASK32 for i in range(2))
    words = _call(_philox_rounds, n, *cols, k0, k1, rounds)  # (N, 4) int32
    return words.to(torch.int64) & _MASK32


def check_seed(seed: int, seed_bits: int = MAX_SEED_BITS, field: str = "seed") -> int:
    """Return ``seed`` as an int; raise SpecError naming ``field`` if outside [0, 2**seed_bits)."""
    if isinstance(seed, (bool, np.bool_)):
        raise SpecError(f"{field}: seed must be an integer, got {seed!r}")
    if not isinstance(seed, int):
        try:
            as_int = int(seed)
        except (TypeError, ValueError):
            raise SpecError(f"{field}: seed must be an integer, got {seed!r}") from None
        if as_int != seed:
            raise SpecError(f"{field}: seed must be an integer, got {seed!r}")
        seed = as_int
    if not 0 <= seed < (1 << seed_bits):
        raise SpecError(f"{field}: seed {seed} is outside [0, 2**{seed_bits})")
    return seed


def _counters(seed: int, role: int, stream: int, first: int, count: int, device):
    """Block indices ``first .. first+count-1`` (count,) and the 0-dim words role, stream, key lo, key hi."""
    # The counter is built outside the compiled kernel on purpose: a counter made with arange inside a
    # compiled function was seen miscompiled here (wrong values from index 16 on).
    idx = torch.arange(first, first + count, dtype=torch.int64, device=device)  # (count,)
    consts = tuple(
        torch.tensor(v & _MASK32, dtype=torch.int64, device=idx.device)
        for v in (role, stream, seed, seed >> 32)
    )
    return (idx, *consts)


def _blocks(seed: int, role: int, stream: int, first: int, count: int, device) -> torch.Tensor:
    """Philox blocks ``first .. first+count-1`` of stream (seed, role, stream): int32 words (count, 4)."""
    return _call(_block_words, count, *_counters(seed, role, stream, first, count, device))  # (count, 4)


def _fused(count: int) -> bool:
    """Whether a request of ``count`` blocks goes through a fused compiled kernel (same values)."""
    return count >= _COMPILE_MIN and compile_enabled()


def _span(start: int, stop: int, per_block: int) -> tuple[int, int, int]:
    first = start // per_block
    last = (stop - 1) // per_block
    return first, last - first + 1, start - first * per_block


def _check_range(numel: int, start: int, stop: int | None) -> int:
    stop = numel if stop is None else stop
    if not 0 <= start <= stop <= numel:
        raise SpecError(f"chunk: range [{start}, {stop}) is outside [0, {numel}]")
    return stop


def _elements(seed, shape: tuple[int, ...], start: int, stop: int | None) -> tuple[int, int, bool]:
    """The checked seed, the chunk's end, and whether a chunk (flat) rather than the whole tensor (of
    ``shape``) is asked for. Raises SpecError on a bad seed or chunk range."""
    chunk = stop is not None or start != 0
    return check_seed(seed), _check_range(math.prod(shape), start, stop), chunk


def random_bytes(
    seed: int, role: int, stream: int, start: int, stop: int, device=None, signed: bool = False
) -> torch.Tensor:
    """Bytes ``start .. stop-1`` of a stream: uint8 (or int8 when ``signed``), shape (stop - start,)."""
    view = torch.int8 if signed else torch.uint8
    if stop <= start:
        return torch.empty(0, dtype=view, device=device)
    first, count, skip = _span(start, stop, 16)
    words = _blocks(seed, role, stream, first, count, device)  # (count, 4) int32
    return words.contiguous().view(view).reshape(-1)[skip : skip + (stop - start)]  # little-endian bytes


def _random_halves(seed: int, role: int, stream: int, start: int, stop: int, device=None) -> torch.Tensor:
    """16-bit draws as int32 in [0, 65536): (stop - start,)."""
    if stop <= start:
        return torch.empty(0, dtype=torch.int32, device=device)
    first, count, skip = _span(start, stop, 8)
    words = _blocks(seed, role, stream, first, count, device)  # (count, 4) int32
    h = words.contiguous().view(torch.int16).reshape(-1)[skip : skip + (stop - start)]  # low half first
    return h.to(torch.int32) & 0xFFFF


def _random_words(seed: int, role: int, stream: int, start: int, stop: int, device=None) -> torch.Tensor:
    """32-bit draws as int64 in [0, 2**32): (stop - start,)."""
    if stop <= start:
        return torch.empty(0, dtype=torch.int64, device=device)
    first, count, skip = _span(start, stop, 4)
    words = _blocks(seed, role, stream, first, count, device)  # (count, 4) int32
    return words.reshape(-1)[skip : skip + (stop - start)].to(torch.int64) & _MASK32


def int_tensor(
    seed: int,
    role: int,
    stream: int,
    shape: tuple[int, ...],
    int_dtype: str = "int8",
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Seeded int8 (signed, /128) or uint8 (/256) tensor as floats.

    With ``start``/``stop`` returns only the flat elements [start, stop) (a chunk, 1-D); otherwise the
    whole tensor of ``shape``. Raises SpecError on an unknown int_dtype, a bad seed or a bad chunk range.
    """
    seed, stop, chunk = _elements(seed, shape, start, stop)
    if int_dtype not in ("int8", "uint8"):
        raise SpecError(f"int_dtype: expected 'int8' or 'uint8', got {int_dtype!r}")
    signed = int_dtype == "int8"
    b = random_bytes(seed, role, stream, start, stop, device, signed=signed)  # (stop - start,)
    vals = b.to(dtype) * (1.0 / 128.0 if signed else 1.0 / 256.0)  # exact: powers of two
    return vals if chunk else vals.reshape(shape)


def bernoulli_mask(
    seed: int,
    role: int,
    stream: int,
    shape: tuple[int, ...],
    p: float,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Seeded {0, 1} mask with density ``p`` (quantized to multiples of 2**-16); ``dtype`` may be bool.

    Raises SpecError if p is outside [0, 1], or on a bad seed / chunk range.
    """
    if not 0.0 <= p <= 1.0:
        raise SpecError(f"mask_density: expected a value in [0, 1], got {p!r}")
    seed, stop, chunk = _elements(seed, shape, start, stop)
    threshold = round(p * 65536)
    first, count, skip = _span(start, stop, 8)
    if stop > start and _fused(count):
        args = _counters(seed, role, stream, first, count, device)
        vals = _call(_block_mask_values, count, *args, threshold, dtype)  # (count, 8)
        vals = vals.reshape(-1)[skip : skip + (stop - start)]
    else:
        vals = (_random_halves(seed, role, stream, start, stop, device) < threshold).to(dtype)
    return vals if chunk else vals.reshape(shape)


def uniform(
    seed: int,
    role: int,
    stream: int,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Seeded uniform floats in [0, 1) with 24 random bits each (exact in float32)."""
    seed, stop, chunk = _elements(seed, shape, start, stop)
    w = _random_words(seed, role, stream, start, stop, device)
    vals = ((w >> 8).to(torch.float64) * 2.0**-24).to(dtype)
    return vals if chunk else vals.reshape(shape)


def normal(
    seed: int,
    role: int,
    stream: int,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Seeded standard normal floats (Box-Muller on word pairs, float64 math rounded once)."""
    seed, stop, chunk = _elements(seed, shape, start, stop)
    if stop <= start:
        vals = torch.empty(0, dtype=dtype, device=device)
        return vals if chunk else vals.reshape(shape)
    # element i uses word pair i // 2 (words 2j, 2j+1); cos for even i, sin for odd i.
    pair_start, pair_stop = start // 2, (stop + 1) // 2
    w = _random_words(seed, role, stream, 2 * pair_start, 2 * pair_stop, device).reshape(-1, 2)  # (P, 2)
    u1 = ((w[:, 0] >> 8).to(torch.float64) + 1.0) * 2.0**-24  # (0, 1]
    u2 = (w[:, 1] >> 8).to(torch.float64) * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u1))
    theta = 2.0 * math.pi * u2
    z = torch.stack((radius * torch.cos(theta), radius * torch.sin(theta)), dim=1).reshape(-1)  # (2P,)
    off = start - 2 * pair_start
    vals = z[off : off + (stop - start)].to(dtype)
    return vals if chunk else vals.reshape(shape)


# ---- several tensors in one generator call ----------------------------------------------------------------
# A search worker needs a handful of small tensors per candidate (a changed factor, a bias); one compiled call
# costs ~20 us before it computes anything, so the tensors of a whole batch of candidates are generated in one
# call: the counter, role, stream and key words become per-row columns. Same bits as one call per tensor.
Request = tuple  # (seed, role, stream, shape)


def _many_counters(requests, per_block: int, device):
    """Per-row counter columns for whole tensors: block index (N,), role, stream, key lo, key hi (N,)."""
    counts = np.array([-(-math.prod(shape) // per_block) for _, _, _, shape in requests], dtype=np.int64)
    starts = np.cumsum(counts) - counts  # (R,)
    idx = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)  # (N,) block in its tensor
    rows = [[r & _MASK32, st & _MASK32, seed & _MASK32, seed >> 32] for seed, r, st, _ in requests]
    words = np.array(rows, dtype=np.int64)  # (R, 4): role, stream, key lo, key hi
    cols = np.repeat(words, counts, axis=0).T  # (4, N)
    tensors = [torch.from_numpy(idx), *(torch.from_numpy(np.ascontiguousarray(c)) for c in cols)]
    if device is not None and torch.device(device).type != "cpu":
        tensors = [t.to(device) for t in tensors]
    return tuple(tensors), counts.tolist()


def _split(flat: torch.Tensor, requests, counts, per_block: int, finish) -> list[torch.Tensor]:
    """Cut the requests' tensors out of one flat stream; ``finish`` turns a slice into a tensor of its own."""
    out, pos = [], 0
    for (_, _, _, shape), c in zip(requests, counts):
        out.append(finish(flat[pos : pos + math.prod(shape)]).reshape(shape))
        pos += c * per_block
    return out


def int_tensors(requests, int_dtype: str = "int8", *, dtype=torch.float32, device=None) -> list[torch.Tensor]:
    """``int_tensor(seed, role, stream, shape, int_dtype)`` for each (seed, role, stream, shape) request,
    from one generator call. Raises SpecError on an unknown int_dtype or a bad seed."""
    if int_dtype not in ("int8", "uint8"):
        raise SpecError(f"int_dtype: expected 'int8' or 'uint8', got {int_dtype!r}")
    requests = [(check_seed(seed), role, stream, tuple(shape)) for seed, role, stream, shape in requests]
    if not requests:
        return []
    args, counts = _many_counters(requests, 16, device)
    words = _call(_block_words, args[0].numel(), *args)  # (N, 4) int32
    signed = int_dtype == "int8"
    flat = words.view(torch.int8 if signed else torch.uint8).reshape(-1)  # (16 N,) little-endian bytes
    scale = 1.0 / 128.0 if signed else 1.0 / 256.0  # exact: powers of two
    return _split(flat, requests, counts, 16, lambda b: b.to(dtype).mul_(scale))  # each its own memory


def bernoulli_masks(requests, p: float, *, dtype=torch.float32, device=None) -> list[torch.Tensor]:
    """``bernoulli_mask(seed, role, stream, shape, p)`` for each (seed, role, stream, shape) request, from one
    generator call. Raises SpecError if p is outside [0, 1] or on a bad seed."""
    if not 0.0 <= p <= 1.0:
        raise SpecError(f"mask_density: expected a value in [0, 1], got {p!r}")
    requests = [(check_seed(seed), role, stream, tuple(shape)) for seed, role, stream, shape in requests]
    if not requests:
        return []
    args, counts = _many_counters(requests, 8, device)
    vals = _call(_block_mask_values, args[0].numel(), *args, round(p * 65536), dtype)  # (N, 8)
    return _split(vals.reshape(-1), requests, counts, 8, torch.clone)


# ---- rank components: four vectors per seed, many seeds in one generator call ----------------------------
COMPONENT_ROLES = (1, 2, 3, 4)  # a1 (out), b1 (in), a2 (out), b2 (in)


def seed_array(seeds) -> np.ndarray:
    """``seeds`` (a sequence of ints, an integer NumPy array or tensor) as int64 (N,), each checked in
    [0, 2**63). Raises SpecError naming the first bad seed (a bool, a non-integer, out of range)."""
    if isinstance(seeds, (np.ndarray, torch.Tensor)):
        arr = seeds.detach().cpu().numpy() if isinstance(seeds, torch.Tensor) else seeds
        if (
            arr.ndim == 1
            and arr.dtype.kind in "iu"
            and (arr.size == 0 or (arr.min() >= 0 and int(arr.max()) < 1 << 63))
        ):
            return arr.astype(np.int64, copy=False)
        seeds = arr.tolist()
    elif not isinstance(seeds, (list, tuple)):
        seeds = list(seeds)
    if set(map(type, seeds)) <= {int}:  # plain ints (no bools): one range check for all of them
        try:
            arr = np.array(seeds, dtype=np.int64)  # OverflowError past 2**63
        except OverflowError:
            arr = None
        if arr is not None and (arr.size == 0 or arr.min() >= 0):
            return arr
    return np.array([check_seed(s) for s in seeds], dtype=np.uint64).astype(np.int64)  # raises on the bad one


_COUNTERS: dict = {}


def _component_counters(ca: int, cb: int, stream: int, device):
    """Per-seed counter columns of a layer's components, blocks in the order a1, a2, b1, b2: block index
    within its vector (1, P) and role (1, P), with the stream word (0-dim); cached per shape and device."""
    key = (ca, cb, stream & _MASK32, str(device))
    if key not in _COUNTERS:
        idx = np.concatenate([np.arange(ca), np.arange(ca), np.arange(cb), np.arange(cb)]).astype(np.int64)
        role = np.repeat(np.array([1, 3, 2, 4], dtype=np.int64), [ca, ca, cb, cb])
        cols = (torch.from_numpy(idx)[None], torch.from_numpy(role)[None], torch.tensor(stream & _MASK32))
        if len(_COUNTERS) >= 256:
            _COUNTERS.clear()
        _COUNTERS[key] = tuple(c.to(device) if device is not None else c for c in cols)
    return _COUNTERS[key]


def component_values(n: int, out_features: int, in_features: int) -> int:
    """Elements of the buffer ``components`` converts ``n`` seeds' components into (blocks padded)."""
    return n * 32 * (-(-out_features // 16) + -(-in_features // 16))


def components(
    seeds,
    stream: int,
    out_features: int,
    in_features: int,
    int_dtype: str = "int8",
    *,
    dtype=torch.float32,
    device=None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rank components of ``seeds`` (N,) in layer ``stream``, from one generator call.

    Component vector v of seed s is ``int_tensor(s, role(v), stream, (len,), int_dtype)`` with roles
    a1 = 1, b1 = 2, a2 = 3, b2 = 4: the same bits as generating each vector alone. Returns
    a1 (N, out), b1 (N, in), a2 (N, out), b2 (N, in). With ``out`` (a 1-D ``dtype`` buffer of at least
    ``component_values(N, out, in)`` elements on ``device``) the four are views into it: a caller that
    screens batch after batch reuses one buffer instead of touching fresh memory each time. Raises
    SpecError on a bad seed, int_dtype or buffer.
    """
    if int_dtype not in ("int8", "uint8"):
        raise SpecError(f"int_dtype: expected 'int8' or 'uint8', got {int_dtype!r}")
    keys = seed_array(seeds)  # (N,) int64
    n = keys.shape[0]
    if n == 0:
        empty = lambda m: torch.empty(0, m, dtype=dtype, device=device)  # noqa: E731
        return empty(out_features), empty(in_features), empty(out_features), empty(in_features)
    ca, cb = -(-out_features // 16), -(-in_features // 16)  # blocks per a-vector, per b-vector
    per_seed = 2 * ca + 2 * cb
    idx, role, stream_t = _component_counters(ca, cb, stream, device)  # (1, P), (1, P), 0-dim
    k = torch.from_numpy(keys).unsqueeze(1)  # (N, 1)
    if device is not None and torch.device(device).type != "cpu":
        k = k.to(device)
    words = _call(_grid_words, n * per_seed, idx, role, stream_t, k)  # (N, P, 2)
    signed = int_dtype == "int8"
    raw = words.view(torch.int8 if signed else torch.uint8).reshape(n, 16 * per_seed)  # (N, bytes)
    if out is None:
        vals = raw.to(dtype)  # (N, bytes)
    else:
        if out.dim() != 1 or out.dtype != dtype or out.numel() < raw.numel() or out.device != raw.device:
            raise SpecError(
                f"out: expected a 1-D {dtype} buffer of at least {raw.numel()} elements on {raw.device}, "
                f"got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
        vals = out[: raw.numel()].view(n, 16 * per_seed).copy_(raw)  # (N, bytes)
    vals.mul_(1.0 / 128.0 if signed else 1.0 / 256.0)  # exact: powers of two
    a, b = 16 * ca, 16 * cb
    a1 = vals[:, :out_features]  # (N, out)
    a2 = vals[:, a : a + out_features]
    b1 = vals[:, 2 * a : 2 * a + in_features]  # (N, in)
    b2 = vals[:, 2 * a + b : 2 * a + b + in_features]
    return a1, b1, a2, b2

"""Key names, argument checks and value codecs of the seed table (no redis import here).

Everything that goes into Redis is checked here first, and everything read back is decoded strictly here:
a malformed value read from Redis raises ``TableError`` naming the key, the field and the value; a bad
argument raises ``SpecError`` naming the argument and the value. Nothing is ever unpickled.

Binary encodings (table format 2, docs/table.md): a row's seeds are packed little-endian unsigned integers of
the job's seed width (``seed_width``: 1, 2, 4 or 8 bytes by seed_bits); on the wire to a script they are
8 bytes each (``encode_wire_seeds``) and the script narrows them. Generations are little-endian uint32,
floats little-endian float32.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import struct
from collections.abc import Iterable, Mapping

from ..errors import SpecError, TableError
from ..records import MAX_RANK, N_LAYER_SEEDS, JobState, rank_of, seed_names

FORMAT = "2"  # table format, stored in every job's meta hash, every row and every stream entry
REGISTRY_KEY = "germ:jobs"  # set of job ids; the only key outside a job's own hash tag
ROLES = ("worker", "driver", "trainer")
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MEMBER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}")
DOC_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_DOC = 8 << 20
MAX_WRITER = 200
MAX_PAYLOAD = 4096
MAX_SEED_BITS = 63
MAX_GEN = 2**32 - 1  # generations are stored as uint32
FLOAT32_MAX = 3.4028234663852886e38
_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}

# Legal job-state transitions (a transition to the current state is an idempotent no-op).
TRANSITIONS: dict[JobState, tuple[JobState, ...]] = {
    JobState.PENDING: (JobState.RUNNING, JobState.FAILED, JobState.CANCELLED),
    JobState.RUNNING: (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED),
    JobState.FAILED: (JobState.RUNNING,),
    JobState.CANCELLED: (JobState.RUNNING,),
    JobState.SUCCEEDED: (),
}
WRITABLE_STATES = (JobState.PENDING, JobState.RUNNING)

_FLOAT_RE = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|inf")
_UINT_RE = re.compile(rb"\d{1,15}")
_INT = {int}


class Keys:
    """The Redis keys of one job. The job id is a Redis Cluster hash tag, so all of them share a slot."""

    __slots__ = ("job", "prefix", "meta", "events", "progress", "docs")

    def __init__(self, job: str) -> None:
        self.job = check_job_id(job)
        self.prefix = f"germ:{{{job}}}:"
        self.meta = self.prefix + "meta"
        self.events = self.prefix + "events"
        self.progress = self.prefix + "progress"
        self.docs = self.prefix + "docs"

    def layer(self, index: int) -> str:
        return f"{self.prefix}layer:{index}"

    def hb(self, role: str) -> str:
        return f"{self.prefix}hb:{check_role(role)}"

    def hbdata(self, role: str) -> str:
        return f"{self.prefix}hbdata:{check_role(role)}"

    def batch(self, token: str) -> str:
        return f"{self.prefix}batch:{token}"


# --- argument checks (SpecError) --------------------------------------------------------------------------


def check_job_id(job: object) -> str:
    """Return ``job``; raise SpecError unless it matches ``JOB_ID_RE`` (it cannot leave its namespace)."""
    if not isinstance(job, str) or not JOB_ID_RE.fullmatch(job):
        raise SpecError(f"job id: {job!r} is not 1-64 characters of [A-Za-z0-9_.-] starting alphanumeric")
    return job


def check_role(role: object) -> str:
    if role not in ROLES:
        raise SpecError(f"heartbeat role: {role!r} is not one of {list(ROLES)}")
    return role  # type: ignore[return-value]


def check_member_id(member: object) -> str:
    if not isinstance(member, str) or not MEMBER_ID_RE.fullmatch(member):
        raise SpecError(f"heartbeat id: {member!r} is not 1-128 characters of [A-Za-z0-9_.:@/+-]")
    return member


def check_writer(writer: object, what: str = "evaluator_id") -> str:
    if not isinstance(writer, str) or len(writer) > MAX_WRITER or not writer.isprintable():
        raise SpecError(f"{what}: {writer!r} is not a printable string of at most {MAX_WRITER} characters")
    return writer


def check_int(value: object, what: str, lo: int = 0, hi: int = 10**15) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{what}: {value!r} is not an integer in [{lo}, {hi}]")
    return value


def check_seed_bits(bits: object, what: str = "seed_bits") -> int:
    return check_int(bits, what, 1, MAX_SEED_BITS)


def check_seeds(seeds: object, seed_bits: int = MAX_SEED_BITS, what: str = "seeds") -> tuple[int, ...]:
    """The seeds as a tuple of ints. SpecError unless they are ``rank + 4`` integers in [0, 2**seed_bits)
    (rank 1..MAX_RANK) with no component seed twice (docs/layout.md); the error names the slot.

    Any integer type is accepted (numpy's too); bools and floats are not.
    """
    if type(seeds) is tuple or type(seeds) is list:
        t = tuple(seeds)
        n = len(t)
        if (
            N_LAYER_SEEDS < n <= MAX_RANK + N_LAYER_SEEDS
            and set(map(type, t)) == _INT
            and min(t) >= 0
            and not max(t) >> seed_bits
            and len(set(t[:-N_LAYER_SEEDS])) == n - N_LAYER_SEEDS
        ):
            return t  # the fast path: plain ints in range, components distinct
    if isinstance(seeds, str | bytes | Mapping) or not isinstance(seeds, Iterable):
        raise SpecError(f"{what}: expected rank + {N_LAYER_SEEDS} integer seeds, got {seeds!r}"[:300])
    t = tuple(seeds)
    try:
        names = seed_names(rank_of(len(t)))
    except ValueError as exc:
        raise SpecError(f"{what}: {exc}") from None
    out = []
    for name, x in zip(names, t, strict=True):
        try:
            v = operator.index(x) if not isinstance(x, bool) else -1
        except TypeError:
            v = -1
        if not 0 <= v < 1 << seed_bits:
            raise SpecError(f"{what}.{name}: {x!r} is not an integer in [0, 2**{seed_bits})")
        out.append(v)
    comps = out[:-N_LAYER_SEEDS]
    for k, v in enumerate(comps):
        if v in comps[:k]:
            raise SpecError(
                f"{what}.c{k}: {v} repeats component c{comps.index(v)}'s seed "
                "(a layer never holds one component seed twice)"
            )
    return tuple(out)


def check_seed(seed: object, seed_bits: int = MAX_SEED_BITS, what: str = "seed") -> int:
    if isinstance(seed, bool):
        seed = -1
    try:
        v = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        v = -1
    if not 0 <= v < 1 << seed_bits:
        raise SpecError(f"{what}: {seed!r} is not an integer in [0, 2**{seed_bits})")
    return v


def check_gens(gens: object, count: int, what: str = "gens") -> tuple[int, ...]:
    """``count`` generations (uint32) as a tuple of ints; SpecError naming the slot otherwise."""
    if isinstance(gens, str | bytes | Mapping) or not isinstance(gens, Iterable):
        raise SpecError(f"{what}: expected {count} integer generations, got {gens!r}"[:300])
    t = tuple(gens)
    if len(t) != count:
        raise SpecError(f"{what}: expected {count} generations (one per seed slot), got {len(t)}")
    names = seed_names(count - N_LAYER_SEEDS) if count > N_LAYER_SEEDS else [str(i) for i in range(count)]
    for name, g in zip(names, t, strict=True):
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_GEN:
            raise SpecError(f"{what}.{name}: {g!r} is not an integer in [0, {MAX_GEN}]")
    return t


def check_float_count(n: int, rank: int, what: str = "floats") -> None:
    """SpecError unless ``n`` floats fit a layer of rank ``rank``: ``2 + rank * (1 + experts)``."""
    if n < 2 + rank or (n - 2) % rank:
        raise SpecError(
            f"{what}: {n} values do not fit rank {rank} (expected 2 + {rank} * (1 + experts): "
            "alpha, beta, g, expert rows)"
        )


def seed_width(seed_bits: int) -> int:
    """Bytes per stored seed for a job of ``seed_bits``: 1, 2, 4 or 8."""
    return 1 if seed_bits <= 8 else 2 if seed_bits <= 16 else 4 if seed_bits <= 32 else 8


def bits_needed(seeds: Iterable[int]) -> int:
    """The number of bits the widest seed needs (checked against the job's seed_bits inside Redis)."""
    return max(seeds).bit_length()


def encode_seeds(seeds: tuple[int, ...], width: int) -> bytes:
    """Checked seeds packed little-endian, ``width`` bytes each (a row's ``seeds`` field)."""
    return _uints(width, len(seeds)).pack(*seeds)


def encode_wire_seeds(seeds: tuple[int, ...]) -> bytes:
    """Checked seeds as 8-byte little-endian integers (a script narrows them to the job's width)."""
    return _uints(8, len(seeds)).pack(*seeds)


def encode_gens(gens: tuple[int, ...]) -> bytes:
    """Checked generations as little-endian uint32."""
    return _uints(4, len(gens)).pack(*gens)


@functools.cache
def _uints(width: int, n: int) -> struct.Struct:
    return struct.Struct(f"<{n}{_UINT_CODES[width]}")


def encode_floats(floats: object, what: str = "floats") -> bytes:
    """Pack floats as little-endian float32; SpecError for non-numbers, NaN, inf or float32 overflow."""
    if isinstance(floats, str | bytes | Mapping) or not isinstance(floats, Iterable):
        raise SpecError(f"{what}: expected a sequence of floats, got {floats!r}")
    vals = floats if type(floats) is tuple or type(floats) is list else tuple(floats)
    try:
        total = sum(vals)  # NaN or inf anywhere makes the sum NaN or inf: one C loop checks them all
        packed = _f32(len(vals)).pack(*vals)
    except (TypeError, struct.error, OverflowError):
        total, packed = math.nan, b""
    if total - total == 0:
        return packed
    for x in vals:
        if isinstance(x, str | bytes) or not _finite(x):
            raise SpecError(f"{what}: {x!r} is not a finite number")
    raise SpecError(f"{what}: a value is outside the float32 range (|x| <= {FLOAT32_MAX:.4g})")


@functools.cache
def _f32(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


def _finite(x: object) -> bool:
    try:
        return math.isfinite(x)  # type: ignore[arg-type]
    except TypeError:
        return False


def encode_loss(loss: object, *, allow_inf: bool = False, what: str = "loss") -> bytes:
    """``repr`` of the loss; SpecError for NaN, -inf, non-numbers, and +inf unless ``allow_inf``."""
    if type(loss) is float and loss - loss == 0:
        return repr(loss).encode()  # the fast path: a finite float
    if isinstance(loss, bool | str | bytes) or not _finite(loss) and not (allow_inf and loss == math.inf):
        allowed = "a finite number or +inf (unmeasured)" if allow_inf else "a finite number"
        raise SpecError(f"{what}: {loss!r} is not {allowed}")
    return repr(float(loss)).encode()  # type: ignore[arg-type]


def check_spec_json(spec_json: object) -> str:
    if not isinstance(spec_json, str):
        raise SpecError(f"spec_json: expected a JSON string, got {type(spec_json).__name__}")
    try:
        spec = json.loads(spec_json)
    except ValueError as exc:
        raise SpecError(f"spec_json: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"spec_json: expected a JSON object, got {spec_json[:80]!r}")
    return spec_json


def check_doc(name: object, text: object) -> tuple[str, bytes]:
    """A named JSON document: SpecError unless the name matches DOC_NAME_RE and the text is JSON."""
    if not isinstance(name, str) or not DOC_NAME_RE.fullmatch(name):
        raise SpecError(f"doc name: {name!r} is not 1-128 characters of [A-Za-z0-9_.:-]")
    if not isinstance(text, str):
        raise SpecError(f"doc {name}: expected JSON text, got {type(text).__name__}")
    raw = text.encode()
    if len(raw) > MAX_DOC:
        raise SpecError(f"doc {name}: {len(raw)} bytes, at most {MAX_DOC} allowed")
    try:
        json.loads(raw)
    except ValueError as exc:
        raise SpecError(f"doc {name}: not JSON ({exc})") from None
    return name, raw


def encode_payload(payload: object) -> bytes:
    """A heartbeat payload: a flat JSON object of scalars, at most MAX_PAYLOAD bytes; SpecError otherwise."""
    if payload is None:
        return b"{}"
    scalars = (str, int, float, bool, type(None))
    if not isinstance(payload, dict) or not all(
        isinstance(k, str) and isinstance(v, scalars) for k, v in payload.items()
    ):
        raise SpecError(f"heartbeat payload: {payload!r} is not a flat dict of str -> JSON scalar")
    try:
        raw = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise SpecError(f"heartbeat payload: {exc}") from None
    if len(raw) > MAX_PAYLOAD:
        raise SpecError(f"heartbeat payload: {len(raw)} bytes of JSON, at most {MAX_PAYLOAD} allowed")
    return raw


# --- strict decoding of what Redis holds (TableError) -----------------------------------------------------


def _bad(key: str, field: str, raw: object, why: str) -> TableError:
    shown = raw if not isinstance(raw, bytes) or len(raw) <= 80 else raw[:80] + b"..."
    return TableError(f"malformed seed table entry {key} field {field!r}: {shown!r} ({why})")


def need(raw: object, key: str, field: str) -> bytes:
    if not isinstance(raw, bytes):
        raise _bad(key, field, raw, "missing")
    return raw


def decode_uint(raw: object, key: str, field: str) -> int:
    if not isinstance(raw, bytes) or not _UINT_RE.fullmatch(raw):
        raise _bad(key, field, raw, "expected a non-negative integer")
    return int(raw)


def decode_float(raw: object, key: str, field: str, *, allow_inf: bool = False) -> float:
    if not isinstance(raw, bytes) or not _FLOAT_RE.fullmatch(raw) or (raw == b"inf" and not allow_inf):
        raise _bad(key, field, raw, "expected a finite float" + (" or inf" if allow_inf else ""))
    value = float(raw)
    if value == -math.inf or (value == math.inf and raw != b"inf"):
        raise _bad(key, field, raw, "out of range")
    return value


def decode_text(raw: object, key: str, field: str) -> str:
    if not isinstance(raw, bytes):
        raise _bad(key, field, raw, "missing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(key, field, raw, "not UTF-8 text") from None


def decode_format(raw: object, key: str) -> None:
    """TableError naming the format found and the one expected unless ``raw`` is this table format."""
    if raw == FORMAT.encode():
        return
    found = "table format 1 (it has no format field)" if raw is None else "table format " + repr(raw)[1:]
    raise _bad(key, "format", raw, f"found {found}, expected table format {FORMAT}")


def decode_seeds(
    raw: object, key: str, field: str = "seeds", seed_bits: int = MAX_SEED_BITS, count: int | None = None
) -> tuple[int, ...]:
    """A packed seed vector of the job's width: rank + 4 seeds (``count`` of them if given, the row's
    generation count) below 2**seed_bits, no component seed twice."""
    width = seed_width(seed_bits)
    if not isinstance(raw, bytes) or len(raw) % width:
        raise _bad(key, field, raw, f"expected little-endian seeds of {width} bytes")
    n = len(raw) // width
    if count is not None and n != count:
        raise _bad(key, field, raw, f"{n} seeds of {width} bytes, but gens holds {count} generations")
    if not N_LAYER_SEEDS < n <= MAX_RANK + N_LAYER_SEEDS:
        raise _bad(key, field, raw, f"{n} seeds, expected rank + {N_LAYER_SEEDS} (rank 1..{MAX_RANK})")
    seeds = _uints(width, n).unpack(raw)
    if max(seeds) >> seed_bits:
        raise _bad(key, field, raw, f"a seed is wider than the job's seed_bits={seed_bits}")
    k = _repeat(seeds[:-N_LAYER_SEEDS])
    if k is not None:
        raise _bad(key, field, raw, f"component c{k} repeats an earlier component's seed")
    return seeds


def _repeat(comps: tuple[int, ...]) -> int | None:
    if len(set(comps)) == len(comps):
        return None
    seen: set[int] = set()
    for k, s in enumerate(comps):
        if s in seen:
            return k
        seen.add(s)
    return None  # pragma: no cover


def decode_gens(raw: object, key: str, field: str = "gens") -> tuple[int, ...]:
    """A row's slot generations: rank + 4 little-endian uint32."""
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise _bad(key, field, raw, "expected little-endian uint32 generations")
    n = len(raw) // 4
    if not N_LAYER_SEEDS < n <= MAX_RANK + N_LAYER_SEEDS:
        raise _bad(key, field, raw, f"{n} generations, expected rank + {N_LAYER_SEEDS} (rank 1..{MAX_RANK})")
    return _uints(4, n).unpack(raw)


def decode_floats(raw: object, key: str, field: str = "floats", rank: int | None = None) -> tuple[float, ...]:
    """Little-endian float32, all finite; with ``rank``, exactly ``2 + rank * (1 + experts)`` of them."""
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise _bad(key, field, raw, "expected little-endian float32 bytes")
    n = len(raw) // 4
    if rank is not None and (n < 2 + rank or (n - 2) % rank):
        raise _bad(key, field, raw, f"{n} values do not fit rank {rank} (2 + rank * (1 + experts))")
    values = _f32(n).unpack(raw)
    if not all(map(math.isfinite, values)):
        raise _bad(key, field, raw, "contains NaN or inf")
    return values


def decode_state(raw: object, key: str) -> JobState:
    try:
        return JobState(decode_text(raw, key, "state"))
    except ValueError:
        raise _bad(key, "state", raw, f"expected one of {[s.value for s in JobState]}") from None

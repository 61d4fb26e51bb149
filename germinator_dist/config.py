"""Every configuration of a job, in one pure module: frozen pydantic models (``extra="forbid"``).

``ModelSpec`` (a network's shape), ``JobSpec`` and its parts (data, fitness, search with ``SwapConfig``,
``TrainerConfig``, workers) and ``SweepSpec``. Dimensions that the data determines (input width, classes,
vocabulary) may be left out of ``model``; ``search.job_setup.resolve_job`` fills them in from the data.
Every error names its field path and value. Imports pydantic and yaml only (besides errors and records).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from germinator_dist.errors import SpecError
from germinator_dist.records import SEED_WIDTHS

SeedBits = Literal[SEED_WIDTHS]  # type: ignore[valid-type]

# Upper bounds of every dimension (docs/security.md, "Sizes"): a spec, a data set or a checkpoint that
# implies more is refused before anything is allocated.
MAX_WIDTH = 65_536  # input_dim, each hidden width, num_classes, vocab_size, d_model, d_ff
MAX_DEPTH = 64  # hidden widths of an MLP; blocks of an LM
MAX_CONTEXT = 4096  # LM context (the token mixer holds a context x context matrix)
MAX_RANK = 4096
MAX_SPLITS, MAX_EXPERTS = 8, 4096  # expert splits per layer, experts per split
MAX_LAYER_WEIGHTS = 1 << 24  # in x out of one layer (16.8M: 4096 x 4096); ~0.4 GB of generated tensors
MAX_LAYER_FACTORS = 1 << 24  # rank x (in + out): the low-rank factors A and B of one layer
MAX_MODEL_WEIGHTS = 1 << 26  # in x out summed over the layers (the trainer caches every layer)
MAX_MODEL_FLOATS = 1 << 22  # trained floats of the whole model (2 + rank x (1 + experts) per layer)
MAX_SEED = (1 << 63) - 1

Width = Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)]


class ModelSpec(BaseModel):
    """Shape and fixed constants of a GERMINATOR model (docs/layout.md). Integers are strict (``true`` is
    not 1) and every size is bounded (``MAX_*`` above)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["mlp", "lm"] = "mlp"
    # mlp: input_dim -> hidden... -> num_classes
    input_dim: Width | None = None
    hidden: tuple[Width, ...] = Field(default=(256, 256), max_length=MAX_DEPTH)
    num_classes: Annotated[int, Field(strict=True, ge=2, le=MAX_WIDTH)] | None = None
    # lm: byte/token language model
    vocab_size: Annotated[int, Field(strict=True, ge=2, le=MAX_WIDTH)] | None = None
    d_model: int = Field(default=128, strict=True, ge=2, le=MAX_WIDTH)
    d_ff: int = Field(default=256, strict=True, ge=2, le=MAX_WIDTH)
    n_blocks: int = Field(default=2, strict=True, ge=1, le=MAX_DEPTH)
    context: int = Field(default=64, strict=True, ge=2, le=MAX_CONTEXT)
    # every seeded layer
    rank: int = Field(default=16, strict=True, ge=1, le=MAX_RANK)
    # experts per modulo split (routing by token id % e_j); lm only
    splits: tuple[Annotated[int, Field(strict=True, ge=1, le=MAX_EXPERTS)], ...] = Field(
        default=(), max_length=MAX_SPLITS
    )
    seed_bits: SeedBits = 16
    int_dtype: Literal["int8", "uint8"] = "int8"
    mask_density: float = Field(default=0.5, strict=True, ge=0.0, le=1.0)
    sigma_s: float = Field(default=0.1, strict=True, ge=0.0, le=10.0)
    sigma_t: float = Field(default=0.1, strict=True, ge=0.0, le=10.0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    init_seed: int = Field(default=0, strict=True, ge=0, le=MAX_SEED)  # initial seeds are derived from it

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every seeded layer, in table order; layers whose sizes are still unknown (a
        dimension the data determines) are left out."""
        if self.kind == "mlp":
            dims = [self.input_dim, *self.hidden, self.num_classes]
            return [(a, b) for a, b in zip(dims[:-1], dims[1:]) if a is not None and b is not None]
        d, f, v = self.d_model, self.d_ff, self.vocab_size
        blocks = [(3 * d, f), (f, d)] * self.n_blocks
        return blocks if v is None else [(v, d), *blocks, (d, v)]

    def _check_sizes(self) -> None:
        """Raise ValueError naming the field when the model's implied size exceeds a bound."""
        shapes = self.layer_shapes()
        field = "hidden" if self.kind == "mlp" else "d_ff"
        value = list(self.hidden) if self.kind == "mlp" else self.d_ff
        for k, (a, b) in enumerate(shapes):
            if a * b > MAX_LAYER_WEIGHTS:
                raise ValueError(
                    f"{field}: layer {k} ({a} -> {b}) has {a * b} weights, above the bound "
                    f"{MAX_LAYER_WEIGHTS} per layer (value {value})"
                )
            if self.rank * (a + b) > MAX_LAYER_FACTORS:
                raise ValueError(
                    f"rank: layer {k} ({a} -> {b}) would have {self.rank * (a + b)} factor entries, above "
                    f"the bound {MAX_LAYER_FACTORS} per layer (value {self.rank})"
                )
        total = sum(a * b for a, b in shapes)
        if total > MAX_MODEL_WEIGHTS:
            raise ValueError(
                f"{field}: the model has {total} weights, above the bound {MAX_MODEL_WEIGHTS} (value {value})"
            )
        per_layer = 2 + self.rank * (1 + sum(self.splits))
        n_layers = len(self.hidden) + 1 if self.kind == "mlp" else 2 * self.n_blocks + 2
        if per_layer * n_layers > MAX_MODEL_FLOATS:
            raise ValueError(
                f"splits: {n_layers} layers of {per_layer} floats are above the bound {MAX_MODEL_FLOATS} "
                f"trained floats (rank {self.rank}, value {list(self.splits)})"
            )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: every width must be >= 1, got {list(self.hidden)}")
        if any(e < 1 for e in self.splits):
            raise ValueError(f"splits: every expert count must be >= 1, got {list(self.splits)}")
        if self.kind == "mlp" and self.splits:
            raise ValueError(
                f"splits: routing needs token ids (kind 'lm'), got {list(self.splits)} for 'mlp'"
            )
        if self.init_seed >= 1 << self.seed_bits:
            raise ValueError(f"init_seed: {self.init_seed} is outside [0, 2**{self.seed_bits})")
        self._check_sizes()
        return self

    def resolved(self, **data_dims: int | None) -> ModelSpec:
        """Fill dimensions left out (input_dim, num_classes, vocab_size) from the data.

        A dimension the spec already sets must agree with the data. Raises SpecError naming the field.
        """
        updates = {}
        for name, value in data_dims.items():
            if value is None:
                continue
            current = getattr(self, name)
            if current is None:
                updates[name] = int(value)
            elif current != value:
                raise SpecError(f"model.{name}: spec says {current} but the data has {value}")
        # validated again, so a size the data implies meets the same bounds as one the spec sets
        return load_model_spec({**self.model_dump(), **updates}) if updates else self

    def require_resolved(self) -> None:
        """Raise SpecError if a dimension needed to build the model is still unknown."""
        needed = ("input_dim", "num_classes") if self.kind == "mlp" else ("vocab_size",)
        for name in needed:
            if getattr(self, name) is None:
                raise SpecError(f"model.{name}: not set and not inferred from data (value None)")

    def with_seed_bits(self, seed_bits: int) -> ModelSpec:
        return load_model_spec({**self.model_dump(), "seed_bits": seed_bits})


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per error: ``field.path: message (value ...)``."""
    return format_errors(exc.errors(), prefix)


def format_errors(errors: Sequence[Any], prefix: str = "") -> str:
    """One line per pydantic error dict: ``field.path: message (value ...)``."""
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a model-level check: its message starts with the field and carries the value
            lines.append(f"{prefix}{msg}")
            continue
        shown = repr(err.get("input"))
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{prefix}{loc}: {msg} (value {shown})")
    return "\n".join(lines)


def load_model_spec(data: dict) -> ModelSpec:
    """Validate a dict into a ModelSpec; raise SpecError listing every bad field and value."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, "model.")) from None


# ---- the swap search (search.swap) ----


class SwapConfig(BaseModel):
    """How the swap search runs (``search.swap`` in a job spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["screen", "loss"] = "screen"  # screen by the gradient, or verify random draws only
    candidates: int = Field(default=1024, ge=1, le=1 << 16)  # screened per slot per call
    top_k: int = Field(default=4, ge=1, le=64)  # verified on the fitness loss per slot per call
    slot_choice: Literal["weakest", "round_robin"] = "weakest"
    slots_per_call: int = Field(default=1, ge=1, le=64)


# ---- the scale trainer (trainer) ----

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainerConfig(BaseModel):
    """How the scale trainer trains (``trainer`` in a job spec). Steps count attempts, skipped ones
    included."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    optimizer: Literal["adam", "adopt"] = "adam"
    lr: float = Field(default=0.01, gt=0.0, le=10.0)
    betas: tuple[Beta, Beta] | None = None  # None: train/optimizers.py DEFAULT_BETAS[optimizer]
    eps: float | None = Field(default=None, gt=0.0, le=1.0)  # None: train/optimizers.py DEFAULT_EPS
    adopt_clip: bool = True  # ADOPT's clipped variant, c_t = t ** 0.25
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    decoupled_weight_decay: bool = True
    steps_per_publish: int = Field(default=50, ge=1, le=1_000_000)
    total_steps: int | None = Field(default=None, ge=1)
    budget_s: float | None = Field(default=None, gt=0.0)  # wall clock from the first train() call
    # hybrid "seed first": the trainer waits this long before its first round, so the search alone picks
    # seeds (with refit floats) while every float is still near its start; budget_s counts after the wait
    start_delay_s: float = Field(default=0.0, ge=0.0, le=1e6)
    schedule: Literal["constant", "cosine", "linear_warmup_cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    grad_clip: float | None = Field(default=1.0, gt=0.0)  # max global gradient norm; None: no clipping
    batch_size: int = Field(default=256, ge=1, le=1 << 20)
    eval_batch_size: int = Field(default=4096, ge=1)  # chunk size of the no-grad fitness/validation passes
    val_limit: int | None = Field(default=None, ge=1)  # at most this many held-out rows (LM: windows)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info):
        if isinstance(v, bool) and info.field_name not in ("adopt_clip", "decoupled_weight_decay"):
            raise ValueError("expected a number, got a boolean")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.schedule != "constant" and self.total_steps is None and self.budget_s is None:
            raise ValueError(
                f"schedule: {self.schedule!r} needs total_steps or budget_s to anneal over "
                f"(value {self.schedule!r})"
            )
        if self.warmup_steps and self.schedule != "linear_warmup_cosine":
            raise ValueError(
                f"warmup_steps: only schedule 'linear_warmup_cosine' warms up, not {self.schedule!r} "
                f"(value {self.warmup_steps})"
            )
        if self.total_steps is not None and self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps: must be below total_steps = {self.total_steps} (value {self.warmup_steps})"
            )
        return self


def load_trainer_config(data: dict | TrainerConfig | None) -> TrainerConfig:
    """Validate a dict into a TrainerConfig. Raises SpecError, one line per bad field: ``trainer.lr: ...``."""
    if isinstance(data, TrainerConfig):
        return data
    if data is not None and not isinstance(data, dict):
        raise SpecError(f"trainer: expected a mapping, got {type(data).__name__} (value {data!r:.80})")
    try:
        return TrainerConfig.model_validate(data or {})
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, "trainer.")) from None


# ---- the job spec ----

JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# Bounds of a spec file (docs/security.md, "Sizes"): its bytes, and its YAML nodes once aliases are expanded
MAX_SPEC_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_LAYER_INDEX = 4095  # search.layers
MAX_WORKER_CPUS, MAX_WORKER_GPUS = 1024.0, 64.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DataSpec(_Frozen):
    """``digits`` (scikit-learn's bundled set), ``arrays`` (a user's .npz), ``text`` (text files)."""

    kind: Literal["digits", "arrays", "text"] = "digits"
    path: str | None = None  # arrays: the .npz file
    paths: tuple[str, ...] = ()  # text: files (default: the stdlib corpus)

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.kind == "arrays" and not self.path:
            raise ValueError("path: kind 'arrays' needs path (a .npz with X and y) (value None)")
        if self.kind != "arrays" and self.path:
            raise ValueError(f"path: only kind 'arrays' takes a path (value {self.path!r})")
        if self.kind != "text" and self.paths:
            raise ValueError(f"paths: only kind 'text' takes paths (value {list(self.paths)!r})")
        return self


class FitnessSpec(_Frozen):
    """The fixed batch on which the table's loss is defined (same for every evaluator and the trainer)."""

    batch_size: int = Field(default=1024, strict=True, ge=1, le=1_000_000)
    seed: int = Field(default=0, strict=True, ge=0, le=(1 << 63) - 1)
    # where the fitness batch comes from: the validation split carved from the training data (the default:
    # swaps verified on rows the trainer never fits generalize at least as well, docs/learning.md) or the
    # training split; never the test split
    split: Literal["train", "validation"] = "validation"


WHOLE_VECTOR_FIELDS = (
    "proposer", "population", "slots", "refit_steps", "refit_lr", "candidates_per_call", "call_seconds",
    "max_candidates_per_call", "options",
)  # fmt: skip


class SearchSpec(_Frozen):
    proposer: str = "evolutionary"
    population: int = Field(default=16, strict=True, ge=2, le=100_000)
    # candidates per worker call: a number (fixed), or "auto": each worker's calls are sized from its own
    # measured seconds per candidate to take about ``call_seconds`` (a fast GPU worker gets big calls, a
    # slow CPU one small calls; Ray's ~1 ms per call stays a few percent); a first call has 8
    candidates_per_call: int | Literal["auto"] = "auto"
    call_seconds: float = Field(default=0.05, gt=0, le=3600)
    max_candidates_per_call: int = Field(default=1024, strict=True, ge=1, le=10_000)
    in_flight_per_worker: int = Field(default=2, strict=True, ge=1, le=64)
    budget_evals: int | None = Field(default=2000, strict=True, ge=1, le=10**15)
    budget_seconds: float | None = Field(default=None, strict=True, gt=0, le=10**9)
    schedule: Literal["round_robin", "all"] = "round_robin"
    # round_robin: calls on a layer before moving on
    calls_per_layer: int = Field(default=4, strict=True, ge=1, le=10**9)
    # which layers to search (default all); checked against the model's layers when the spec is resolved
    layers: tuple[Annotated[int, Field(strict=True, ge=0, le=MAX_LAYER_INDEX)], ...] | None = Field(
        default=None, min_length=1
    )
    # which seed slots: indices into a layer's rank + 4 seeds (c0..c{r-1}, mask, scale, shift, bias;
    # docs/layout.md); default all. Checked against each searched layer's rank.
    slots: tuple[Annotated[int, Field(strict=True)], ...] | None = None
    refit_steps: int = Field(default=0, strict=True, ge=0, le=10_000)
    refit_lr: float = Field(default=0.02, gt=0, le=10)
    rng_seed: int = Field(default=0, strict=True, ge=0, le=(1 << 63) - 1)
    options: dict[str, Any] = Field(default_factory=dict)  # extra proposer fields
    # the swap search of component slots (the default; docs/learning.md); null: the whole-vector proposer
    # (``proposer``, ``slots``, ``refit_steps`` ...) searches instead
    swap: SwapConfig | None = Field(default_factory=SwapConfig)

    @field_validator("candidates_per_call", mode="before")
    @classmethod
    def _call_size(cls, v):
        ok = v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000)
        if not ok:
            raise ValueError("expected 'auto' or an integer in [1, 10000]")
        return v

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if self.budget_evals is None and self.budget_seconds is None:
            raise ValueError("budget_evals: set budget_evals and/or budget_seconds (value None)")
        if self.swap is not None:  # settings only the whole-vector proposers read: refuse, not ignore
            for name in WHOLE_VECTOR_FIELDS:  # a stored spec carries every field: compare with the default
                default = type(self).model_fields[name].get_default(call_default_factory=True)
                if name in self.model_fields_set and getattr(self, name) != default:
                    raise ValueError(
                        f"{name}: applies to the whole-vector proposers; set search.swap: null to use them "
                        f"(value {getattr(self, name)!r})"
                    )
        return self


class WorkersSpec(_Frozen):
    # a number, or "auto": as many as the cluster's nodes can place beside the trainer, within [min, max]
    # (resolved when the job's driver starts: distributed/capacity.py auto_workers)
    count: int | Literal["auto"] = 2
    cpus: float = Field(default=1.0, strict=True, ge=0, le=MAX_WORKER_CPUS)
    gpus: float = Field(default=0.0, strict=True, ge=0, le=MAX_WORKER_GPUS)
    min: int = Field(default=0, strict=True, ge=0, le=10_000)
    max: int = Field(default=64, strict=True, ge=1, le=10_000)

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, v):
        ok = v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000)
        if not ok:
            raise ValueError("expected 'auto' or an integer in [0, 10000]")
        return v

    @model_validator(mode="after")
    def _check(self) -> WorkersSpec:
        if self.min > self.max:
            raise ValueError(f"min: must be <= max = {self.max} (value {self.min})")
        if self.count != "auto" and not self.min <= self.count <= self.max:
            raise ValueError(f"count: must lie in [min, max] = [{self.min}, {self.max}] (value {self.count})")
        return self

    @property
    def initial_count(self) -> int:
        """The desired count written when the job is created (``auto``: ``min``, at least 1, until the
        job's driver resolves it on the cluster)."""
        return self.count if self.count != "auto" else min(max(self.min, 1), self.max)


class JobSpec(_Frozen):
    """A whole seed-search job."""

    job: str | None = None  # job id; generated when left out
    mode: Literal["search", "train", "hybrid"] = "hybrid"
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    fitness: FitnessSpec = Field(default_factory=FitnessSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if self.job is not None and not JOB_ID_RE.match(self.job):
            raise ValueError(f"job: must match {JOB_ID_RE.pattern} (value {self.job!r})")
        if self.data.kind == "text" and self.model.kind != "lm":
            raise ValueError(
                f"model.kind: data kind 'text' needs model kind 'lm' (value {self.model.kind!r})"
            )
        if self.data.kind != "text" and self.model.kind == "lm":
            raise ValueError(f"model.kind: 'lm' needs data kind 'text' (value {self.data.kind!r})")
        if self.mode == "train" and self.trainer.total_steps is None and self.trainer.budget_s is None:
            raise ValueError(
                "trainer.total_steps: mode 'train' needs trainer.total_steps or trainer.budget_s (value None)"
            )
        return self

    def with_id(self) -> JobSpec:
        """This spec with a job id (a fresh one when it has none)."""
        return self if self.job else self.model_copy(update={"job": f"job-{uuid.uuid4().hex[:10]}"})


def parse_job_spec(data: Any, source: str = "spec") -> JobSpec:
    """Validate a dict into a JobSpec; raise SpecError with one line per error (field path and value).

    The proposer's name and settings are the search's to check (``search/job_setup.check_job_spec``,
    which ``register_job`` and ``validate`` run)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        other = [e for e in exc.errors() if e["loc"][:1] != ("trainer",)]
        if not other:  # only the trainer section is wrong: its own messages, ``trainer.<field>: ...``
            load_trainer_config(data.get("trainer"))
        raise SpecError(format_errors(other or exc.errors())) from None
    return spec


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """Nodes of a composed YAML document with every alias expanded (a node reached twice counts twice),
    counted without expanding anything and stopping above ``limit``; an alias cycle counts as
    ``limit + 1``."""
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        else:
            kids = node.value if isinstance(node, yaml.SequenceNode) else []
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            if size[id(node)] > limit:
                return size[id(node)]
        elif id(node) not in size:
            if id(node) in open_:  # reached again from inside itself: an alias cycle
                return limit + 1
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids)
    return size[id(root)]


def read_yaml(path: str | Path, what: str = "spec"):
    """Parse a YAML file (safe loader: plain data only). Raises SpecError naming ``what``, the file and
    (for bad YAML) the line; also for a file above MAX_SPEC_BYTES, one that is not UTF-8 text, and a
    document of more than MAX_YAML_NODES nodes once its aliases are expanded (an alias bomb)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{what}: cannot read {str(path)!r} ({exc.strerror})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{what}: {str(path)!r} is larger than the bound of {MAX_SPEC_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{what}: {str(path)!r} is not UTF-8 text (byte {exc.start}; a binary file?)"
        ) from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise SpecError(
                f"{what}: {str(path)!r} expands to more than {MAX_YAML_NODES} YAML nodes "
                "(aliases expanded; an alias bomb?)"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{what}: {str(path)!r} is not valid YAML{where}") from None
    except RecursionError:
        raise SpecError(f"{what}: {str(path)!r} is nested too deeply") from None
    finally:
        loader.dispose()


def load_job_spec(path: str | Path) -> JobSpec:
    """Read and validate a job YAML file. Raises SpecError naming the file, field and value."""
    path = Path(path)
    data = read_yaml(path, "spec")
    spec = parse_job_spec(data, str(path))
    if spec.data.path and not Path(spec.data.path).is_absolute():  # relative to the spec file
        spec = spec.model_copy(
            update={
                "data": spec.data.model_copy(update={"path": str((path.parent / spec.data.path).resolve())})
            }
        )
    return spec


# END


# ---- sweeps (germinator-dist sweep) ----


class AshaSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_t: int = Field(default=30, ge=1)  # reports (one per report_every_s)
    grace_period: int = Field(default=3, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)


class SweepSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    base: str | dict
    name: str = "sweep"
    space: dict[str, dict[str, list]]
    num_samples: int = Field(default=4, ge=1, le=10_000)
    max_concurrent: int = Field(default=2, ge=1)
    report_every_s: float = Field(default=2.0, gt=0)
    asha: AshaSpec = Field(default_factory=AshaSpec)

"""The seed-search job spec: one YAML file, validated by frozen pydantic models (``extra="forbid"``).

Dimensions that the data determines (input width, classes, vocabulary) may be left out of ``model``;
:func:`resolve_job` fills them in from the data. Every error names its field path and value.
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
from germinator_dist.records import n_seeds, rank_of
from germinator_dist.spec import ModelSpec, format_validation_error
from germinator_dist.swap_proposer import SwapConfig

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
    # (resolved when the job's driver starts: ray_capacity.auto_workers)
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
    trainer: dict[str, Any] = Field(default_factory=dict)  # validated by trainer.load_trainer_config
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
        return self

    def with_id(self) -> JobSpec:
        """This spec with a job id (a fresh one when it has none)."""
        return self if self.job else self.model_copy(update={"job": f"job-{uuid.uuid4().hex[:10]}"})


def parse_job_spec(data: Any, source: str = "spec") -> JobSpec:
    """Validate a dict into a JobSpec; raise SpecError with one line per error (field path and value)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None
    if spec.trainer or spec.mode != "search":
        from germinator_dist.trainer import load_trainer_config

        tc = load_trainer_config(spec.trainer)  # raises SpecError naming trainer.<field>
        if spec.mode == "train" and tc.total_steps is None and tc.budget_s is None:
            raise SpecError(
                "trainer.total_steps: mode 'train' needs trainer.total_steps or trainer.budget_s (value None)"
            )
    if spec.mode != "train":
        from germinator_dist.proposers import make_proposer

        try:  # every layer has the model's rank: one check covers them
            make_proposer(spec.search.proposer, **_proposer_fields(spec, layer_seeds=None))
        except SpecError as exc:
            named = str(exc).startswith(("search.", "model."))
            raise SpecError(str(exc) if named else f"search.{exc}") from None
    return spec


# fields make_proposer takes from the spec itself: search.options may not set them
_SPEC_PROPOSER_FIELDS = ("seed_bits", "population", "rng_seed", "budget", "slots", "rank", "layer",
                         "incumbent_seeds", "incumbent_loss")  # fmt: skip


def _proposer_fields(
    spec: JobSpec, layer_seeds: Sequence[int] | int | None, layer: int | None = None
) -> dict:
    """Keyword arguments of ``proposers.make_proposer`` for one layer (all but the name and the loss).

    ``layer_seeds`` is the layer's incumbent (its length gives the rank), or its seed count, or None for
    a layer of the model's rank; without an incumbent a placeholder of distinct component seeds stands
    in (``0..rank-1``, then four zeros). ``search.slots`` is checked against the layer's ``rank + 4``
    seeds; ``layer`` names the layer in errors and in the proposer. Raises SpecError naming
    ``search.slots`` or ``search.options.<field>`` and the value.
    """
    from germinator_dist.proposers.base import check_rank, check_slots

    s = spec.search
    clash = [k for k in s.options if k in _SPEC_PROPOSER_FIELDS]
    if clash:
        raise SpecError(
            f"search.options.{clash[0]}: set by the spec (model.seed_bits, search.population, "
            f"search.rng_seed, search.budget_evals, search.slots, the layer), not by options "
            f"(value {s.options[clash[0]]!r})"
        )
    if layer_seeds is None or isinstance(layer_seeds, int):
        count = n_seeds(spec.model.rank) if layer_seeds is None else layer_seeds
        try:
            rank = rank_of(count)
        except ValueError as exc:
            raise SpecError(f"layer_seeds={count!r}: {exc}") from None
        check_rank(
            rank, spec.model.seed_bits, field="model.rank" if layer_seeds is None else "rank", layer=layer
        )
        incumbent = (*range(rank), 0, 0, 0, 0)
    else:
        incumbent = tuple(layer_seeds)
        try:
            rank = rank_of(len(incumbent))
        except ValueError as exc:
            where = f"layer {layer}" if layer is not None else "layer_seeds"
            raise SpecError(f"{where}: {exc}") from None
    fields: dict[str, Any] = dict(
        seed_bits=spec.model.seed_bits,
        population=s.population,
        rng_seed=s.rng_seed,
        budget=s.budget_evals or 100_000,
        **s.options,
    )
    if s.slots is not None:
        fields["slots"] = check_slots(s.slots, rank, field="search.slots", layer=layer)
    fields["incumbent_seeds"] = incumbent
    fields["rank"] = rank
    if layer is not None:
        fields["layer"] = layer
    return fields


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


def load_dataset(data: DataSpec):
    """Load the data a DataSpec names. Raises SpecError for missing or malformed files."""
    from germinator_dist import data as datasets

    if data.kind == "digits":
        return datasets.load_digits_dataset()
    if data.kind == "arrays":
        return datasets.load_arrays_dataset(data.path)
    return datasets.load_text_dataset(list(data.paths) or None)


def resolve_job(spec: JobSpec):
    """Load the data and fill in the model dimensions it determines. Returns (spec, dataset)."""
    dataset = load_dataset(spec.data)
    model = spec.model.resolved(**dataset.dims())
    model.require_resolved()
    n_layers = len(model.layer_shapes())
    layers = spec.search.layers or ()
    for k in layers:
        if k >= n_layers:
            raise SpecError(
                f"search.layers: the model has layers 0..{n_layers - 1}, there is no layer {k} "
                f"(value {list(layers)})"
            )
    if len(set(layers)) != len(layers):
        raise SpecError(f"search.layers: a layer is named twice (value {list(layers)})")
    return spec.model_copy(update={"model": model}), dataset

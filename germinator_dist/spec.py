"""The model spec: a frozen pydantic model (``extra="forbid"``) that fixes a GERMINATOR network's shape.

Dimensions that data determines (``input_dim``, ``num_classes``, ``vocab_size``) may be left out and filled
in later with :meth:`ModelSpec.resolved`; a model can only be built from a resolved spec.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from germinator_dist.errors import SpecError

SeedBits = Literal[8, 16, 32, 63]

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
    lines = []
    for err in exc.errors():
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

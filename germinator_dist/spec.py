"""The model spec: a frozen pydantic model (``extra="forbid"``) that fixes a GERMINATOR network's shape.

Dimensions that data determines (``input_dim``, ``num_classes``, ``vocab_size``) may be left out and filled
in later with :meth:`ModelSpec.resolved`; a model can only be built from a resolved spec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from germinator_dist.errors import SpecError

SeedBits = Literal[8, 16, 32, 63]


class ModelSpec(BaseModel):
    """Shape and fixed constants of a GERMINATOR model (docs/layout.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mlp", "lm"] = "mlp"
    # mlp: input_dim -> hidden... -> num_classes
    input_dim: int | None = Field(default=None, ge=1)
    hidden: tuple[int, ...] = (256, 256)
    num_classes: int | None = Field(default=None, ge=2)
    # lm: byte/token language model
    vocab_size: int | None = Field(default=None, ge=2)
    d_model: int = Field(default=128, ge=2)
    d_ff: int = Field(default=256, ge=2)
    n_blocks: int = Field(default=2, ge=1)
    context: int = Field(default=64, ge=2)
    # every seeded layer
    rank: int = Field(default=16, ge=1, le=4096)
    splits: tuple[int, ...] = ()  # experts per modulo split (routing by token id % e_j); lm only
    seed_bits: SeedBits = 16
    int_dtype: Literal["int8", "uint8"] = "int8"
    mask_density: float = Field(default=0.5, ge=0.0, le=1.0)
    sigma_s: float = Field(default=0.1, ge=0.0, le=10.0)
    sigma_t: float = Field(default=0.1, ge=0.0, le=10.0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    init_seed: int = Field(default=0, ge=0)  # initial seeds are derived from it

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
        return self.model_copy(update=updates) if updates else self

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

"""Build proposers by name, or rebuild them from a saved ``state_dict``.

Names: ``evolutionary``, ``exhaustive``, ``random``, ``auto`` (exhaustive when one sweep,
``len(slots) * 2**seed_bits`` evaluations, fits the budget, else evolutionary; ``slots`` default to all
``rank + 4`` of the layer's seeds), ``nevergrad`` (with
``optimizer=`` in ``kw``), ``ng:<Name>``, or any bare ``ng.optimizers.registry`` name such as
``DiscreteOnePlusOne``, ``PortfolioDiscreteOnePlusOne``, ``NGOpt`` or ``TwoPointsDE``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from germinator_dist.errors import SpecError
from germinator_dist.records import n_seeds, rank_of
from germinator_dist.search.proposers.base import BaseProposer, ProposerConfig, build_config
from germinator_dist.search.proposers.evolutionary import EvolutionaryProposer
from germinator_dist.search.proposers.exhaustive import ExhaustiveProposer
from germinator_dist.search.proposers.nevergrad_adapter import NevergradProposer, nevergrad_registry
from germinator_dist.search.proposers.random_search import RandomSearchProposer
from germinator_dist.search.proposers.vectors import check_rank, check_slots, check_state_format

if TYPE_CHECKING:
    from germinator_dist.config import JobSpec

PROPOSER_CLASSES: dict[str, type[BaseProposer]] = {
    cls.kind: cls
    for cls in (EvolutionaryProposer, ExhaustiveProposer, RandomSearchProposer, NevergradProposer)
}
BUILTIN_NAMES: tuple[str, ...] = ("evolutionary", "exhaustive", "random", "auto")


def resolve_name(name: str, seed_bits: Any, slots: Sequence[int], budget: Any) -> tuple[str, str | None]:
    """(kind, nevergrad optimizer or None) for a proposer name; raises SpecError on unknown names."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"proposer={name!r}: expected a proposer name")
    if name == "auto":
        try:
            fits = len(slots) * (1 << int(seed_bits)) <= int(budget)
        except (TypeError, ValueError):
            fits = False  # the config validation below names the bad field
        return ("exhaustive" if fits else "evolutionary"), None
    if name in PROPOSER_CLASSES and name != "nevergrad":
        return name, None
    if name == "nevergrad":
        return "nevergrad", None
    optimizer = name.removeprefix("ng:")
    if optimizer in nevergrad_registry():
        return "nevergrad", optimizer
    raise SpecError(
        f"proposer={name!r}: unknown; expected one of {list(BUILTIN_NAMES)}, 'nevergrad', "
        "or a nevergrad optimizer name (ng.optimizers.registry, e.g. 'DiscreteOnePlusOne', 'NGOpt')"
    )


def _configure(
    name: str,
    *,
    seed_bits: int,
    slots: Sequence[int] | None = None,
    budget: int,
    population: int = 8,
    rng_seed: int = 0,
    incumbent_seeds: Sequence[int],
    rank: int | None = None,
    **kw: Any,
) -> tuple[type[BaseProposer], ProposerConfig]:
    """The proposer class a name stands for and its validated config (see ``make_proposer``)."""
    if slots is None:
        try:
            count = n_seeds(int(rank)) if rank is not None else len(incumbent_seeds)
        except (TypeError, ValueError):
            count = 1  # the config or the incumbent check below names the bad value
        slot_list: Any = range(count)
    else:
        slot_list = slots
    try:
        n_slots = len(slot_list)
    except TypeError:
        n_slots = 1  # check_slots names it
    kind, optimizer = resolve_name(name, seed_bits, range(n_slots), budget)
    cls = PROPOSER_CLASSES[kind]
    fields: dict[str, Any] = {"seed_bits": seed_bits, "budget": budget, "rng_seed": rng_seed}
    if rank is not None:
        fields["rank"] = rank
    if slots is not None:
        fields["slots"] = (
            tuple(slots) if isinstance(slots, Sequence) and not isinstance(slots, str) else slots
        )
    if kind == "evolutionary":
        fields["population"] = population
    elif kind == "nevergrad":
        fields["num_workers"] = population
        if optimizer is not None:
            if "optimizer" in kw and kw["optimizer"] != optimizer:
                raise SpecError(f"optimizer={kw['optimizer']!r}: conflicts with proposer name {name!r}")
            fields["optimizer"] = optimizer
    fields.update(kw)
    return cls, build_config(cls.config_class, f"proposer {name!r}", fields)


def make_proposer(name: str, *, incumbent_seeds: Sequence[int], incumbent_loss: float = math.inf,
                  layer: int | None = None, **kw: Any) -> BaseProposer:  # fmt: skip
    """A fresh proposer around the table's incumbent (one layer's ``rank + 4`` seeds).

    The layer's rank is the incumbent's length minus 4, or ``rank`` when given (the incumbent must then
    have ``rank + 4`` seeds). ``slots`` are indices into that vector (default all); ``layer`` only names
    the layer in errors. ``population`` is the evolutionary population size and nevergrad's
    ``num_workers`` (ignored by random and exhaustive); the other keywords are the chosen proposer's own
    settings (see its config class). Raises SpecError naming the field and value on an unknown name, an
    unknown or invalid setting, a slot outside ``[0, rank + 4)``, or an incumbent that is not ``rank + 4``
    distinct component seeds and layer seeds in ``[0, 2**seed_bits)``.
    """
    cls, config = _configure(name, incumbent_seeds=incumbent_seeds, **kw)
    return cls(config, incumbent_seeds, incumbent_loss, layer=layer)


def check_proposer(name: str, *, incumbent_seeds: Sequence[int], layer: int | None = None, **kw: Any) -> None:
    """Everything ``make_proposer`` checks, with the same errors, without building the proposer."""
    cls, config = _configure(name, incumbent_seeds=incumbent_seeds, **kw)
    cls.check(config, incumbent_seeds, layer=layer)


def proposer_from_state(state: dict[str, Any], *, layer: int | None = None) -> BaseProposer:
    """Rebuild a proposer, settings (rank and slots included) from its ``state_dict()``; raises SpecError
    if malformed. ``layer`` only names the layer in errors."""
    if not isinstance(state, dict) or state.get("kind") not in PROPOSER_CLASSES:
        kind = state.get("kind") if isinstance(state, dict) else state
        raise SpecError(f"state.kind={kind!r}: expected one of {sorted(PROPOSER_CLASSES)}")
    check_state_format(state)
    cls = PROPOSER_CLASSES[state["kind"]]
    config = build_config(cls.config_class, "state.config", dict(state.get("config") or {}))
    inc = state.get("incumbent") if isinstance(state.get("incumbent"), dict) else {}
    loss = inc.get("loss")
    try:
        proposer = cls(config, inc.get("seeds", ()), math.inf if loss is None else loss, layer=layer)
    except SpecError as exc:
        raise SpecError(f"state: {exc}") from None
    proposer.load_state_dict(state)
    return proposer


# fields make_proposer takes from the spec itself: search.options may not set them
SPEC_PROPOSER_FIELDS = ("seed_bits", "population", "rng_seed", "budget", "slots", "rank", "layer",
                         "incumbent_seeds", "incumbent_loss")  # fmt: skip


def proposer_fields(spec: JobSpec, layer_seeds: Sequence[int] | int | None, layer: int | None = None) -> dict:
    """Keyword arguments of ``proposers.make_proposer`` for one layer (all but the name and the loss).

    ``layer_seeds`` is the layer's incumbent (its length gives the rank), or its seed count, or None for
    a layer of the model's rank; without an incumbent a placeholder of distinct component seeds stands
    in (``0..rank-1``, then four zeros). ``search.slots`` is checked against the layer's ``rank + 4``
    seeds; ``layer`` names the layer in errors and in the proposer. Raises SpecError naming
    ``search.slots`` or ``search.options.<field>`` and the value.
    """
    s = spec.search
    clash = [k for k in s.options if k in SPEC_PROPOSER_FIELDS]
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

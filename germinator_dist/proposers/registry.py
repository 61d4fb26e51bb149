"""Build proposers by name, or rebuild them from a saved ``state_dict``.

Names: ``evolutionary``, ``exhaustive``, ``random``, ``auto`` (exhaustive when one sweep,
``len(slots) * 2**seed_bits`` evaluations, fits the budget, else evolutionary), ``nevergrad`` (with
``optimizer=`` in ``kw``), ``ng:<Name>``, or any bare ``ng.optimizers.registry`` name such as
``DiscreteOnePlusOne``, ``PortfolioDiscreteOnePlusOne``, ``NGOpt`` or ``TwoPointsDE``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from germinator_dist.errors import SpecError
from germinator_dist.proposers.base import BaseProposer, build_config
from germinator_dist.proposers.evolutionary import EvolutionaryProposer
from germinator_dist.proposers.exhaustive import ExhaustiveProposer
from germinator_dist.proposers.nevergrad_adapter import NevergradProposer, nevergrad_registry
from germinator_dist.proposers.random_search import RandomSearchProposer
from germinator_dist.records import N_SEEDS

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


def make_proposer(
    name: str,
    *,
    seed_bits: int,
    slots: Sequence[int] | None = None,
    budget: int,
    population: int = 8,
    rng_seed: int = 0,
    incumbent_seeds: Sequence[int],
    incumbent_loss: float = math.inf,
    **kw: Any,
) -> BaseProposer:
    """A fresh proposer around the table's incumbent.

    ``slots`` defaults to all of SEED_NAMES; ``population`` is the evolutionary population size and
    nevergrad's ``num_workers`` (ignored by random and exhaustive); ``kw`` are the chosen proposer's own
    settings (see its config class). Raises SpecError naming the field and value on an unknown name, an
    unknown or invalid setting, or an incumbent outside ``[0, 2**seed_bits)``.
    """
    slot_list = tuple(range(N_SEEDS)) if slots is None else slots
    kind, optimizer = resolve_name(name, seed_bits, slot_list, budget)
    cls = PROPOSER_CLASSES[kind]
    fields: dict[str, Any] = {"seed_bits": seed_bits, "budget": budget, "rng_seed": rng_seed}
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
    config = build_config(cls.config_class, f"proposer {name!r}", fields)
    return cls(config, incumbent_seeds, incumbent_loss)


def proposer_from_state(state: dict[str, Any]) -> BaseProposer:
    """Rebuild a proposer, settings included, from its ``state_dict()``; raises SpecError if malformed."""
    if not isinstance(state, dict) or state.get("kind") not in PROPOSER_CLASSES:
        kind = state.get("kind") if isinstance(state, dict) else state
        raise SpecError(f"state.kind={kind!r}: expected one of {sorted(PROPOSER_CLASSES)}")
    cls = PROPOSER_CLASSES[state["kind"]]
    config = build_config(cls.config_class, "state.config", dict(state.get("config") or {}))
    inc = state.get("incumbent") or {}
    proposer = cls(config, inc.get("seeds", ()), math.inf if inc.get("loss") is None else inc["loss"])
    proposer.load_state_dict(state)
    return proposer

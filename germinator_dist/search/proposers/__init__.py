"""Seed proposers: ask/tell search over one layer's seed vector (pure core: no ray, no redis).

Start with ``make_proposer(name, ...)`` (a fresh search around the table's incumbent) or
``proposer_from_state(state)`` (resume from a ``state_dict()``); see ``base`` for the protocol.
"""

from germinator_dist.search.proposers.base import BaseProposer, Proposer, ProposerConfig
from germinator_dist.search.proposers.evolutionary import EvolutionaryConfig, EvolutionaryProposer
from germinator_dist.search.proposers.exhaustive import ExhaustiveConfig, ExhaustiveProposer
from germinator_dist.search.proposers.nevergrad_adapter import NevergradConfig, NevergradProposer
from germinator_dist.search.proposers.random_search import RandomSearchConfig, RandomSearchProposer
from germinator_dist.search.proposers.registry import (
    BUILTIN_NAMES,
    PROPOSER_CLASSES,
    check_proposer,
    make_proposer,
    proposer_fields,
    proposer_from_state,
    resolve_name,
)

__all__ = [
    "BUILTIN_NAMES",
    "PROPOSER_CLASSES",
    "BaseProposer",
    "EvolutionaryConfig",
    "EvolutionaryProposer",
    "ExhaustiveConfig",
    "ExhaustiveProposer",
    "NevergradConfig",
    "NevergradProposer",
    "Proposer",
    "ProposerConfig",
    "RandomSearchConfig",
    "RandomSearchProposer",
    "check_proposer",
    "make_proposer",
    "proposer_fields",
    "proposer_from_state",
    "resolve_name",
]

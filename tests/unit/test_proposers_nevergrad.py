"""The nevergrad adapter: named optimizers, seed widths, ranks, Python ints, history replay on resume.

A layer of rank r holds r + 4 seeds (components c0..c{r-1}, then mask, scale, shift, bias); no
candidate may repeat a component seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from germinator_dist.errors import SpecError
from germinator_dist.records import duplicate_component
from germinator_dist.search.proposers import NevergradProposer, make_proposer, proposer_from_state
from germinator_dist.search.proposers.nevergrad_adapter import LOSS_CAP, limb_bits_for
from germinator_dist.search.proposers.toy_objectives import SeparableHashLandscape

NAMED = ("DiscreteOnePlusOne", "PortfolioDiscreteOnePlusOne", "NGOpt", "TwoPointsDE")


def incumbent(rank: int, seed_bits: int = 8) -> tuple[int, ...]:
    """Distinct component seeds, then mask, scale, shift, bias (two layer seeds equal: allowed)."""
    return (*((11 * k + 5) % (1 << seed_bits) for k in range(rank)), 201, 202, 203, 203)


INCUMBENT = incumbent(4)  # rank 4: 8 seeds


def drive(p, objective, budget: int, batch: int = 8) -> None:
    done = 0
    while done < budget:
        cands = p.ask(min(batch, budget - done))
        for c in reversed(cands):
            assert p.tell(c, objective(c.seeds))
        done += len(cands)


def build(name: str, seed_bits: int = 8, slots=None, budget: int = 200, **kw):
    loss = kw.pop("incumbent_loss", 10.0)
    return make_proposer(
        name,
        seed_bits=seed_bits,
        slots=slots,
        budget=budget,
        rng_seed=kw.pop("rng_seed", 0),
        incumbent_seeds=kw.pop("incumbent_seeds", INCUMBENT),
        incumbent_loss=loss,
        **kw,
    )


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize(("seed_bits", "rank"), [(8, 1), (8, 4), (32, 32), (63, 4)])
def test_named_optimizers_respect_bits_rank_and_slots_with_python_ints(name, seed_bits, rank):
    inc = incumbent(rank, seed_bits)
    slots = tuple(sorted({0, rank - 1, rank, rank + 3}))  # components and layer seeds
    p = build(name, seed_bits=seed_bits, slots=slots, budget=120, incumbent_seeds=inc)
    assert isinstance(p, NevergradProposer) and p.config.optimizer == name
    assert (p.rank, p.slots) == (rank, slots)
    seen = set()
    for _ in range(6):
        cands = p.ask(10)
        assert len(cands) == 10
        for c in cands:
            assert len(c.seeds) == rank + 4
            assert all(type(s) is int and 0 <= s < (1 << seed_bits) for s in c.seeds)  # not numpy int64
            assert all(c.seeds[i] == inc[i] for i in range(rank + 4) if i not in slots)
            assert duplicate_component(c.seeds) is None
            seen.update(c.seeds[i] for i in slots)
        for c in cands[::-1]:
            p.tell(c, float(sum(c.seeds) % 101))
    assert len(seen) > 10  # it does move


@pytest.mark.parametrize("name", NAMED)
def test_asks_that_repeat_a_component_seed_are_skipped(name):
    """8-bit seeds, rank 32: a searched component lands on a held seed about once in eight moves."""
    rank = 32
    inc = incumbent(rank)
    slots = (*range(0, rank, 2), rank + 1)
    f = SeparableHashLandscape(salt=9)
    p = build(name, slots=slots, budget=600, incumbent_seeds=inc, incumbent_loss=f(inc))
    for _ in range(20):
        cands = p.ask(16)
        assert len(cands) == 16
        for c in cands:
            assert duplicate_component(c.seeds) is None, c.seeds
        p.tell_many((c, f(c.seeds)) for c in cands)
    assert p.infeasible > 0  # nevergrad did propose repeats, and was told they are infeasible
    assert p.optimizer.num_tell >= 320 + p.infeasible


def test_when_nevergrad_keeps_proposing_held_seeds_the_adapter_redraws_them():
    """Rank 256 of 8-bit seeds: every seed is held, so any move of a component is a repeat."""
    inc = (*range(255, -1, -1), 0, 0, 0, 0)
    p = build("DiscreteOnePlusOne", slots=(3, 7, 256), budget=200, incumbent_seeds=inc)
    cands = p.ask(12)
    assert len(cands) == 12
    for c in cands:
        assert sorted(c.seeds[:256]) == list(range(256))
    assert p.infeasible > 0
    for c in cands:
        assert p.tell(c, 1.0)  # redrawn ones are fed to nevergrad like points it did not ask


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("seed_bits", [8, 32])
def test_named_optimizers_improve_a_toy_objective(name, seed_bits):
    f = SeparableHashLandscape(salt=4)
    start = f(INCUMBENT)
    p = build(name, seed_bits=seed_bits, budget=300, incumbent_loss=start)
    drive(p, f, 300)
    assert p.best()[1] < start - 0.5
    assert p.best()[1] == pytest.approx(f(p.best()[0]))


@pytest.mark.parametrize("seed_bits", [8, 16, 32, 63])
def test_limb_encoding_round_trips_the_extremes(seed_bits):
    p = build("DiscreteOnePlusOne", seed_bits=seed_bits, slots=(1, 2, 6, 7))
    top = (1 << seed_bits) - 1
    values = (0, top, top // 3, 1)
    coords = p.encode(values)
    assert coords.shape == (4 * len(limb_bits_for(seed_bits)),)
    assert p.decode(coords) == values
    assert all(type(v) is int for v in p.decode(coords))
    # out-of-range coordinates (nevergrad rounding at a bound) are clipped, not wrapped
    assert p.decode(np.full(coords.shape, 1e12)) == (top,) * 4
    assert p.decode(np.full(coords.shape, -3.0)) == (0,) * 4


def test_63bit_seeds_reach_the_high_bits():
    p = build("TwoPointsDE", seed_bits=63, slots=(0,), budget=50)
    highs = [c.seeds[0] >> 32 for c in p.ask(40)]
    assert max(highs) > 1 << 20  # the top limb is searched, not just the low 32 bits


@pytest.mark.parametrize("rank", [1, 4, 32])
def test_state_records_history_and_replays_into_a_fresh_optimizer(rank):
    f = SeparableHashLandscape(salt=7)
    inc = incumbent(rank)
    p = build("DiscreteOnePlusOne", budget=400, max_history=50, incumbent_seeds=inc, incumbent_loss=f(inc))
    drive(p, f, 120)
    in_flight = p.ask(4)
    state = json.loads(json.dumps(p.state_dict(), allow_nan=False))
    assert (state["rank"], state["n_seeds"]) == (rank, rank + 4)
    assert len(state["history"]) <= 51  # bounded: the last max_history results plus the best
    assert [v for v, _ in state["history"]].count(list(p.searched_values(p.best()[0]))) >= 1
    q = proposer_from_state(state)
    assert isinstance(q, NevergradProposer) and q.best() == p.best()
    assert q.optimizer.num_tell >= len(state["history"])  # the history was replayed into nevergrad
    for c in in_flight:  # asked before the save, told after the resume
        assert q.tell(c, f(c.seeds))
    drive(q, f, 100)
    assert q.best()[1] <= p.best()[1]


def test_states_of_another_rank_or_with_a_repeated_component_are_refused():
    p = build("DiscreteOnePlusOne", slots=(0, 1, 4), budget=200)
    drive(p, SeparableHashLandscape(salt=2), 40)
    state = json.loads(json.dumps(p.state_dict()))
    big = build("DiscreteOnePlusOne", slots=(0, 1, 4), incumbent_seeds=incumbent(32))
    with pytest.raises(
        SpecError, match=r"^state\.rank=4: saved for 8 seeds, but this proposer's layer has rank 32"
    ):
        big.load_state_dict(state)
    bad = json.loads(json.dumps(state))
    bad["history"][0][0][1] = bad["history"][0][0][0]  # slots 0 and 1 are components c0 and c1
    before = p.state_dict()
    with pytest.raises(SpecError, match=r"state\.history\[1\]=\d+: component c1 repeats the seed of c0"):
        p.load_state_dict(bad)
    assert p.state_dict() == before


def test_infinite_and_nan_losses_are_capped_quietly(recwarn):
    p = build("NGOpt", incumbent_loss=float("inf"))
    for c in p.ask(4):
        p.tell(c, float("inf"))
    p.tell(p.ask(1)[0], float("nan"))
    p.tell(p.ask(1)[0], 1e300)
    assert not [w for w in recwarn if "Clipping" in str(w.message)]
    assert p.best()[1] == 1e300 and LOSS_CAP < 1e300


def test_set_incumbent_feeds_or_rebuilds():
    p = build("DiscreteOnePlusOne", slots=(0, 1))
    before = p.optimizer.num_tell
    moved = list(INCUMBENT)
    moved[0] = 200
    p.set_incumbent(moved, 1.0)  # searched slot moved: told to the same optimizer
    assert p.optimizer.num_tell == before + 1
    moved[7] = 1  # bias, unsearched
    old = p.ask(2)
    p.set_incumbent(moved, 2.0)  # unsearched slot moved: fresh optimizer, old asks ignored
    assert not p.tell(old[0], 0.0)
    assert all(c.seeds[2:] == tuple(moved[2:]) for c in p.ask(10))


def test_any_registry_name_and_errors():
    assert build("ng:RandomSearch").config.optimizer == "RandomSearch"
    assert build("nevergrad", optimizer="TwoPointsDE").config.optimizer == "TwoPointsDE"
    with pytest.raises(SpecError, match="NotAnOptimizer"):
        build("ng:NotAnOptimizer")
    with pytest.raises(SpecError, match="optimizer='NGOpt'"):
        build("TwoPointsDE", optimizer="NGOpt")
    with pytest.raises(SpecError, match="max_history=0"):
        build("NGOpt", max_history=0)

"""Built-in proposers (evolutionary, exhaustive, random), the shared protocol, and the factory.

A layer of rank r holds r + 4 seeds: components c0..c{r-1}, then mask, scale, shift, bias
(docs/layout.md); no component seed may repeat, the layer seeds may.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from germinator_dist.errors import SpecError
from germinator_dist.records import Candidate, duplicate_component, n_seeds
from germinator_dist.search.proposers import (
    EvolutionaryProposer,
    ExhaustiveProposer,
    Proposer,
    make_proposer,
    proposer_from_state,
)
from germinator_dist.search.proposers.toy_objectives import HammingToTarget, SeparableHashLandscape

BUILTINS = ("evolutionary", "exhaustive", "random")
RANKS = (1, 4, 32)


def incumbent(rank: int, seed_bits: int = 8) -> tuple[int, ...]:
    """Distinct component seeds, then mask, scale, shift, bias (two layer seeds equal: allowed)."""
    space = 1 << seed_bits
    return (*((11 * k + 5) % space for k in range(rank)), 201, 202, 203, 203)


INCUMBENT = incumbent(4)  # rank 4: 8 seeds


def spanning_slots(rank: int) -> tuple[int, ...]:
    """Slots over both kinds: the first and last component, mask and bias."""
    return tuple(sorted({0, rank - 1, rank, rank + 3}))


def drive(p, objective, budget: int, batch: int = 8) -> int:
    """Ask in batches, tell each batch in reverse order; returns evaluations made."""
    done = 0
    while done < budget:
        cands = p.ask(min(batch, budget - done))
        if not cands:
            break
        for c in reversed(cands):
            assert p.tell(c, objective(c.seeds))
        done += len(cands)
    return done


def build(name: str, seed_bits: int = 8, slots=None, budget: int = 400, rng_seed: int = 0, **kw):
    inc = kw.pop("incumbent_seeds", INCUMBENT)
    loss = kw.pop("incumbent_loss", 10.0)
    return make_proposer(
        name,
        seed_bits=seed_bits,
        slots=slots,
        budget=budget,
        rng_seed=rng_seed,
        incumbent_seeds=inc,
        incumbent_loss=loss,
        **kw,
    )


# ------------------------------------------------------------------------------------------ the layout


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize(
    ("name", "seed_bits"),
    [(n, b) for n in BUILTINS for b in (8, 16, 32, 63) if n != "exhaustive" or b <= 16],
)
def test_respects_rank_seed_bits_and_slots_and_returns_python_ints(name, seed_bits, rank):
    inc = incumbent(rank, seed_bits)
    slots = spanning_slots(rank)
    p = build(
        name, seed_bits=seed_bits, slots=slots, budget=3 * (1 << min(seed_bits, 16)), incumbent_seeds=inc
    )
    assert isinstance(p, Proposer)
    assert (p.rank, p.n_seeds, p.slots) == (rank, rank + 4, slots)
    assert p.config.rank == rank and p.config.slots == slots  # resolved into the saved config
    tags = set()
    moved = set()
    for _ in range(5):
        cands = p.ask(40)
        assert len(cands) == 40
        for c in cands:
            assert isinstance(c, Candidate) and len(c.seeds) == rank + 4
            assert all(type(s) is int and 0 <= s < (1 << seed_bits) for s in c.seeds)
            assert all(c.seeds[i] == inc[i] for i in range(rank + 4) if i not in slots)
            assert duplicate_component(c.seeds) is None
            assert c.seeds != inc or name == "exhaustive"
            moved.update(i for i in slots if c.seeds[i] != inc[i])
            tags.add(c.tag)
            p.tell(c, float(sum(c.seeds) % 97))
    assert len(tags) == 200
    if name != "exhaustive":  # exhaustive walks one slot at a time
        assert moved == set(slots)  # component and layer slots both move


def test_default_slots_are_all_rank_plus_4_and_rank_may_be_passed_explicitly():
    for rank in RANKS:
        p = build("random", incumbent_seeds=incumbent(rank))
        assert p.slots == tuple(range(n_seeds(rank))) and p.unsearched == ()
        q = build("random", incumbent_seeds=incumbent(rank), rank=rank)
        assert q.rank == rank and q.ask(3) == p.ask(3)
    with pytest.raises(SpecError, match=r"incumbent_seeds: expected 36 seeds for rank 32 .*got 8"):
        build("random", rank=32)  # INCUMBENT is a rank-4 vector


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("random", {}),
        ("exhaustive", {}),
        ("evolutionary", {"crossover_rate": 0.0, "redraw_max": 16}),
        ("evolutionary", {"crossover_rate": 1.0, "redraw_max": 16}),  # crossover can pair equal seeds
    ],
)
def test_duplicate_components_are_never_proposed(name, kw):
    """8-bit seeds and rank 32: an eighth of the seed space is held, so fresh draws collide often."""
    rank = 32
    inc = incumbent(rank)
    slots = (*range(0, rank, 2), rank, rank + 2)  # half the components (the rest stay fixed) and 2 layer
    p = build(name, slots=slots, budget=4000, incumbent_seeds=inc, **kw)
    f = SeparableHashLandscape(salt=3)
    n = 0
    for _ in range(30):
        cands = p.ask(64)
        for c in cands:
            assert duplicate_component(c.seeds) is None, c.seeds
            comps = set(c.seeds[:rank])
            assert all(inc[k] in comps for k in range(1, rank, 2))  # unsearched components kept
        p.tell_many((c, f(c.seeds)) for c in cands)
        n += len(cands)
    assert n > 1000
    assert duplicate_component(p.best()[0]) is None


def test_a_full_seed_space_of_components_still_yields_distinct_candidates():
    """Rank 256 of 8-bit seeds: the components are a permutation of 0..255 in every candidate."""
    inc = (*range(255, -1, -1), 0, 0, 0, 0)
    p = build("random", incumbent_seeds=inc, budget=10)
    for c in p.ask(5):
        assert sorted(c.seeds[:256]) == list(range(256))
    e = build("evolutionary", incumbent_seeds=inc, slots=(3, 7, 256), budget=50)
    for c in e.ask(20):
        assert sorted(c.seeds[:256]) == list(range(256))
    x = build("exhaustive", incumbent_seeds=inc, slots=(5,), budget=300)
    assert x.ask(10) == [] and x.exhausted  # every other value of slot 5 is held by another component
    with pytest.raises(SpecError, match="rank=257: 257 components need distinct seeds but seed_bits=8"):
        build("random", incumbent_seeds=(*range(256), 0, 0, 0, 0, 0), rank=257)


@pytest.mark.parametrize(
    ("seeds", "needle"),
    [
        ((5, 6, 5, 9, 1, 1, 1, 1), r"incumbent_seeds\[2\]=5: component c2 repeats the seed of c0"),
        ((1, 2, 3), "3 seeds is no layer's vector"),
        ((1, 2, 3, 4), "4 seeds is no layer's vector"),
        ((256, 0, 1, 2, 0, 0, 0, 0), r"incumbent_seeds\[0\]=256: outside \[0, 2\*\*8\) \(c0\)"),
        ((0, 1, 2, 3, 0, 0, 0, 999), r"incumbent_seeds\[7\]=999: outside .* \(bias\)"),
        ((-1, 0, 1, 2, 0, 0, 0, 0), r"incumbent_seeds\[0\]=-1"),
        ((0.5, 1, 2, 3, 0, 0, 0, 0), r"incumbent_seeds\[0\]=0.5: not an integer \(c0\)"),
    ],
)
def test_bad_incumbents_are_refused_naming_slot_and_value(seeds, needle):
    with pytest.raises(SpecError, match=needle):
        build("evolutionary", incumbent_seeds=seeds)


def test_layer_seeds_may_repeat_and_numpy_ints_become_python_ints():
    p = build("random", incumbent_seeds=np.array([3, 4, 7, 7, 7, 7], dtype=np.int64))  # rank 2
    assert p.incumbent[0] == (3, 4, 7, 7, 7, 7) and all(type(s) is int for s in p.incumbent[0])


@pytest.mark.parametrize(
    ("rank", "slots", "needle"),
    [
        (32, (0, 40), r"^slots: slot 40 is outside \[0, 36\) for layer 2 \(rank 32\)$"),
        (1, (5,), r"^slots: slot 5 is outside \[0, 5\) for layer 2 \(rank 1\)$"),
        (4, (3, 3), r"^slots: slot 3 is named twice \(value \[3, 3\]\)$"),
        (4, (), r"^slots=\[\]: name at least one slot in \[0, 8\) for layer 2 \(rank 4\)$"),
        (4, (-1,), r"^slots: slot -1 is outside"),
    ],
)
def test_slots_are_checked_against_the_layer_seed_count(rank, slots, needle):
    with pytest.raises(SpecError, match=needle):
        build("evolutionary", incumbent_seeds=incumbent(rank), slots=slots, layer=2)


# ------------------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize("name", BUILTINS)
def test_out_of_order_lost_and_duplicate_tells(name):
    p = build(name)
    cands = p.ask(20)
    order = np.random.default_rng(3).permutation(20)
    lost = {int(i) for i in order[:5]}
    for i in order:
        if int(i) in lost:
            continue
        assert p.tell(cands[i] if i % 2 else cands[i].tag, 1.0 + int(i))
    assert not p.tell(cands[order[-1]], 0.0)  # told twice: ignored
    assert not p.tell(123456, 0.0)  # never asked
    assert p.pending_count == 5
    assert p.discard(cands[order[0]]) and not p.discard(cands[order[0]])
    assert p.tell(cands[order[1]], 0.5)  # a late result of a lost candidate still counts
    assert p.best() == (cands[order[1]].seeds, 0.5)
    assert len(p.ask(8)) == 8
    assert p.tell_many([(c, 2.0) for c in p.ask(3)]) == 3


def test_told_candidates_with_a_repeated_component_or_foreign_seeds_are_refused():
    p = build("random", incumbent_seeds=incumbent(4))
    c = p.ask(1)[0]
    dup = Candidate(seeds=(c.seeds[1], *c.seeds[1:]), tag=c.tag)
    with pytest.raises(
        SpecError, match=r"candidate \d+: seeds\[1\]=\d+: component c1 repeats the seed of c0"
    ):
        p.tell(dup, 0.0)
    with pytest.raises(SpecError, match="component c1 repeats"):
        p.tell(Candidate(seeds=dup.seeds, tag=999), 0.0)  # refused even under an unknown tag
    other = Candidate(seeds=(*c.seeds[:-1], (c.seeds[-1] + 1) % 256), tag=c.tag)
    with pytest.raises(SpecError, match="are not the vector asked under this tag"):
        p.tell(other, 0.0)
    assert p.pending_count == 1 and p.best()[1] == 10.0  # nothing was used
    assert p.tell(Candidate(seeds=tuple(c.seeds), tag=c.tag), 1.0)  # an equal copy is fine
    assert not p.tell(Candidate(seeds=(9, 8, 7, 6, 0, 0, 0, 0), tag=555), 0.0)  # unknown tag: ignored


def test_pending_is_bounded_oldest_dropped_first():
    p = build("random", max_pending=5)
    cands = p.ask(8)
    assert p.pending_count == 5
    assert not p.tell(cands[0], 1.0) and p.tell(cands[7], 1.0)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("name", BUILTINS)
def test_state_round_trips_through_json_and_continues_identically(name, rank):
    inc = incumbent(rank)
    slots = spanning_slots(rank)
    f = SeparableHashLandscape(salt=5)
    p = build(name, slots=slots, budget=2000, incumbent_seeds=inc, incumbent_loss=f(inc))
    drive(p, f, 300)
    in_flight = p.ask(6)  # pending across the save
    state = json.loads(json.dumps(p.state_dict(), allow_nan=False))
    assert (state["rank"], state["n_seeds"], state["config"]["slots"]) == (rank, rank + 4, list(slots))
    q = proposer_from_state(state)
    r = build(name, slots=slots, budget=2000, incumbent_seeds=inc)
    r.load_state_dict(json.loads(json.dumps(state)))
    for other in (q, r):
        assert other.best() == p.best() and other.incumbent == p.incumbent
        assert other.pending_count == p.pending_count and other.rank == rank
    for c in in_flight:
        loss = f(c.seeds)
        assert p.tell(c, loss) and q.tell(c, loss) and r.tell(c.tag, loss)
    for _ in range(10):
        a, b, c3 = p.ask(7), q.ask(7), r.ask(7)
        assert a == b == c3
        for x in a:
            p.tell(x, f(x.seeds))
            q.tell(x, f(x.seeds))
            r.tell(x, f(x.seeds))
    assert p.state_dict() == q.state_dict() == r.state_dict()


@pytest.mark.parametrize("name", BUILTINS)
def test_a_state_saved_for_another_rank_is_refused_and_changes_nothing(name):
    small = build(name, slots=(0, 4), incumbent_seeds=incumbent(4))
    small.ask(3)
    big = build(name, slots=(0, 4), incumbent_seeds=incumbent(32))
    before = big.state_dict()
    with pytest.raises(
        SpecError, match=r"^state\.rank=4: saved for 8 seeds, but this proposer's layer has rank 32"
    ):
        big.load_state_dict(small.state_dict())
    assert big.state_dict() == before


@pytest.mark.parametrize("name", BUILTINS)
def test_a_loaded_state_with_a_repeated_component_is_refused_and_changes_nothing(name):
    p = build(name, budget=2000)
    drive(p, SeparableHashLandscape(salt=1), 40)
    p.ask(2)
    state = p.state_dict()
    before = p.state_dict()
    bad = json.loads(json.dumps(state))
    bad["pending"][0][1][1] = bad["pending"][0][1][0]
    with pytest.raises(SpecError, match=r"state\.pending\[0\]\[1\]=\d+: component c1 repeats the seed of c0"):
        p.load_state_dict(bad)
    assert p.state_dict() == before
    bad = json.loads(json.dumps(state))
    bad["best"]["seeds"][3] = bad["best"]["seeds"][2]
    with pytest.raises(SpecError, match=r"state\.best\.seeds\[3\]"):
        proposer_from_state(bad)
    if name == "evolutionary":
        bad = json.loads(json.dumps(state))
        bad["members"][-1][0][2] = bad["members"][-1][0][0]
        with pytest.raises(SpecError, match=r"state\.members\[\d+\]\[2\]=\d+: component c2 repeats"):
            p.load_state_dict(bad)


def test_old_8_seed_states_are_refused_with_one_line():
    state = build("random").state_dict()
    state["format"] = 1
    for load in (build("random").load_state_dict, proposer_from_state):
        with pytest.raises(
            SpecError, match=r"^state\.format=1: saved for the old 8-seed layout .*expected 2$"
        ):
            load(state)


@pytest.mark.parametrize("name", BUILTINS)
def test_same_rng_seed_same_asks(name):
    assert build(name, rng_seed=9).ask(30) == build(name, rng_seed=9).ask(30)
    assert build(name, rng_seed=9).ask(30) != build(name, rng_seed=10).ask(30)


@pytest.mark.parametrize("name", BUILTINS)
def test_each_builtin_improves_a_toy_objective(name):
    f = SeparableHashLandscape(salt=2)
    p = build(name, budget=800, incumbent_loss=f(INCUMBENT))
    drive(p, f, 800)
    assert p.best()[1] < f(INCUMBENT) - 1.0
    assert p.best()[1] == pytest.approx(f(p.best()[0]))


@pytest.mark.parametrize("name", ("evolutionary", "random"))
def test_rank_32_search_over_components_and_layer_seeds_improves(name):
    inc = incumbent(32, 16)
    f = SeparableHashLandscape(salt=8)
    p = build(name, seed_bits=16, budget=1500, incumbent_seeds=inc, incumbent_loss=f(inc))
    drive(p, f, 1500, batch=16)
    assert p.best()[1] < f(inc) - 1.0
    assert duplicate_component(p.best()[0]) is None


def test_evolutionary_beats_random_on_a_structured_objective():
    def mean_best(name):
        out = []
        for seed in range(3):
            f = SeparableHashLandscape(salt=seed)
            p = build(name, budget=600, rng_seed=seed, incumbent_loss=f(INCUMBENT))
            drive(p, f, 600)
            out.append(p.best()[1])
        return float(np.mean(out))

    assert mean_best("evolutionary") < mean_best("random") - 0.5


def test_evolutionary_population_is_elitist_and_keeps_the_incumbent():
    p = build("evolutionary", population=4, incumbent_loss=5.0)
    assert isinstance(p, EvolutionaryProposer)
    cands = p.ask(10)
    for i, c in enumerate(cands):
        p.tell(c, float(i))  # all better than the incumbent
    pop = p.population
    assert len(pop) == 4
    assert (INCUMBENT, 5.0) in pop
    assert [loss for _, loss in pop] == [0.0, 1.0, 2.0, 5.0]


def test_evolutionary_redraw_limit_decays_over_the_budget():
    p = build("evolutionary", budget=100, redraw_max=6)
    assert p.redraw_limit() == 6
    p.ask(50)
    assert 1 < p.redraw_limit() < 6
    p.ask(60)
    assert p.redraw_limit() == 1
    q = build("evolutionary", budget=100, redraw_max=6, redraw_decay=False)
    q.ask(200)
    assert q.redraw_limit() == 6
    assert build("evolutionary", incumbent_seeds=incumbent(32)).redraw_limit() == 9  # a quarter of 36


@pytest.mark.parametrize("name", BUILTINS)
def test_set_incumbent_moving_an_unsearched_slot_rebases(name):
    slots = (0, 1)
    p = build(name, slots=slots)
    old = p.ask(4)
    moved = list(INCUMBENT)
    moved[5] = 100  # another driver changed an unsearched slot (scale)
    p.set_incumbent(moved, 3.0)
    assert p.best() == (tuple(moved), 3.0)
    assert not p.tell(old[0], 0.0)  # built on the old incumbent: ignored
    assert p.best() == (tuple(moved), 3.0)
    for c in p.ask(20):
        assert c.seeds[2:] == tuple(moved[2:])
    if isinstance(p, EvolutionaryProposer):
        assert p.population == [(tuple(moved), 3.0)]


def test_set_incumbent_refuses_another_length_or_a_repeated_component():
    p = build("evolutionary", incumbent_seeds=incumbent(4))
    with pytest.raises(SpecError, match=r"incumbent_seeds: expected 8 seeds for rank 4 .*got 36"):
        p.set_incumbent(incumbent(32), 1.0)
    with pytest.raises(SpecError, match=r"incumbent_seeds\[3\]=5: component c3 repeats the seed of c0"):
        p.set_incumbent((5, 6, 7, 5, 0, 0, 0, 0), 1.0)
    assert p.incumbent == (incumbent(4), 10.0)


# ------------------------------------------------------------------------------------------ exhaustive


def test_exhaustive_covers_every_8bit_value_of_a_layer_slot_exactly_once():
    p = build("exhaustive", slots=(4,), budget=256, incumbent_loss=math.inf)  # mask
    cands = p.ask(1000)  # unknown incumbent loss: its own value is enumerated too
    assert sorted(c.seeds[4] for c in cands) == list(range(256))
    assert p.ask(5) == [] and p.exhausted  # nothing told, so the sweep improved nothing
    q = build("exhaustive", slots=(4,), budget=256, incumbent_loss=1.0)
    values = [c.seeds[4] for c in q.ask(1000)]
    assert len(values) == 255 and sorted([*values, INCUMBENT[4]]) == list(range(256))


@pytest.mark.parametrize("rank", RANKS)
def test_exhaustive_component_slot_skips_seeds_held_by_other_components(rank):
    inc = incumbent(rank)
    slot = rank - 1
    p = build("exhaustive", slots=(slot,), budget=256, incumbent_seeds=inc, incumbent_loss=1.0)
    values = [c.seeds[slot] for c in p.ask(1000)]
    others = set(inc[:rank]) - {inc[slot]}
    assert len(values) == len(set(values)) == 255 - len(others)
    assert set(values) == set(range(256)) - others - {inc[slot]}


def test_exhaustive_position_resumes_mid_slot_without_gaps_or_repeats():
    p = build("exhaustive", slots=(2,), budget=256, incumbent_loss=1.0)
    first = p.ask(100)
    state = json.loads(json.dumps(p.state_dict()))
    assert isinstance(p, ExhaustiveProposer) and p.position[:2] == (0, 0) and p.position[2] >= 100
    rest = proposer_from_state(state).ask(1000)
    values = [c.seeds[2] for c in first + rest]
    assert len(values) == len(set(values)) == 255 - 3  # three other components hold a seed each


def test_exhaustive_solves_hamming_coordinate_wise_then_reports_exhausted():
    target = (7, 250, 0, 128, 3, 99, 255, 42)  # components disjoint from the incumbent's
    f = HammingToTarget(target)
    p = build("exhaustive", budget=8 * 256 * 2, incumbent_loss=f(INCUMBENT))
    n = drive(p, f, 10_000, batch=1)
    assert p.best() == (target, 0.0)
    assert p.exhausted and p.ask(3) == []
    assert 2 * 8 * 250 <= n <= 2 * 8 * 256  # one sweep that improves, one that confirms
    q = build("exhaustive", budget=8 * 256 * 2, incumbent_loss=f(INCUMBENT))
    n = drive(q, f, 10_000, batch=64)  # a late improvement may cost one more confirming sweep
    assert q.best() == (target, 0.0) and q.exhausted and n <= 3 * 8 * 256
    p.set_incumbent(INCUMBENT, 8.0)  # the table moved: sweep again
    assert not p.exhausted and len(p.ask(3)) == 3


def test_exhaustive_refuses_huge_seed_spaces():
    with pytest.raises(SpecError, match="seed_bits=32"):
        build("exhaustive", seed_bits=32)


def test_auto_picks_exhaustive_only_when_a_sweep_fits_the_budget():
    assert build("auto", slots=(0, 1), budget=512).kind == "exhaustive"
    assert build("auto", slots=(0, 1), budget=511).kind == "evolutionary"
    assert build("auto", seed_bits=32, budget=10**6).kind == "evolutionary"
    # default slots: all rank + 4 of them
    assert build("auto", budget=8 * 256).kind == "exhaustive"
    assert build("auto", budget=36 * 256 - 1, incumbent_seeds=incumbent(32)).kind == "evolutionary"
    assert build("auto", budget=36 * 256, incumbent_seeds=incumbent(32)).kind == "exhaustive"


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "simulated-annealing"}, "simulated-annealing"),
        ({"seed_bits": 12}, "seed_bits=12"),
        ({"slots": (0, 8)}, "slots: slot 8 is outside [0, 8) for rank 4"),
        ({"slots": ()}, "slots=[]"),
        ({"slots": "01"}, "slots='01'"),
        ({"budget": 0}, "budget=0"),
        ({"population": 0}, "population=0"),
        ({"rank": 0}, "rank=0"),
        ({"mutation_rate": 0.1}, "mutation_rate"),
        ({"crossover_rate": 2.0}, "crossover_rate=2.0"),
        ({"incumbent_seeds": (256, 0, 1, 2, 0, 0, 0, 0)}, "incumbent_seeds[0]=256"),
        ({"incumbent_seeds": (1, 2, 3)}, "incumbent_seeds"),
        ({"incumbent_seeds": (-1, 0, 1, 2, 0, 0, 0, 0)}, "incumbent_seeds[0]=-1"),
        ({"incumbent_seeds": (1, 1, 2, 3, 0, 0, 0, 0)}, "incumbent_seeds[1]=1: component c1 repeats"),
    ],
)
def test_factory_errors_name_the_field_and_value(kwargs, needle):
    name = kwargs.pop("name", "evolutionary")
    with pytest.raises(SpecError) as info:
        build(name, **kwargs)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_calls_and_bad_states_raise_spec_error():
    p = build("random")
    with pytest.raises(SpecError, match="n=-1"):
        p.ask(-1)
    with pytest.raises(SpecError, match="loss"):
        p.tell(p.ask(1)[0], "bad")  # type: ignore[arg-type]
    c = p.ask(1)[0]
    assert p.tell(c, float("nan")) and p.best()[1] == 10.0  # NaN counts as +inf
    with pytest.raises(SpecError, match="state.kind"):
        build("evolutionary").load_state_dict(p.state_dict())
    with pytest.raises(SpecError, match="seed_bits"):
        build("random", seed_bits=16).load_state_dict(p.state_dict())
    with pytest.raises(SpecError, match="slots"):
        build("random", slots=(1,)).load_state_dict(p.state_dict())
    broken = p.state_dict()
    del broken["pending"]
    with pytest.raises(SpecError, match="malformed"):
        build("random").load_state_dict(broken)
    with pytest.raises(SpecError, match="state.kind"):
        proposer_from_state({"kind": "pickle"})
    short = p.state_dict()
    short["incumbent"]["seeds"] = short["incumbent"]["seeds"][:-1]
    with pytest.raises(SpecError, match=r"^state: incumbent_seeds: expected 8 seeds for rank 4"):
        proposer_from_state(short)


def test_from_incumbent_builds_a_fresh_search_from_the_table_row():
    p = EvolutionaryProposer.from_incumbent(INCUMBENT, 2.0, seed_bits=8, budget=50, slots=[6, 2])
    assert p.slots == (2, 6) and p.best() == (INCUMBENT, 2.0) and len(p.ask(3)) == 3
    q = ExhaustiveProposer.from_incumbent(INCUMBENT, seed_bits=8, budget=50)
    assert q.best() == (INCUMBENT, math.inf) and q.slots == tuple(range(8))
    with pytest.raises(SpecError, match="population='many'"):
        EvolutionaryProposer.from_incumbent(INCUMBENT, seed_bits=8, budget=5, population="many")
    with pytest.raises(SpecError, match=r"slot 9 is outside \[0, 8\) for layer 3 \(rank 4\)"):
        EvolutionaryProposer.from_incumbent(INCUMBENT, seed_bits=8, budget=5, slots=[9], layer=3)
    with pytest.raises(SpecError, match="candidate='x'"):
        p.tell("x", 1.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ jobspec


def test_jobspec_slots_are_checked_against_the_layer_rank():
    """The search's check of a parsed spec (``check_job_spec``; ``parse_job_spec`` imports no proposer)."""
    from germinator_dist.config import parse_job_spec
    from germinator_dist.search.job_setup import check_job_spec
    from germinator_dist.search.proposers import proposer_fields

    with pytest.raises(SpecError, match=r"^search\.slots: slot 40 is outside \[0, 36\) for rank 32$"):
        check_job_spec(
            parse_job_spec(
                {"mode": "search", "model": {"rank": 32}, "search": {"slots": [0, 40], "swap": None}}
            )
        )
    with pytest.raises(SpecError, match=r"^search\.slots: slot 2 is named twice"):
        check_job_spec(parse_job_spec({"mode": "search", "search": {"slots": [2, 2], "swap": None}}))
    with pytest.raises(SpecError, match=r"^model\.rank=300: 300 components need distinct seeds"):
        check_job_spec(parse_job_spec({"mode": "search", "model": {"rank": 300, "seed_bits": 8}}))
    with pytest.raises(SpecError, match=r"^search\.options\.rank: set by the spec"):
        check_job_spec(parse_job_spec({"mode": "search", "search": {"options": {"rank": 3}, "swap": None}}))
    spec = parse_job_spec(
        {"mode": "search", "model": {"rank": 32}, "search": {"slots": [35, 0, 33], "swap": None}}
    )
    fields = proposer_fields(spec, None)
    assert fields["slots"] == (0, 33, 35) and fields["rank"] == 32 and len(fields["incumbent_seeds"]) == 36
    assert duplicate_component(fields["incumbent_seeds"]) is None
    assert proposer_fields(spec, 36)["incumbent_seeds"] == fields["incumbent_seeds"]  # a seed count
    row = incumbent(32, 16)
    fields = proposer_fields(spec, row, layer=2)
    assert fields["incumbent_seeds"] == row and fields["layer"] == 2
    p = make_proposer(spec.search.proposer, incumbent_loss=1.0, **fields)
    assert p.rank == 32 and p.slots == (0, 33, 35) and p.layer == 2
    with pytest.raises(SpecError, match=r"^search: refit_steps: applies to the whole-vector proposers"):
        parse_job_spec({"mode": "search", "search": {"refit_steps": 10}})  # the swap search would ignore it
    with pytest.raises(
        SpecError, match=r"^search\.slots: slot 35 is outside \[0, 20\) for layer 2 \(rank 16\)$"
    ):
        proposer_fields(spec, incumbent(16, 16), layer=2)


def test_proposers_import_neither_ray_nor_redis_nor_torch():
    code = (
        "import sys, germinator_dist.search.proposers as p\n"
        "inc = [0, 1, 2, 0, 0, 0, 0]  # rank 3\n"
        "p.make_proposer('evolutionary', seed_bits=8, budget=4, incumbent_seeds=inc).ask(2)\n"
        "bad = [m for m in ('ray', 'redis', 'torch', 'nevergrad') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

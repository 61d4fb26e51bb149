"""Built-in proposers (evolutionary, exhaustive, random), the shared protocol, and the factory."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from germinator_dist.errors import SpecError
from germinator_dist.proposers import (
    EvolutionaryProposer,
    ExhaustiveProposer,
    Proposer,
    make_proposer,
    proposer_from_state,
)
from germinator_dist.proposers.toy_objectives import HammingToTarget, SeparableHashLandscape
from germinator_dist.records import Candidate

BUILTINS = ("evolutionary", "exhaustive", "random")
INCUMBENT = (11, 22, 33, 44, 55, 66, 77, 88)


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


@pytest.mark.parametrize(
    ("name", "seed_bits"),
    [(n, b) for n in BUILTINS for b in (8, 16, 32, 63) if n != "exhaustive" or b <= 16],
)
def test_respects_seed_bits_and_slots_and_returns_python_ints(name, seed_bits):
    slots = (1, 4, 6)
    p = build(name, seed_bits=seed_bits, slots=slots, budget=3 * (1 << min(seed_bits, 16)))
    assert isinstance(p, Proposer)
    tags = set()
    for _ in range(5):
        cands = p.ask(40)
        assert len(cands) == 40
        for c in cands:
            assert isinstance(c, Candidate)
            assert all(type(s) is int and 0 <= s < (1 << seed_bits) for s in c.seeds)
            assert all(c.seeds[i] == INCUMBENT[i] for i in range(8) if i not in slots)
            assert c.seeds != INCUMBENT or name == "exhaustive"
            tags.add(c.tag)
            p.tell(c, float(sum(c.seeds) % 97))
    assert len(tags) == 200


@pytest.mark.parametrize("name", BUILTINS)
def test_out_of_order_lost_and_duplicate_tells(name):
    p = build(name)
    cands = p.ask(20)
    order = np.random.default_rng(3).permutation(20)
    lost = {int(i) for i in order[:5]}
    losses = {}
    for i in order:
        if int(i) in lost:
            continue
        losses[cands[i].tag] = 1.0 + int(i)
        assert p.tell(cands[i] if i % 2 else cands[i].tag, 1.0 + int(i))
    assert not p.tell(cands[order[-1]], 0.0)  # told twice: ignored
    assert not p.tell(123456, 0.0)  # never asked
    assert p.pending_count == 5
    assert p.discard(cands[order[0]]) and not p.discard(cands[order[0]])
    assert p.tell(cands[order[1]], 0.5)  # a late result of a lost candidate still counts
    assert p.best() == (cands[order[1]].seeds, 0.5)
    assert len(p.ask(8)) == 8
    assert p.tell_many([(c, 2.0) for c in p.ask(3)]) == 3


def test_pending_is_bounded_oldest_dropped_first():
    p = build("random", max_pending=5)
    cands = p.ask(8)
    assert p.pending_count == 5
    assert not p.tell(cands[0], 1.0) and p.tell(cands[7], 1.0)


@pytest.mark.parametrize("name", BUILTINS)
def test_state_round_trips_through_json_and_continues_identically(name):
    f = SeparableHashLandscape(salt=5)
    p = build(name, slots=(0, 2, 3, 7), budget=2000, incumbent_loss=f(INCUMBENT))
    drive(p, f, 300)
    in_flight = p.ask(6)  # pending across the save
    state = json.loads(json.dumps(p.state_dict(), allow_nan=False))
    q = proposer_from_state(state)
    r = build(name, slots=(0, 2, 3, 7), budget=2000)
    r.load_state_dict(json.loads(json.dumps(state)))
    for other in (q, r):
        assert other.best() == p.best() and other.incumbent == p.incumbent
        assert other.pending_count == p.pending_count
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


@pytest.mark.parametrize("name", BUILTINS)
def test_set_incumbent_moving_an_unsearched_slot_rebases(name):
    slots = (0, 1)
    p = build(name, slots=slots)
    old = p.ask(4)
    moved = list(INCUMBENT)
    moved[5] = 200  # another driver changed an unsearched slot
    p.set_incumbent(moved, 3.0)
    assert p.best() == (tuple(moved), 3.0)
    assert not p.tell(old[0], 0.0)  # built on the old incumbent: ignored
    assert p.best() == (tuple(moved), 3.0)
    for c in p.ask(20):
        assert c.seeds[2:] == tuple(moved[2:])
    if isinstance(p, EvolutionaryProposer):
        assert p.population == [(tuple(moved), 3.0)]


def test_exhaustive_covers_every_8bit_value_of_a_slot_exactly_once():
    p = build("exhaustive", slots=(3,), budget=256, incumbent_loss=math.inf)
    cands = p.ask(1000)  # unknown incumbent loss: its own value is enumerated too
    assert sorted(c.seeds[3] for c in cands) == list(range(256))
    assert p.ask(5) == [] and p.exhausted  # nothing told, so the sweep improved nothing
    q = build("exhaustive", slots=(3,), budget=256, incumbent_loss=1.0)
    values = [c.seeds[3] for c in q.ask(1000)]
    assert len(values) == 255 and sorted([*values, INCUMBENT[3]]) == list(range(256))


def test_exhaustive_position_resumes_mid_slot_without_gaps_or_repeats():
    p = build("exhaustive", slots=(2,), budget=256, incumbent_loss=1.0)
    first = p.ask(100)
    state = json.loads(json.dumps(p.state_dict()))
    assert isinstance(p, ExhaustiveProposer) and p.position[:2] == (0, 0) and p.position[2] >= 100
    rest = proposer_from_state(state).ask(1000)
    values = [c.seeds[2] for c in first + rest]
    assert len(values) == len(set(values)) == 255


def test_exhaustive_solves_hamming_coordinate_wise_then_reports_exhausted():
    target = (7, 250, 0, 128, 3, 99, 255, 42)
    f = HammingToTarget(target)
    p = build("exhaustive", budget=8 * 256 * 2, incumbent_loss=f(INCUMBENT))
    n = drive(p, f, 10_000, batch=1)
    assert p.best() == (target, 0.0)
    assert p.exhausted and p.ask(3) == []
    assert 2 * 8 * 255 <= n <= 2 * 8 * 256  # one sweep that improves, one that confirms
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


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "simulated-annealing"}, "simulated-annealing"),
        ({"seed_bits": 12}, "seed_bits=12"),
        ({"slots": (0, 8)}, "slots"),
        ({"slots": ()}, "slots"),
        ({"budget": 0}, "budget=0"),
        ({"population": 0}, "population=0"),
        ({"mutation_rate": 0.1}, "mutation_rate"),
        ({"crossover_rate": 2.0}, "crossover_rate=2.0"),
        ({"incumbent_seeds": (256, 0, 0, 0, 0, 0, 0, 0)}, "incumbent_seeds[0]=256"),
        ({"incumbent_seeds": (1, 2, 3)}, "incumbent_seeds"),
        ({"incumbent_seeds": (-1, 0, 0, 0, 0, 0, 0, 0)}, "incumbent_seeds[0]=-1"),
    ],
)
def test_factory_errors_name_the_field_and_value(kwargs, needle):
    name = kwargs.pop("name", "evolutionary")
    with pytest.raises(SpecError) as info:
        build(name, **kwargs)
    assert needle in str(info.value)


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


def test_from_incumbent_builds_a_fresh_search_from_the_table_row():
    p = EvolutionaryProposer.from_incumbent(INCUMBENT, 2.0, seed_bits=8, budget=50, slots=[6, 2])
    assert p.slots == (2, 6) and p.best() == (INCUMBENT, 2.0) and len(p.ask(3)) == 3
    q = ExhaustiveProposer.from_incumbent(INCUMBENT, seed_bits=8, budget=50)
    assert q.best() == (INCUMBENT, math.inf)
    with pytest.raises(SpecError, match="population='many'"):
        EvolutionaryProposer.from_incumbent(INCUMBENT, seed_bits=8, budget=5, population="many")
    with pytest.raises(SpecError, match="candidate='x'"):
        p.tell("x", 1.0)  # type: ignore[arg-type]


def test_proposers_import_neither_ray_nor_redis_nor_torch():
    code = (
        "import sys, germinator_dist.proposers as p\n"
        "p.make_proposer('evolutionary', seed_bits=8, budget=4, incumbent_seeds=[0]*8).ask(2)\n"
        "bad = [m for m in ('ray', 'redis', 'torch', 'nevergrad') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Slot-level commits (docs/layout.md) against a real redis-server: a swap changes one component slot if
that slot is still at the generation it was measured against; the trainer's publish merges its floats
slot by slot, keeping the slots swapped meanwhile and telling which."""

from __future__ import annotations

import math
import struct

import pytest
from table_helpers import SPEC, f32, initial_rows, layer_seeds, n_floats, slot_at

from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, PublishOutcome, SwapCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

ACCEPTED, STALE = CommitOutcome.ACCEPTED, CommitOutcome.STALE
NOT_BETTER, DUPLICATE = CommitOutcome.NOT_BETTER, CommitOutcome.DUPLICATE
RANK, EXPERTS = 4, 2
F = n_floats(RANK, EXPERTS)  # 14: alpha, beta, g (4), two expert rows (4 each)


def swap(
    slot: int, gen: int = 0, seed: int = 500, floats=(2.0, 3.0, 4.0), loss=1.0, inc=2.0, **kw
) -> SwapCommit:
    fields = dict(layer=0, slot=slot, expected_gen=gen, seed=seed, slot_floats=floats, loss=loss)
    return SwapCommit(**fields, incumbent_loss=inc, **kw)


@pytest.fixture
def job(table: SeedTable, job_id: str) -> str:
    table.create_job(job_id, SPEC, initial_rows(2, RANK, EXPERTS), seed_bits=16)
    table.set_state(job_id, "RUNNING")
    return job_id


def test_an_accepted_swap_changes_its_slot_only(table: SeedTable, job: str) -> None:
    table.publish_floats(job, 0, [float(i) for i in range(F)], 9.0, [0] * 8)
    before = table.entry(job, 0)
    assert table.commit_swap(job, swap(2, seed=777, floats=(-1.0, 0.5, 0.25), evaluator_id="w")) is ACCEPTED
    e = table.entry(job, 0)
    assert e.seeds == before.seeds[:2] + (777,) + before.seeds[3:]
    assert e.gens == (0, 0, 1, 0, 0, 0, 0, 0)
    want = list(before.floats)
    for i, v in zip(slot_at(RANK, F, 2), (-1.0, 0.5, 0.25), strict=True):  # g[2], e[0][0][2], e[1][0][2]
        want[i] = v
    assert e.floats == tuple(want) and slot_at(RANK, F, 2) == [4, 8, 12]
    assert (e.loss, e.version, e.writer) == (1.0, 2, "w")  # the loss is the swap's measurement
    assert table.snapshot(job).epoch == 2 and table.entry(job, 1).version == 0
    ev = table.events(job)[-1]
    assert (ev.kind, ev.layer, ev.slot, ev.gen, ev.seed, ev.floats) == (
        "swap",
        0,
        2,
        1,
        777,
        (-1.0, 0.5, 0.25),
    )
    assert (ev.loss, ev.version, ev.epoch, ev.writer, ev.seeds) == (1.0, 2, 2, "w", None)
    assert table.rebuild_from_stream(job) == table.snapshot(job)


def test_swap_outcomes(table: SeedTable, job: str) -> None:
    comps = layer_seeds(0)[:RANK]  # 0 1 2 3; the layer seeds are 0 0 1 2
    assert table.commit_swap(job, swap(1, gen=0, seed=50)) is ACCEPTED
    assert table.commit_swap(job, swap(1, gen=0, seed=51)) is STALE  # slot 1 moved on
    assert table.commit_swap(job, swap(0, gen=0, seed=51)) is ACCEPTED  # another slot did not
    assert table.commit_swap(job, swap(1, gen=1, seed=52, loss=2.0, inc=2.0)) is NOT_BETTER  # equal
    assert table.commit_swap(job, swap(1, gen=1, seed=52, loss=3.0, inc=2.0)) is NOT_BETTER
    for loss, inc in ((math.nan, 2.0), (1.0, math.nan), (1.0, math.inf), (-math.inf, 2.0)):
        assert table.commit_swap(job, swap(1, gen=1, seed=52, loss=loss, inc=inc)) is NOT_BETTER  # not finite
    assert table.commit_swap(job, swap(1, gen=0, seed=52, loss=math.nan)) is STALE  # the generation first
    assert table.commit_swap(job, swap(2, gen=0, seed=51)) is DUPLICATE  # slot 0 holds it now
    assert table.commit_swap(job, swap(2, gen=0, seed=comps[3])) is DUPLICATE
    assert table.commit_swap(job, swap(2, gen=0, seed=comps[2])) is ACCEPTED  # its own seed again
    assert table.commit_swap(job, swap(3, gen=0, seed=0)) is ACCEPTED  # the mask's seed: a layer seed
    e = table.entry(job, 0)
    assert e.seeds == (51, 50, 2, 0, 0, 0, 1, 2) and e.gens == (1, 1, 1, 1, 0, 0, 0, 0)
    assert e.version == table.snapshot(job).epoch == 4


def test_commit_swaps_many_in_order(table: SeedTable, job: str) -> None:
    swaps = [
        swap(0, gen=0, seed=60, evaluator_id="a"),
        swap(0, gen=1, seed=61, evaluator_id="b"),  # sees the first
        swap(1, gen=0, seed=61, evaluator_id="c"),  # slot 0 holds 61 now
        swap(0, gen=0, seed=62, evaluator_id="d"),  # stale
        swap(1, gen=0, seed=60, evaluator_id="e"),  # 60 was released by slot 0
        SwapCommit(layer=1, slot=3, expected_gen=0, seed=9, slot_floats=(1, 1, 1), loss=0, incumbent_loss=1),
    ]
    assert table.commit_swaps_many(job, swaps) == [ACCEPTED, ACCEPTED, DUPLICATE, STALE, ACCEPTED, ACCEPTED]
    assert table.entry(job, 0).seeds[:2] == (61, 60) and table.entry(job, 1).gens[3] == 1
    assert [ev.writer for ev in table.events(job) if ev.kind == "swap"] == ["a", "b", "e", ""]
    assert table.commit_swaps_many(job, []) == []
    assert table.rebuild_from_stream(job) == table.snapshot(job)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"slot": 4}, r"slot: 4 is not a component slot of layer 0 \(rank 4: slots 0..3\)"),
        ({"floats": (1.0, 2.0)}, "slot_floats: got 2 values, a slot of layer 0 has 3"),
        ({"floats": (1.0, math.nan, 2.0)}, "slot_floats"),
        ({"seed": 2**16}, "seed: a seed needs 17 bits, the job has seed_bits=16"),
        ({"seed": 2**63}, r"seed: .* is not an integer in \[0, 2\*\*63\)"),
        ({"layer": 2}, "layer: 2 is out of range"),
    ],
    ids=lambda x: str(x)[:30] if isinstance(x, dict) else "",
)
def test_bad_swaps_change_nothing(table: SeedTable, job: str, bad: dict, match: str) -> None:
    before = table.snapshot(job)
    layer = bad.pop("layer", 0)
    s = swap(**({"slot": 1} | bad))
    s = SwapCommit(**{**s.model_dump(), "layer": layer})
    with pytest.raises(SpecError, match=match):
        table.commit_swap(job, s)
    with pytest.raises(SpecError, match=r"swaps\[1\]\." + match.split(":")[0]):
        table.commit_swaps_many(job, [swap(0), s])
    assert table.snapshot(job) == before


def test_a_publish_keeps_the_slots_swapped_since_its_generations(table: SeedTable, job: str) -> None:
    read = table.entry(job, 0)  # the trainer reads, then trains
    assert table.commit_swap(job, swap(1, seed=71, floats=(-1.0, -2.0, -3.0), evaluator_id="s1")) is ACCEPTED
    assert table.commit_swap(job, swap(3, seed=73, floats=(-4.0, -5.0, -6.0), evaluator_id="s3")) is ACCEPTED
    mine = f32([0.1 * i for i in range(F)])
    out = table.publish_floats(job, 0, mine, 4.5, read.gens, writer="t")
    assert out == PublishOutcome(outcome=ACCEPTED, kept=(1, 3), version=3)
    e = table.entry(job, 0)
    for k in range(RANK):
        held = [e.floats[i] for i in slot_at(RANK, F, k)]
        want = {1: [-1.0, -2.0, -3.0], 3: [-4.0, -5.0, -6.0]}.get(k, [mine[i] for i in slot_at(RANK, F, k)])
        assert held == want, k
    assert e.floats[:2] == mine[:2]  # alpha and beta are the publisher's
    assert (e.seeds[1], e.seeds[3], e.gens) == (71, 73, (0, 1, 0, 1, 0, 0, 0, 0))  # seeds and gens stay
    assert (e.loss, e.version, e.writer) == (4.5, 3, "t")  # the trainer's measurement, not compared
    ev = table.events(job)[-1]
    assert (ev.kind, ev.kept, ev.floats, ev.version, ev.epoch, ev.seeds) == (
        "floats",
        (1, 3),
        e.floats,
        3,
        3,
        None,
    )
    # with fresh generations nothing is kept; a higher loss is written all the same
    out = table.publish_floats(job, 0, mine, 8.0, e.gens, writer="t")
    assert (out.outcome, out.kept, table.entry(job, 0).floats, table.entry(job, 0).loss) == (
        ACCEPTED,
        (),
        mine,
        8.0,
    )
    assert table.rebuild_from_stream(job) == table.snapshot(job)


def test_a_publish_is_stale_when_a_layer_seed_changed(table: SeedTable, job: str) -> None:
    read = table.entry(job, 0)
    seeds = list(read.seeds)
    seeds[RANK + 1] = 999  # scale
    assert table.commit_seeds(job, 0, 0, seeds, read.floats, 3.0) is ACCEPTED
    before = table.snapshot(job)
    out = table.publish_floats(job, 0, [0.5] * F, 1.0, read.gens)
    assert out == PublishOutcome(outcome=STALE, kept=(), version=1)
    assert table.snapshot(job) == before
    assert table.publish_floats(job, 0, [0.5] * F, 1.0, before.layers[0].gens).outcome is ACCEPTED


def test_a_publish_with_expected_version_is_a_compare_and_set(table: SeedTable, job: str) -> None:
    gens = table.entry(job, 0).gens
    assert table.commit_swap(job, swap(0)) is ACCEPTED
    assert table.publish_floats(job, 0, [0.5] * F, 1.0, gens, expected_version=0).outcome is STALE
    out = table.publish_floats(job, 0, [0.5] * F, 1.0, gens, expected_version=1)
    assert (out.outcome, out.kept, out.version) == (ACCEPTED, (0,), 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gens": [0] * 7}, r"gens: got 7 generations, layer 0 has 8 seed slots \(rank 4 \+ 4\)"),
        ({"gens": [0] * 7 + [-1]}, r"gens\.bias: -1 is not an integer"),
        ({"gens": "00000000"}, "gens"),
        ({"floats": [0.5] * (F - 1)}, f"floats: got {F - 1} values, layer 0 has {F}"),
        ({"floats": [0.5] * (F - 1) + [math.inf]}, "floats"),
        ({"loss": math.nan}, "loss"),
        ({"layer": 5}, "layer: 5 is out of range"),
        ({"expected_version": -1}, "expected_version"),
        ({"writer": "a\nb"}, "writer"),
    ],
    ids=lambda x: str(x)[:30] if isinstance(x, dict) else "",
)
def test_bad_publishes_change_nothing(table: SeedTable, job: str, kwargs: dict, match: str) -> None:
    before = table.snapshot(job)
    args = {"layer": 0, "floats": [0.5] * F, "loss": 1.0, "gens": [0] * 8} | kwargs
    with pytest.raises(SpecError, match=match):
        table.publish_floats(job, **args)
    assert table.snapshot(job) == before


def test_a_generation_at_the_uint32_maximum_refuses_to_move(table: SeedTable, job: str, redis_server) -> None:
    top = 2**32 - 1
    raw = redis_server.client()
    raw.hset(f"germ:{{{job}}}:layer:0", "gens", struct.pack("<8I", 0, top, 0, 0, 0, 0, 0, 0))
    before = table.snapshot(job)
    with pytest.raises(TableError, match="layer:0: the generation of slot 1 is at its maximum"):
        table.commit_swap(job, swap(1, gen=top))
    seeds = list(before.layers[0].seeds)
    seeds[1] = 999
    with pytest.raises(TableError, match="layer:0: the generation of slot 1 is at its maximum"):
        table.commit_seeds(job, 0, 0, seeds, before.layers[0].floats, 0.5)
    assert table.snapshot(job) == before
    assert table.commit_swap(job, swap(2, gen=0)) is ACCEPTED  # the other slots still move

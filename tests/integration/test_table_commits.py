"""Whole-vector seed commits against a real redis-server: compare-and-set on the row version, strictly
lower loss, slot generations, pipelined commits, and exactly-once answers to retries (seed commits, swaps
and publishes)."""

from __future__ import annotations

import math

import pytest
from table_helpers import SPEC, DropReplyProxy, f32, initial_rows, layer_seeds, n_floats

from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState, SeedCommit, SwapCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

ACCEPTED, STALE, NOT_BETTER = CommitOutcome.ACCEPTED, CommitOutcome.STALE, CommitOutcome.NOT_BETTER
SEEDS = [11, 12, 13, 14, 15, 16, 17, 18]  # rank 4: c0..c3, mask, scale, shift, bias
F = n_floats()  # 6: alpha, beta, g (4)


def test_create_gives_version_zero_rows_and_an_init_stream(table: SeedTable, job_id: str) -> None:
    info = table.create_job(job_id, SPEC, initial_rows(3, rank=4, experts=2), desired_workers=4)
    assert (info.state, info.n_layers, info.epoch, info.desired_workers) == (JobState.PENDING, 3, 0, 4)
    snap = table.snapshot(job_id)
    assert snap.epoch == 0 and snap.versions == (0, 0, 0)
    assert [e.loss for e in snap.layers] == [math.inf] * 3
    e = snap.layers[2]
    assert (e.seeds, e.gens, e.floats) == (layer_seeds(2), (0,) * 8, (1.0,) * 14)
    events = table.events(job_id)
    assert [(ev.kind, ev.layer, ev.version, ev.gens) for ev in events] == [
        ("init", i, 0, (0,) * 8) for i in range(3)
    ]
    assert table.get_spec(job_id) == SPEC


def test_layers_may_have_different_ranks(table: SeedTable, job_id: str) -> None:
    rows = [initial_rows(1, rank=2)[0], initial_rows(2, rank=7, experts=1)[1]]
    table.create_job(job_id, SPEC, rows, seed_bits=8)
    snap = table.snapshot(job_id)
    assert [(e.rank, len(e.floats), e.gens) for e in snap.layers] == [(2, 4, (0,) * 6), (7, 16, (0,) * 11)]
    seeds = (*range(20, 27), 1, 2, 3, 255)
    assert table.commit_seeds(job_id, 1, 0, seeds, [0.5] * 16, 1.0) is ACCEPTED
    assert table.entry(job_id, 1).seeds == seeds
    with pytest.raises(SpecError, match=r"seeds: got 11 seeds, layer 0 has 6 \(rank 2 \+ 4\)"):
        table.commit_seeds(job_id, 0, 0, seeds, [0.5] * 4, 1.0)
    assert table.rebuild_from_stream(job_id) == table.snapshot(job_id)


def test_commit_is_compare_and_set_on_version_and_strictly_lower_loss(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2))
    floats = (0.5, -1.25, 2.0, 0.0, 1.0, 3.0)
    assert table.commit_seeds(job_id, 0, 0, SEEDS, floats, 0.75, "w1") is ACCEPTED
    assert table.commit_seeds(job_id, 0, 0, SEEDS, floats, 0.10, "w2") is STALE  # version moved on
    assert table.commit_seeds(job_id, 0, 1, SEEDS, floats, 0.75, "w2") is NOT_BETTER  # equal is not lower
    assert table.commit_seeds(job_id, 0, 1, SEEDS, floats, 0.90, "w2") is NOT_BETTER
    other = [1, 2, 3, 4, 1, 1, 1, 1]  # layer seeds may repeat
    assert table.commit_seeds(job_id, 0, 1, other, floats, 0.5, "w3") is ACCEPTED
    e = table.entry(job_id, 0)
    assert (e.seeds, e.floats, e.loss, e.version, e.writer) == (tuple(other), floats, 0.5, 2, "w3")
    snap = table.snapshot(job_id)
    assert snap.epoch == 2 and snap.versions == (2, 0)  # the other layer is untouched
    seeds_events = [ev for ev in table.events(job_id) if ev.kind == "seeds"]
    assert [(ev.layer, ev.version, ev.epoch, ev.loss, ev.writer) for ev in seeds_events] == [
        (0, 1, 1, 0.75, "w1"),
        (0, 2, 2, 0.5, "w3"),
    ]


def test_a_commit_bumps_the_generation_of_every_changed_slot(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    start = list(layer_seeds(0))  # 0 1 2 3 | 0 0 1 2
    changed = start[:1] + [77] + start[2:6] + [99, 2]  # c1 and shift change
    assert table.commit_seeds(job_id, 0, 0, changed, [1.0] * F, 5.0) is ACCEPTED
    assert table.entry(job_id, 0).gens == (0, 1, 0, 0, 0, 0, 1, 0)
    assert table.commit_seeds(job_id, 0, 1, changed, [2.0] * F, 4.0) is ACCEPTED  # same seeds: no bump
    again = [5] + changed[1:]
    assert table.commit_seeds(job_id, 0, 2, again, [2.0] * F, 3.0) is ACCEPTED
    e = table.entry(job_id, 0)
    assert (e.gens, e.version) == ((1, 1, 0, 0, 0, 0, 1, 0), 3)
    assert [ev.gens for ev in table.events(job_id) if ev.kind == "seeds"] == [
        (0, 1, 0, 0, 0, 0, 1, 0),
        (0, 1, 0, 0, 0, 0, 1, 0),
        (1, 1, 0, 0, 0, 0, 1, 0),
    ]
    assert table.rebuild_from_stream(job_id) == table.snapshot(job_id)


def test_a_repeated_component_seed_is_refused_with_the_slot_named(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    before = table.snapshot(job_id)
    with pytest.raises(SpecError, match=r"seeds\.c3: 12 repeats component c1's seed"):
        table.commit_seeds(job_id, 0, 0, [11, 12, 13, 12, 1, 1, 1, 1], [1.0] * F, 0.5)
    batch = [
        SeedCommit(layer=0, expected_version=0, seeds=[9, 9, 1, 2, 3, 4, 5, 6], floats=[1.0] * F, loss=1)
    ]
    with pytest.raises(SpecError, match=r"commits\[0\]\.seeds\.c1: 9 repeats"):
        table.commit_seeds_many(job_id, batch)
    assert table.snapshot(job_id) == before


def test_floats_are_stored_as_float32(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    values = [0.1, 1e-3, 3.0, 1 / 3, -7.7, 2.0]
    table.commit_seeds(job_id, 0, 0, SEEDS, values, 1.0)
    assert table.entry(job_id, 0).floats == f32(values)


def test_commit_seeds_many_runs_in_order_each_atomic(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2))
    fl = (1.0,) * F

    def c(layer, v, loss, who, seeds=SEEDS):
        return SeedCommit(
            layer=layer, expected_version=v, seeds=seeds, floats=fl, loss=loss, evaluator_id=who
        )

    commits = [
        c(0, 0, 0.9, "a"),
        c(0, 1, 0.8, "b", [1, 2, 3, 4, 15, 16, 17, 18]),  # the layer seeds stay
        c(0, 1, 0.1, "c"),
        c(0, 2, 0.8, "d"),
        c(1, 0, 5.0, "e"),
    ]
    assert table.commit_seeds_many(job_id, commits) == [ACCEPTED, ACCEPTED, STALE, NOT_BETTER, ACCEPTED]
    snap = table.snapshot(job_id)
    assert snap.versions == (2, 1)
    assert snap.layers[0].gens == (2, 2, 2, 2, 1, 1, 1, 1)  # a later commit of a batch sees the earlier
    assert [ev.writer for ev in table.events(job_id) if ev.kind == "seeds"] == ["a", "b", "e"]
    assert table.commit_seeds_many(job_id, []) == []
    with pytest.raises(SpecError, match=r"commits\[1\]\.floats: got 5 values, layer 1 has 6"):
        table.commit_seeds_many(
            job_id, [c(0, 2, 0.1, "f"), SeedCommit(**{**commits[4].model_dump(), "floats": (1,) * 5})]
        )
    assert table.snapshot(job_id) == snap


def test_writes_are_refused_once_the_job_is_finished(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    table.set_state(job_id, JobState.RUNNING)
    table.commit_seeds(job_id, 0, 0, SEEDS, [1.0] * F, 1.0)
    table.set_state(job_id, JobState.CANCELLED)
    before = table.snapshot(job_id)
    swap = SwapCommit(layer=0, slot=0, expected_gen=1, seed=5, slot_floats=(1.0,), loss=0.1, incumbent_loss=1)
    for call in (
        lambda: table.commit_seeds(job_id, 0, 1, SEEDS, [1.0] * F, 0.5),
        lambda: table.commit_seeds_many(
            job_id, [SeedCommit(layer=0, expected_version=1, seeds=SEEDS, floats=[1.0] * F, loss=0.5)]
        ),
        lambda: table.commit_swap(job_id, swap),
        lambda: table.commit_swaps_many(job_id, [swap]),
        lambda: table.publish_floats(job_id, 0, [1.0] * F, 0.5, before.layers[0].gens),
    ):
        with pytest.raises(TableError, match="CANCELLED"):
            call()
    assert table.snapshot(job_id) == before
    table.set_state(job_id, JobState.RUNNING)  # resume
    assert table.commit_seeds(job_id, 0, 1, SEEDS, [1.0] * F, 0.5) is ACCEPTED


def test_a_retried_write_whose_reply_was_lost_is_answered_not_applied_twice(
    redis_server, job_id: str
) -> None:
    """A proxy lets the write reach Redis and then cuts the connection before the reply: the client's
    retry finds its own token in the row and answers ACCEPTED instead of a false STALE (a publish: instead
    of applying it again). A pipelined batch's retry is answered from the reply Redis kept under its key."""
    proxy = DropReplyProxy(redis_server.port)
    try:
        with SeedTable(f"redis://127.0.0.1:{proxy.port}/0", retries=3, backoff=0.01) as table:
            table.create_job(job_id, SPEC, initial_rows(4))
            fl = [1.0] * F
            assert table.commit_seeds(job_id, 0, 0, SEEDS, fl, 2.0, "c0") is ACCEPTED  # loads the script
            proxy.armed = True
            assert table.commit_seeds(job_id, 0, 1, SEEDS, fl, 1.0, "c1") is ACCEPTED
            assert proxy.dropped == 1
            assert table.entry(job_id, 0).version == 2

            def swap(slot, gen, seed, who):
                return SwapCommit(
                    layer=1,
                    slot=slot,
                    expected_gen=gen,
                    seed=seed,
                    slot_floats=(0.5,),
                    loss=1.0,
                    incumbent_loss=2.0,
                    evaluator_id=who,
                )

            assert table.commit_swap(job_id, swap(0, 0, 500, "s0")) is ACCEPTED
            proxy.armed = True
            assert table.commit_swap(job_id, swap(0, 1, 501, "s1")) is ACCEPTED
            assert proxy.dropped == 2
            gens = table.entry(job_id, 1).gens
            assert table.publish_floats(job_id, 1, fl, 3.0, gens, writer="p0").outcome is ACCEPTED
            proxy.armed = True
            assert table.publish_floats(job_id, 1, [2.0] * F, 3.0, gens, writer="p1").outcome is ACCEPTED
            assert proxy.dropped == 3
            e = table.entry(job_id, 1)
            assert (e.version, e.gens[0], e.floats) == (4, 2, (2.0,) * F)

            batch = [
                SeedCommit(
                    layer=layer,
                    expected_version=v + (layer == 0) * 2 + (layer == 1) * 4,
                    seeds=SEEDS,
                    floats=fl,
                    loss=0.9 - 0.1 * v,
                    evaluator_id=f"b{layer}.{v}",
                )
                for v in range(5)
                for layer in range(4)
            ]
            proxy.armed = True
            assert table.commit_seeds_many(job_id, batch) == [ACCEPTED] * 20
            assert proxy.dropped == 4
            assert table.snapshot(job_id).versions == (7, 9, 5, 5)
            proxy.armed = True
            gens = table.entry(job_id, 1).gens
            swaps = [swap(k, gens[k], 600 + k, f"m{k}") for k in (1, 2, 3)]
            assert table.commit_swaps_many(job_id, swaps) == [ACCEPTED] * 3
            assert proxy.dropped == 5
            writers = [ev.writer for ev in table.events(job_id)[4:]]
            assert len(writers) == len(set(writers)) == 2 + 2 + 2 + 20 + 3  # each exactly once
            assert table.rebuild_from_stream(job_id) == table.snapshot(job_id)
            table.delete_job(job_id)
    finally:
        proxy.close()

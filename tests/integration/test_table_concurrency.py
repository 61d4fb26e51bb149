"""Processes race commits into the same layers, each with the version or generation it read: afterwards the
table, the stream and the processes' own records of what was accepted must tell exactly the same story.

1. 8 processes offer whole-vector seed commits (compare-and-set on the row version).
2. 4 processes swap single component slots while a trainer process publishes floats in a tight loop with
   the generations it has just read: the slot-level merge of docs/layout.md, where neither side discards
   what the other had accepted.
"""

from __future__ import annotations

import multiprocessing
from collections import defaultdict

import pytest
from table_helpers import SPEC, initial_rows, offer_commits, offer_swaps, publish_loop, slot_at

from germinator_dist.records import CommitOutcome
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

PROCS, LAYERS, OFFERS = 8, 3, 800
SWAPPERS, SWAP_OFFERS, TAIL, SWAP_RANK, PUBLISHES = 4, 600, 10, 8, 500


def _run(conn, fn, *args) -> None:
    conn.send(fn(*args))
    conn.close()


def _start(ctx, fn, args: tuple) -> tuple:
    here, there = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_run, args=(there, fn, *args))
    p.start()
    return here, p


def test_concurrent_commits_lose_nothing_and_keep_the_minimum(table: SeedTable, job_id: str, redis_server):
    table.create_job(job_id, SPEC, initial_rows(LAYERS))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    started = [
        _start(ctx, offer_commits, (redis_server.url, job_id, LAYERS, OFFERS, seed, barrier))
        for seed in range(PROCS)
    ]
    results = [pipe.recv() for pipe, _ in started]
    for _, p in started:
        p.join(60)
        assert p.exitcode == 0

    accepted = [c for r in results for c in r["accepted"]]
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    assert sum(counts.values()) == PROCS * OFFERS
    # real contention happened: every outcome a seed commit can have occurred many times
    assert min(counts[o.value] for o in (CommitOutcome.ACCEPTED, CommitOutcome.STALE)) > 100, counts
    assert counts[CommitOutcome.NOT_BETTER.value] > 100, counts

    snap = table.snapshot(job_id)
    by_layer = defaultdict(list)
    for c in accepted:
        by_layer[c[0]].append(c)
    for layer in range(LAYERS):
        mine = sorted(by_layer[layer], key=lambda c: c[1])
        entry = snap.layers[layer]
        # every version 1..V was won by exactly one process: versions == number of accepted commits
        assert [c[1] for c in mine] == list(range(1, entry.version + 1))
        # each accepted commit was strictly better than the one before it, and the last one is stored
        losses = [c[4] for c in mine]
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
        assert entry.loss == min(losses) == losses[-1]
        last = mine[-1]
        assert (entry.seeds, entry.floats, entry.writer) == (last[2], last[3], last[5])
        # random 63-bit seeds change every slot every time: each generation counts the accepted commits
        assert entry.gens == (entry.version,) * len(entry.seeds)
    assert snap.epoch == len(accepted)

    # the stream holds exactly the accepted commits, in commit order, each once
    events = [ev for ev in table.events(job_id) if ev.kind == "seeds"]
    assert [ev.epoch for ev in events] == list(range(1, len(accepted) + 1))
    assert sorted((ev.layer, ev.version, ev.seeds, ev.floats, ev.loss, ev.writer) for ev in events) == sorted(
        accepted
    )
    for layer in range(LAYERS):
        assert [ev.version for ev in events if ev.layer == layer] == list(
            range(1, snap.layers[layer].version + 1)
        )
    assert table.rebuild_from_stream(job_id) == snap


def test_swaps_and_a_publishing_trainer_merge_without_losing_anything(
    table: SeedTable, job_id: str, redis_server
) -> None:
    table.create_job(job_id, SPEC, initial_rows(LAYERS, rank=SWAP_RANK, experts=1))
    table.set_state(job_id, "RUNNING")
    ctx = multiprocessing.get_context("spawn")
    barrier, done = ctx.Barrier(SWAPPERS + 1), ctx.Event()
    url = redis_server.url
    trainer = _start(ctx, publish_loop, (url, job_id, LAYERS, PUBLISHES, 99, barrier, done))
    swappers = [
        _start(ctx, offer_swaps, (url, job_id, LAYERS, SWAP_OFFERS, seed, barrier, done, TAIL))
        for seed in range(SWAPPERS)
    ]
    results = [pipe.recv() for pipe, _ in swappers]
    publishes = trainer[0].recv()
    for _, p in [*swappers, trainer]:
        p.join(60)
        assert p.exitcode == 0

    swaps = {s[0]: s for r in results for s in r["accepted"]}  # writer -> (writer, layer, slot, seed, floats)
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    assert sum(counts.values()) == SWAPPERS * (SWAP_OFFERS + TAIL)
    assert all(counts[o.value] > 20 for o in CommitOutcome), counts  # every outcome, many times
    # no layer seed changes here, so every publish is accepted; some had to keep a slot swapped meanwhile
    assert {p[3] for p in publishes} == {CommitOutcome.ACCEPTED.value}
    assert sum(bool(p[4]) for p in publishes) >= 5, publishes
    published = {p[0]: p for p in publishes}

    events = table.events(job_id)[LAYERS:]  # after the init rows
    swap_events = [ev for ev in events if ev.kind == "swap"]
    # no accepted change lost: the stream holds each accepted swap and publish once, and the epoch counts them
    assert len(swap_events) == len(swaps) == counts[CommitOutcome.ACCEPTED.value]
    assert sorted(ev.writer for ev in swap_events) == sorted(swaps)
    assert sorted(ev.writer for ev in events if ev.kind == "floats") == sorted(published)
    assert [ev.epoch for ev in events] == list(range(1, len(events) + 1))
    snap = table.snapshot(job_id)
    assert snap.epoch == len(swaps) + len(published) == sum(snap.versions)
    for ev in swap_events:
        _, layer, slot, seed, floats = swaps[ev.writer]
        assert (ev.layer, ev.slot, ev.seed, ev.floats) == (layer, slot, seed, floats)
    for ev in events:
        if ev.kind == "floats":
            assert ev.kept == published[ev.writer][4]

    # the table equals its stream replayed, and its export says the same
    assert table.rebuild_from_stream(job_id) == snap
    doc = table.export(job_id)
    assert [(r["seeds"], r["gens"], r["floats"]) for r in doc["layers"]] == [
        (list(e.seeds), list(e.gens), list(e.floats)) for e in snap.layers
    ]

    # each slot holds what its last writer sent, per the writers' own records (the stream gives the order)
    seen = defaultdict(int)
    for layer, entry in enumerate(snap.layers):
        mine = [ev for ev in events if ev.layer == layer]
        last_publish = max(i for i, ev in enumerate(mine) if ev.kind == "floats")
        trainer_floats = published[mine[last_publish].writer][2]
        assert entry.floats[:2] == trainer_floats[:2]  # alpha and beta are the trainer's
        for slot in range(SWAP_RANK):
            at = slot_at(SWAP_RANK, len(entry.floats), slot)
            held = [entry.floats[i] for i in at]
            swapped = [i for i, ev in enumerate(mine) if ev.kind == "swap" and ev.slot == slot]
            assert entry.gens[slot] == len(swapped)
            last_writer = None
            for ev in mine:
                if ev.kind == "swap" and ev.slot == slot:
                    last_writer = list(swaps[ev.writer][4])
                elif ev.kind == "floats" and slot not in ev.kept:
                    last_writer = [published[ev.writer][2][i] for i in at]
            assert held == last_writer
            if not swapped:
                seen["never swapped"] += 1
                assert held == [trainer_floats[i] for i in at]  # the trainer's latest accepted floats
            elif swapped[-1] > last_publish:
                seen["swapped after the last publish"] += 1
                assert held == list(swaps[mine[swapped[-1]].writer][4])  # the swap's floats
            if swapped:
                assert entry.seeds[slot] == swaps[mine[swapped[-1]].writer][3]
    assert seen["never swapped"] == 2 * LAYERS and seen["swapped after the last publish"] > 3, seen

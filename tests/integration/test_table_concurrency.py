"""8 processes race random commits into the same 3 layers, each with the version it read: afterwards the
table, the stream and the processes' own records of what was accepted must tell exactly the same story."""

from __future__ import annotations

import multiprocessing
from collections import defaultdict

import pytest
from table_helpers import SPEC, initial_rows, offer_commits

from germinator_dist.records import N_SEEDS
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

PROCS, LAYERS, OFFERS = 8, 3, 1500


def _run(conn, *args) -> None:
    conn.send(offer_commits(*args))
    conn.close()


def test_concurrent_commits_lose_nothing_and_keep_the_minimum(table: SeedTable, job_id: str, redis_server):
    table.create_job(job_id, SPEC, initial_rows(LAYERS, 4))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    pipes, procs = [], []
    for seed in range(PROCS):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_run, args=(there, redis_server.url, job_id, LAYERS, OFFERS, seed, barrier))
        p.start()
        pipes.append(here)
        procs.append(p)
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    accepted = [c for r in results for c in r["accepted"]]
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    assert sum(counts.values()) == PROCS * OFFERS
    # real contention happened: every outcome occurred many times
    assert min(counts.values()) > 100, counts

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
    assert all(len(ev.seeds) == N_SEEDS for ev in events)
    assert table.rebuild_from_stream(job_id) == snap

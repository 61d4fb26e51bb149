"""Commit semantics of the seed table against a real redis-server: compare-and-set on the layer version,
strictly-lower loss, the trainer's float path, pipelined commits, and exactly-once answers to retries."""

from __future__ import annotations

import math

import pytest
from table_helpers import SPEC, DropReplyProxy, f32, initial_rows

from germinator_dist.errors import TableError
from germinator_dist.records import CommitOutcome, JobState, SeedCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

ACCEPTED, STALE, NOT_BETTER = CommitOutcome.ACCEPTED, CommitOutcome.STALE, CommitOutcome.NOT_BETTER
SEEDS = [11, 12, 13, 14, 15, 16, 17, 18]


def test_create_gives_version_zero_rows_and_an_init_stream(table: SeedTable, job_id: str) -> None:
    info = table.create_job(job_id, SPEC, initial_rows(3, 5), desired_workers=4)
    assert (info.state, info.n_layers, info.epoch, info.desired_workers) == (JobState.PENDING, 3, 0, 4)
    snap = table.snapshot(job_id)
    assert snap.epoch == 0 and snap.versions == (0, 0, 0)
    assert [e.loss for e in snap.layers] == [math.inf] * 3
    assert snap.layers[2].seeds == tuple(range(2, 10)) and snap.layers[2].floats == (1.0,) * 5
    assert [(e.kind, e.layer, e.version) for e in table.events(job_id)] == [("init", i, 0) for i in range(3)]
    assert table.get_spec(job_id) == SPEC


def test_commit_is_compare_and_set_on_version_and_strictly_lower_loss(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2, 3))
    floats = (0.5, -1.25, 2.0)
    assert table.commit_seeds(job_id, 0, 0, SEEDS, floats, 0.75, "w1") is ACCEPTED
    assert table.commit_seeds(job_id, 0, 0, SEEDS, floats, 0.10, "w2") is STALE  # version moved on
    assert table.commit_seeds(job_id, 0, 1, SEEDS, floats, 0.75, "w2") is NOT_BETTER  # equal is not lower
    assert table.commit_seeds(job_id, 0, 1, SEEDS, floats, 0.90, "w2") is NOT_BETTER
    assert table.commit_seeds(job_id, 0, 1, [1] * 8, floats, 0.5, "w3") is ACCEPTED
    e = table.entry(job_id, 0)
    assert (e.seeds, e.floats, e.loss, e.version, e.writer) == ((1,) * 8, floats, 0.5, 2, "w3")
    snap = table.snapshot(job_id)
    assert snap.epoch == 2 and snap.versions == (2, 0)  # the other layer is untouched
    seeds_events = [ev for ev in table.events(job_id) if ev.kind == "seeds"]
    assert [(ev.layer, ev.version, ev.epoch, ev.loss, ev.writer) for ev in seeds_events] == [
        (0, 1, 1, 0.75, "w1"),
        (0, 2, 2, 0.5, "w3"),
    ]


def test_floats_are_stored_as_float32(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1, 3))
    table.commit_seeds(job_id, 0, 0, SEEDS, [0.1, 1e-3, 3.0], 1.0)
    assert table.entry(job_id, 0).floats == f32([0.1, 1e-3, 3.0])


def test_publish_floats_keeps_seeds_and_checks_only_the_version(table: SeedTable, job_id: str) -> None:
    """The trainer re-measures the same seeds with new floats: its loss replaces the stored one even when
    higher (the old loss was measured with other floats); only a moved version refuses it."""
    table.create_job(job_id, SPEC, initial_rows(1, 3))
    table.commit_seeds(job_id, 0, 0, SEEDS, [1, 1, 1], 0.5, "driver")
    assert table.publish_floats(job_id, 0, 0, [2, 2, 2], 0.4) is STALE
    assert table.publish_floats(job_id, 0, 1, [2, 2, 2], 0.6) is ACCEPTED
    e = table.entry(job_id, 0)
    assert (e.seeds, e.floats, e.loss, e.version, e.writer) == (tuple(SEEDS), (2.0,) * 3, 0.6, 2, "trainer")
    assert table.publish_floats(job_id, 0, 2, [3, 3, 3], 0.7, require_lower=True) is NOT_BETTER
    assert table.publish_floats(job_id, 0, 2, [3, 3, 3], 0.3, writer="t2", require_lower=True) is ACCEPTED
    # a seed commit must now beat the trainer's loss
    assert table.commit_seeds(job_id, 0, 3, [5] * 8, [1, 1, 1], 0.35) is NOT_BETTER
    last = table.events(job_id)[-1]
    assert (last.kind, last.seeds, last.floats, last.version, last.epoch) == (
        "floats",
        None,
        (3.0,) * 3,
        3,
        3,
    )
    assert table.rebuild_from_stream(job_id) == table.snapshot(job_id)


def test_publish_on_an_unmeasured_row_accepts_any_finite_loss(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1, 2))
    assert table.publish_floats(job_id, 0, 0, [0.5, 0.5], 12.0, require_lower=True) is ACCEPTED


def test_commit_seeds_many_runs_in_order_each_atomic(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2, 2))
    commits = [
        SeedCommit(layer=0, expected_version=0, seeds=SEEDS, floats=(1, 2), loss=0.9, evaluator_id="a"),
        SeedCommit(layer=0, expected_version=1, seeds=SEEDS, floats=(1, 2), loss=0.8, evaluator_id="b"),
        SeedCommit(layer=0, expected_version=1, seeds=SEEDS, floats=(1, 2), loss=0.1, evaluator_id="c"),
        SeedCommit(layer=0, expected_version=2, seeds=SEEDS, floats=(1, 2), loss=0.8, evaluator_id="d"),
        SeedCommit(layer=1, expected_version=0, seeds=SEEDS, floats=(3, 4), loss=5.0, evaluator_id="e"),
    ]
    assert table.commit_seeds_many(job_id, commits) == [ACCEPTED, ACCEPTED, STALE, NOT_BETTER, ACCEPTED]
    assert table.snapshot(job_id).versions == (2, 1)
    assert [ev.writer for ev in table.events(job_id) if ev.kind == "seeds"] == ["a", "b", "e"]
    assert table.commit_seeds_many(job_id, []) == []


def test_writes_are_refused_once_the_job_is_finished(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1, 2))
    table.set_state(job_id, JobState.RUNNING)
    table.commit_seeds(job_id, 0, 0, SEEDS, [1, 2], 1.0)
    table.set_state(job_id, JobState.CANCELLED)
    before = table.snapshot(job_id)
    with pytest.raises(TableError, match="CANCELLED"):
        table.commit_seeds(job_id, 0, 1, SEEDS, [1, 2], 0.5)
    with pytest.raises(TableError, match="CANCELLED"):
        table.publish_floats(job_id, 0, 1, [1, 2], 0.5)
    assert table.snapshot(job_id) == before
    table.set_state(job_id, JobState.RUNNING)  # resume
    assert table.commit_seeds(job_id, 0, 1, SEEDS, [1, 2], 0.5) is ACCEPTED


def test_a_retried_commit_whose_reply_was_lost_is_answered_not_applied_twice(
    redis_server, job_id: str
) -> None:
    """A proxy lets the commit reach Redis and then cuts the connection before the reply: the client's
    retry finds its own token in the row and answers ACCEPTED instead of a false STALE. Then the same for a
    pipelined batch, whose retry is answered from the reply Redis kept under the batch's key."""
    proxy = DropReplyProxy(redis_server.port)
    try:
        with SeedTable(f"redis://127.0.0.1:{proxy.port}/0", retries=3, backoff=0.01) as table:
            table.create_job(job_id, SPEC, initial_rows(4, 2))
            assert table.commit_seeds(job_id, 0, 0, SEEDS, [1, 1], 2.0) is ACCEPTED  # loads the script
            proxy.armed = True
            assert table.commit_seeds(job_id, 0, 1, SEEDS, [1, 1], 1.0) is ACCEPTED
            assert proxy.dropped == 1
            assert table.entry(job_id, 0).version == 2
            assert len([ev for ev in table.events(job_id) if ev.kind == "seeds"]) == 2

            batch = [
                SeedCommit(
                    layer=layer,
                    expected_version=v + (layer == 0) * 2,
                    seeds=SEEDS,
                    floats=(0, 0),
                    loss=0.9 - 0.1 * v,
                    evaluator_id=f"b{layer}.{v}",
                )
                for v in range(5)
                for layer in range(4)
            ]
            proxy.armed = True
            assert table.commit_seeds_many(job_id, batch) == [ACCEPTED] * 20
            assert proxy.dropped == 2
            assert table.snapshot(job_id).versions == (7, 5, 5, 5)
            writers = [ev.writer for ev in table.events(job_id) if ev.kind == "seeds"][2:]
            assert sorted(writers) == sorted(c.evaluator_id for c in batch)  # each exactly once
            assert table.rebuild_from_stream(job_id) == table.snapshot(job_id)
            table.delete_job(job_id)
    finally:
        proxy.close()

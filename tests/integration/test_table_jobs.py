"""The job registry of the seed table against a real redis-server: create / resume / list / delete, state
transitions, desired workers, heartbeats with a TTL, and the driver's progress counters."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from table_helpers import SPEC, initial_rows

from germinator_dist.errors import JobNotFound, SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState
from germinator_dist.table import SeedTable
from germinator_dist.table.codec import TRANSITIONS

pytestmark = pytest.mark.integration

P, R, S, F, C = (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
PATH_TO = {P: [], R: [R], S: [R, S], F: [R, F], C: [C]}
SEEDS, FL = (1, 2, 3, 4, 1, 1, 1, 1), (1.0,) * 6


def test_create_refuses_an_existing_id_unless_resuming(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2), desired_workers=2)
    seeds = (7, 8, 9, 10, 7, 7, 7, 7)
    table.commit_seeds(job_id, 1, 0, seeds, [1.0] * 6, 0.5)
    with pytest.raises(TableError, match="already exists"):
        table.create_job(job_id, SPEC, initial_rows(2))
    # resume keeps the stored table, updates desired_workers; the spec may differ in formatting only
    same_spec = json.dumps(json.loads(SPEC), indent=2)
    info = table.create_job(job_id, same_spec, initial_rows(2), desired_workers=5, resume=True)
    assert (info.epoch, info.desired_workers) == (1, 5)
    assert table.entry(job_id, 1).seeds == seeds
    with pytest.raises(TableError, match="different spec"):
        table.create_job(job_id, json.dumps({"other": 1}), initial_rows(2), resume=True)
    # each layer's rank (its seed count) and float count must match the stored ones
    with pytest.raises(TableError, match="layer 0 of rank 5 and 7 floats, the table has rank 4 and 6"):
        table.create_job(job_id, SPEC, initial_rows(2, rank=5), resume=True)
    with pytest.raises(TableError, match="layer 0 of rank 4 and 10 floats, the table has rank 4 and 6"):
        table.create_job(job_id, SPEC, initial_rows(2, experts=1), resume=True)
    with pytest.raises(TableError, match="resume with 3 layers, the table has 2"):
        table.create_job(job_id, SPEC, initial_rows(3), resume=True)
    assert table.job_info(job_id).desired_workers == 5  # a refused resume changed nothing


def test_a_registered_job_gets_its_rows_once_from_its_lease_holder(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, (), seed_bits=16, lease=("runner-a", 30.0))
    info = table.job_info(job_id)
    assert (info.state, info.n_layers, info.seed_bits) == (JobState.PENDING, 0, 16)
    assert table.snapshot(job_id).layers == () and table.events(job_id) == []
    resolved = json.dumps({**json.loads(SPEC), "resolved": True})
    with pytest.raises(TableError, match="'runner-b' does not hold it"):
        table.init_rows(job_id, "runner-b", resolved, initial_rows(2))
    with pytest.raises(SpecError, match=r"layers\[0\].seeds"):  # the stored seed width (16 bits) holds
        wide = [e.model_copy(update={"seeds": (1 << 20, *e.seeds[1:])}) for e in initial_rows(2)]
        table.init_rows(job_id, "runner-a", resolved, wide)
    assert table.job_info(job_id).n_layers == 0  # refused: nothing written
    assert table.init_rows(job_id, "runner-a", resolved, initial_rows(2)) is True
    assert json.loads(table.get_spec(job_id)) == json.loads(resolved)
    snap = table.snapshot(job_id)
    assert len(snap.layers) == 2 and [e.version for e in snap.layers] == [0, 0]
    assert [(e.kind, e.layer) for e in table.events(job_id)] == [("init", 0), ("init", 1)]
    # once: a resumed runner keeps the rows (and whatever was committed since)
    table.commit_seeds(job_id, 1, 0, SEEDS, FL, 0.5)
    assert table.init_rows(job_id, "runner-a", SPEC, initial_rows(2)) is False
    assert table.entry(job_id, 1).seeds == SEEDS and json.loads(table.get_spec(job_id)) == json.loads(
        resolved
    )


def test_a_guarded_delete_removes_only_its_owners_job(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, (), lease=("runner-a", 30.0))
    assert table.delete_job(job_id, owner="runner-b") is False
    assert table.delete_job(job_id, owner="runner-b", unheld=True) is False  # held by runner-a
    assert table.job_info(job_id).state == JobState.PENDING
    table.release_lease(job_id, "runner-a")
    assert table.delete_job(job_id, owner="runner-b") is False  # unheld, but not allowed
    assert table.delete_job(job_id, owner="runner-b", unheld=True) is True
    with pytest.raises(JobNotFound):
        table.job_info(job_id)
    table.create_job(job_id, SPEC, initial_rows(2), lease=("runner-a", 30.0))
    assert table.delete_job(job_id, owner="runner-a") is True
    assert not list(table._conn.client.scan_iter(match=f"germ:{{{job_id}}}:*"))


def test_a_finished_job_gets_no_initial_rows(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, (), lease=("runner-a", 30.0))
    table.set_state(job_id, JobState.CANCELLED)
    with pytest.raises(TableError, match="CANCELLED; its initial rows were not written"):
        table.init_rows(job_id, "runner-a", SPEC, initial_rows(2))
    assert table.job_info(job_id).n_layers == 0


def test_resume_of_a_missing_job_creates_it(table: SeedTable, job_id: str) -> None:
    assert table.create_job(job_id, SPEC, initial_rows(1), resume=True).epoch == 0


def test_list_and_delete(table: SeedTable, job_id: str) -> None:
    other = job_id + "-b"
    table.create_job(job_id, SPEC, initial_rows(2))
    table.create_job(other, SPEC, initial_rows(3), seed_bits=16)
    try:
        mine = {i.job: i for i in table.list_jobs() if i.job in (job_id, other)}
        assert (mine[job_id].n_layers, mine[other].n_layers, mine[other].seed_bits) == (2, 3, 16)
        assert table.job_info(other) == mine[other]
    finally:
        assert table.delete_job(other) is True
    assert table.delete_job(other) is False
    assert other not in [i.job for i in table.list_jobs()]
    with pytest.raises(JobNotFound):
        table.snapshot(other)
    with pytest.raises(JobNotFound):
        table.commit_seeds(other, 0, 0, SEEDS, FL, 1.0)


def test_delete_sweeps_junk_under_the_prefix(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    raw = redis_server.client()
    raw.set(f"germ:{{{job_id}}}:junk", "x")
    raw.hset(f"germ:{{{job_id}}}:layer:9", "a", "b")
    table.delete_job(job_id)
    assert list(raw.scan_iter(match=f"germ:{{{job_id}}}:*")) == []


@pytest.mark.parametrize("start,target", list(itertools.product(PATH_TO, JobState)))
def test_state_transitions(table: SeedTable, job_id: str, start: JobState, target: JobState) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    for step in PATH_TO[start]:
        table.set_state(job_id, step)
    assert table.get_state(job_id) is start
    if target == start or target in TRANSITIONS[start]:
        assert table.set_state(job_id, target) is start
        assert table.get_state(job_id) is target
    else:
        with pytest.raises(TableError, match=f"illegal state transition {start.value} -> {target.value}"):
            table.set_state(job_id, target)
        assert table.get_state(job_id) is start


def test_set_state_compare_and_set_and_resume(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    assert table.set_state(job_id, "RUNNING", expected="PENDING") is P
    with pytest.raises(TableError, match="expected PENDING"):
        table.set_state(job_id, R, expected=P)  # a second driver loses the race
    table.set_state(job_id, F)
    with pytest.raises(TableError, match="FAILED"):
        table.commit_seeds(job_id, 0, 0, SEEDS, FL, 1.0)
    table.set_state(job_id, R)  # resume from FAILED
    assert table.commit_seeds(job_id, 0, 0, SEEDS, FL, 1.0) is CommitOutcome.ACCEPTED
    with pytest.raises(SpecError, match="state"):
        table.set_state(job_id, "DONE")


def test_desired_workers(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1), desired_workers=3)
    assert table.desired_workers(job_id) == 3
    table.set_desired_workers(job_id, 0)
    assert table.desired_workers(job_id) == 0
    with pytest.raises(SpecError):
        table.set_desired_workers(job_id, -1)
    with pytest.raises(JobNotFound):
        table.set_desired_workers(job_id + "-nope", 2)


def test_heartbeats_expire_after_their_ttl(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    table.heartbeat(job_id, "worker", "w-1", ttl=0.6)
    table.heartbeat(job_id, "worker", "w-2@node-b", ttl=30)
    table.heartbeat(job_id, "driver", "driver", ttl=30, payload={"pid": 4242, "host": "head-0"})
    live = table.live(job_id, "worker")
    assert [h.id for h in live] == ["w-1", "w-2@node-b"]
    assert 0 < live[0].expires_in <= 0.6 and 29 < live[1].expires_in <= 30
    (driver,) = table.live(job_id, "driver")
    assert driver.payload == {"pid": 4242, "host": "head-0"}
    assert table.live(job_id, "trainer") == []
    time.sleep(0.8)
    assert [h.id for h in table.live(job_id, "worker")] == ["w-2@node-b"]
    table.heartbeat(job_id, "worker", "w-3", ttl=30)  # prunes the expired member from Redis too
    raw = redis_server.client()
    assert sorted(raw.zrange(f"germ:{{{job_id}}}:hb:worker", 0, -1)) == [b"w-2@node-b", b"w-3"]
    assert sorted(raw.hkeys(f"germ:{{{job_id}}}:hbdata:worker")) == [b"w-2@node-b", b"w-3"]
    table.heartbeat(job_id, "worker", "w-1", ttl=30)  # a worker that comes back is live again
    table.drop_heartbeat(job_id, "worker", "w-2@node-b")
    assert [h.id for h in table.live(job_id, "worker")] == ["w-1", "w-3"]


def test_heartbeat_arguments_are_checked(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    with pytest.raises(SpecError, match="role"):
        table.heartbeat(job_id, "boss", "x")
    with pytest.raises(SpecError, match="heartbeat id"):
        table.heartbeat(job_id, "worker", "bad id")
    with pytest.raises(SpecError, match="ttl"):
        table.heartbeat(job_id, "worker", "w", ttl=0)
    with pytest.raises(SpecError, match="payload"):
        table.heartbeat(job_id, "worker", "w", payload={"nested": {"a": 1}})
    with pytest.raises(SpecError, match="payload"):
        table.heartbeat(job_id, "worker", "w", payload={"blob": "x" * 5000})
    with pytest.raises(JobNotFound):
        table.heartbeat(job_id + "-nope", "worker", "w")


def test_progress_counters_add_up_and_gauges_are_set(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    assert table.progress(job_id).evaluations == 0 and table.progress(job_id).updated == 0.0
    table.update_progress(job_id, evaluations=100, accepted=3, stale=7, not_better=90, evals_per_s=12.5)
    table.update_progress(job_id, evaluations=50, stale=1, workers_live=4)
    p = table.progress(job_id)
    assert (p.evaluations, p.accepted, p.stale, p.not_better) == (150, 3, 8, 90)
    assert (p.evals_per_s, p.workers_live) == (12.5, 4) and p.updated > 0
    with pytest.raises(SpecError):
        table.update_progress(job_id, evaluations=-1)
    with pytest.raises(SpecError):
        table.update_progress(job_id, evals_per_s=float("nan"))
    with pytest.raises(JobNotFound):
        table.progress(job_id + "-nope")


def test_named_documents_live_with_the_job(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    assert table.get_doc(job_id, "proposer:0") is None
    state = json.dumps({"population": [[1, 2, 3]], "sigma": 0.5})
    table.put_doc(job_id, "proposer:0", state)
    table.put_doc(job_id, "submission", '{"id": "s-1"}')
    assert table.get_doc(job_id, "proposer:0") == state
    assert "docs" not in json.dumps(table.export(job_id))  # not part of the checkpoint
    with pytest.raises(SpecError, match="not JSON"):
        table.put_doc(job_id, "proposer:0", "{'python': 'repr'}")
    with pytest.raises(SpecError, match="doc name"):
        table.put_doc(job_id, "bad name", "{}")
    with pytest.raises(JobNotFound):
        table.put_doc(job_id + "-nope", "x", "{}")
    table.delete_job(job_id)
    assert list(redis_server.client().scan_iter(match=f"germ:{{{job_id}}}:*")) == []


def test_a_document_that_is_not_json_is_reported(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    redis_server.client().hset(f"germ:{{{job_id}}}:docs", "proposer:1", b"\x80\x04pickle")
    with pytest.raises(TableError, match=r"docs.*proposer:1"):
        table.get_doc(job_id, "proposer:1")

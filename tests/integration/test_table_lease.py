"""The driver lease, the per-job registry listing and scaling against a real redis-server: one claim wins
among racing processes, a held lease is refused naming its owner, an expired one (or one whose holder is
named as ended) is taken over, the holder's last state change and its release are one step; a listing
with a malformed job lists the others; scaling respects the spec's bounds and the job's state."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from table_helpers import SPEC, initial_rows

from germinator_dist.errors import JobBusy, JobNotFound, SpecError, TableError
from germinator_dist.records import BrokenJob, JobState
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration
ALL = ("PENDING", "RUNNING", "FAILED", "CANCELLED")


def _claim(url: str, job: str, owner: str, start, out) -> None:
    with SeedTable(url) as t:
        start.wait()
        try:
            t.claim_lease(job, owner, 30, states=ALL, to_state="RUNNING")
            out.put((owner, "won"))
        except JobBusy as exc:
            out.put((owner, str(exc)))


def test_one_of_many_racing_claims_wins(table: SeedTable, job_id: str, redis_server) -> None:
    table.create_job(job_id, SPEC, initial_rows(1))
    table.set_state(job_id, JobState.CANCELLED)
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_claim, args=(redis_server.url, job_id, f"owner-{i}", start, out))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(10)
    winners = [o for o, r in results.items() if r == "won"]
    assert len(winners) == 1, results
    held = table.lease(job_id)
    assert held is not None and held.owner == winners[0] and 29 < held.expires_in <= 30
    for o, r in results.items():
        if o != winners[0]:
            assert f"already has a driver: {winners[0]} holds its lease" in r
    assert table.get_state(job_id) is JobState.RUNNING


def test_claim_renew_take_over_and_release(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1), lease=("submit-1", 30))
    held = table.lease(job_id)
    assert held is not None and held.owner == "submit-1" and not held.expired
    with pytest.raises(JobBusy, match="submit-1 holds its lease"):
        table.claim_lease(job_id, "other", 5)
    # the holder's runner takes it over (same owner) and moves PENDING -> RUNNING in the same step
    assert table.claim_lease(job_id, "submit-1", 0.3, to_state="RUNNING") is JobState.PENDING
    assert table.lease(job_id).since == held.since  # the same owner's lease: renewed, not new
    assert table.get_state(job_id) is JobState.RUNNING
    assert table.renew_lease(job_id, "submit-1", 0.3) is True
    assert table.renew_lease(job_id, "other", 0.3) is False
    # a holder that Ray says has ended can be replaced at once when named; a third party cannot
    with pytest.raises(JobBusy):
        table.claim_lease(job_id, "resume-2", 5, take_from="someone-else")
    table.claim_lease(job_id, "resume-2", 0.2, take_from="submit-1")
    assert table.renew_lease(job_id, "submit-1", 5) is False  # the old holder learns it lost the job
    assert table.release_lease(job_id, "submit-1", final=JobState.FAILED) is False
    assert table.get_state(job_id) is JobState.RUNNING  # a driver without the lease cannot end the job
    time.sleep(0.3)
    assert table.lease(job_id).expired
    table.claim_lease(job_id, "resume-3", 5)  # an expired lease is free
    assert table.release_lease(job_id, "resume-3", final=JobState.SUCCEEDED) is True
    assert table.lease(job_id) is None and table.get_state(job_id) is JobState.SUCCEEDED
    with pytest.raises(TableError, match="is SUCCEEDED; a driver may claim it only while"):
        table.claim_lease(job_id, "resume-4", 5, states=ALL, to_state="RUNNING")
    assert table.lease(job_id) is None
    with pytest.raises(JobNotFound):
        table.claim_lease(job_id + "-nope", "x", 5)
    with pytest.raises(SpecError):
        table.claim_lease(job_id, "bad owner", 5)


def test_listing_marks_a_malformed_job_and_lists_the_others(table: SeedTable, job_id: str, redis_server):
    bad = job_id + "-bad"
    table.create_job(job_id, SPEC, initial_rows(1))
    table.create_job(bad, SPEC, initial_rows(1))
    try:
        redis_server.client().hset(f"germ:{{{bad}}}:meta", "epoch", "junk")
        with pytest.raises(TableError, match="epoch"):
            table.list_jobs()
        rows = {r.job: r for r in table.list_jobs(each=True) if r.job in (job_id, bad)}
        assert rows[job_id].state is JobState.PENDING
        assert isinstance(rows[bad], BrokenJob) and "epoch" in rows[bad].error and "junk" in rows[bad].error
    finally:
        table.delete_job(bad)


def test_scale_respects_bounds_and_state(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(1), desired_workers=2)
    table.scale_workers(job_id, 4, 1, 4)
    with pytest.raises(SpecError, match=r"5 is outside the job's \[workers.min, workers.max\] = \[1, 4\]"):
        table.scale_workers(job_id, 5, 1, 4)
    with pytest.raises(SpecError):
        table.scale_workers(job_id, 0, 1, 4)
    table.set_state(job_id, JobState.RUNNING)
    table.set_state(job_id, JobState.SUCCEEDED)
    with pytest.raises(TableError, match=f"job {job_id} is SUCCEEDED; only a PENDING or RUNNING job"):
        table.scale_workers(job_id, 3, 1, 4)
    assert table.desired_workers(job_id) == 4

"""``submit``'s wait for the runner's initial rows against a real Redis (service/operations._await_rows):
rows written -> done; the job cancelled meanwhile -> kept, done; the runner's recorded error -> raised as
the error it was (a SpecError stays one); and the undo that follows deletes only this submission's job."""

from __future__ import annotations

import threading
import time

import pytest
from table_helpers import SPEC, initial_rows

from germinator_dist.errors import GerminatorError, SpecError
from germinator_dist.records import JobState
from germinator_dist.search.job_errors import record_error
from germinator_dist.service import operations as service

pytestmark = pytest.mark.integration


def ep(redis_server):
    return service.resolve(redis_server.url, "http://127.0.0.1:1")


def test_the_wait_ends_when_the_runner_writes_the_rows(table, job_id, redis_server):
    table.create_job(job_id, SPEC, (), lease=("sub-1", 30.0))
    threading.Timer(0.5, lambda: table.init_rows(job_id, "sub-1", SPEC, initial_rows(2))).start()
    t0 = time.monotonic()
    assert service._await_rows(table, None, ep(redis_server), job_id, "sub-1", wait_s=30) is True
    assert 0.4 < time.monotonic() - t0 < 10  # after the rows, long before the wait ran out


def test_the_wait_gives_up_without_touching_the_job(table, job_id, redis_server):
    table.create_job(job_id, SPEC, (), lease=("sub-1", 30.0))
    assert service._await_rows(table, None, ep(redis_server), job_id, "sub-1", wait_s=0.5) is False
    assert table.job_info(job_id).state == JobState.PENDING


def test_a_job_cancelled_during_the_wait_is_kept(table, job_id, redis_server, capsys):
    table.create_job(job_id, SPEC, (), lease=("sub-1", 30.0))
    table.set_state(job_id, JobState.CANCELLED)
    assert service._await_rows(table, None, ep(redis_server), job_id, "sub-1", wait_s=5) is True
    assert "cancelled before its runner wrote the initial rows" in capsys.readouterr().err
    assert table.job_info(job_id).state == JobState.CANCELLED


def test_the_runners_recorded_error_is_raised_as_it_was(table, job_id, redis_server):
    table.create_job(job_id, SPEC, (), lease=("sub-1", 30.0))
    table.set_state(job_id, JobState.RUNNING)
    record_error(table, job_id, "data.path: no such file '/nowhere.npz'", "sub-1", "SpecError")
    table.release_lease(job_id, "sub-1", final=JobState.FAILED)
    with pytest.raises(SpecError, match=r"^data.path: no such file '/nowhere.npz'$"):
        service._await_rows(table, None, ep(redis_server), job_id, "sub-1", wait_s=5)
    record_error(table, job_id, "RuntimeError: out of memory", "sub-1", "RuntimeError")
    with pytest.raises(
        GerminatorError, match=r"its runner failed as it started: RuntimeError: out of memory"
    ):
        service._await_rows(table, None, ep(redis_server), job_id, "sub-1", wait_s=5)


def test_the_undo_deletes_only_this_submissions_job(table, job_id, redis_server):
    class NoRay:  # the Ray job was never taken: stop_job has nothing to stop
        request_timeout = 1.0

        def stop_job(self, sid):
            raise RuntimeError("unknown")

    table.create_job(job_id, SPEC, (), lease=("someone-else", 30.0))
    service._undo_submit(table, NoRay(), job_id, "sub-1")  # e.g. a resume holds it now
    assert table.job_info(job_id).state == JobState.PENDING
    table.release_lease(job_id, "someone-else")
    service._undo_submit(table, NoRay(), job_id, "sub-1")  # unheld, and not started by sub-1
    assert table.job_info(job_id).state == JobState.PENDING
    table.put_doc(job_id, "submission", '{"id": "sub-1", "address": "http://127.0.0.1:1"}')
    service._undo_submit(table, NoRay(), job_id, "sub-1")  # unheld, started by sub-1: its runner failed
    assert job_id not in {j.job for j in table.list_jobs()}

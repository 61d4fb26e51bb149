"""One driver per job, through the CLI against real Redis and Ray: racing resumes and a submit+resume race
end with exactly one runner; a submit that is interrupted or whose Ray answer never comes leaves nothing.

A dead driver seen at once (kill -9, resume within a second): test_cli.test_resume_after_driver_kill_9.
"""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest
from test_cli import CLI, ROOT, cleanup, wait_for, write_spec

from germinator_dist.service import operations as service
from germinator_dist.table import SeedTable


def ray_runners(dashboard: str, job: str) -> list[str]:
    """The Ray jobs of ``job``'s runners that have not ended."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(dashboard).list_jobs()
    prefix = f"germ-{job}-"
    mine = [j for j in jobs if (j.submission_id or "").startswith(prefix)]
    return [j.submission_id for j in mine if not j.status.is_terminal()]


def driver_running(job: str, conn: list[str]) -> bool:
    """Whether status says the job's driver runs (asked in this process: no CLI start-up per poll)."""
    with SeedTable(conn[1]) as t:
        return service.status(t, job, service.resolve(conn[1], conn[3]))["driver"] == "running"


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        out.append((p.returncode, so, se))
    return out


def test_racing_resumes_and_submit_resume_leave_one_runner(tmp_path, ray_cluster, redis_server) -> None:
    conn = ["--redis", redis_server.url, "--address", ray_cluster.dashboard_url]
    job = "t-one-driver-" + os.urandom(3).hex()
    spec = write_spec(tmp_path, search={"budget_evals": 10**7})
    try:
        # submit and resumes racing it: the job was created with its lease, so every resume is refused
        sub = start_cli("submit", str(spec), "--job", job, *conn)
        with SeedTable(redis_server.url) as t:
            wait_for(lambda: job in {j.job for j in t.list_jobs()}, 60, "the job to be created")
        results = finish([start_cli("resume", job, *conn) for _ in range(3)] + [sub])
        assert results[-1][0] == 0, results[-1]
        for rc, _, err in results[:-1]:
            assert rc != 0 and len(err.strip().splitlines()) == 1, err
            assert f"job {job} already has a driver: germ-{job}-" in err, err
        wait_for(lambda: driver_running(job, conn), 120, "the runner to start")
        # cancel, then resumes racing each other: exactly one wins
        with SeedTable(redis_server.url) as t:
            service.cancel(t, service.resolve(*conn[1::2]), job)  # what `cancel` runs
            # the cancelled driver's last heartbeat lives a few seconds more: let it expire, so that
            # "running" below is the resumed driver's (a resume can be faster than that heartbeat's TTL)
            wait_for(lambda: not t.live(job, "driver"), 30, "the cancelled driver's heartbeat to expire")
        results = finish([start_cli("resume", job, *conn) for _ in range(4)])
        assert sorted(rc == 0 for rc, _, _ in results) == [False, False, False, True], results
        for rc, _, err in results:
            assert rc == 0 or "already has a driver" in err, err
        wait_for(lambda: driver_running(job, conn), 120, "the resumed runner to start")
        time.sleep(2)  # a second runner, had one started, would be up by now
        assert len(ray_runners(ray_cluster.dashboard_url, job)) == 1
        with SeedTable(redis_server.url) as t:
            assert len(t.live(job, "driver")) == 1
    finally:
        with SeedTable(redis_server.url) as t:
            service.cancel(t, service.resolve(*conn[1::2]), job, grace_s=5)
        cleanup(redis_server.url, job)


class StallingProxy:
    """A loopback HTTP proxy in front of the Ray dashboard that forwards every request but never answers a
    job submission (POST /api/jobs/): an address that does not answer at the worst moment."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target).netloc
        self.stalled = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path.startswith("/api/jobs"):
                    proxy.stalled.set()
                    proxy.release.wait(120)
                    return
                c = http.client.HTTPConnection(proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request(self.command, self.path, body=body or None, headers=headers)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGABRT", "timeout"])
def test_interrupted_or_unanswered_submit_leaves_nothing(tmp_path, ray_cluster, redis_server, how) -> None:
    proxy = StallingProxy(ray_cluster.dashboard_url)
    job = f"t-submit-{how.lower()}-" + os.urandom(3).hex()
    try:
        env = {"GERMINATOR_RAY_TIMEOUT": "3" if how == "timeout" else "60"}
        spec = write_spec(tmp_path)
        args = ["--job", job, "--redis", redis_server.url, "--address", proxy.url]
        p = start_cli("submit", str(spec), *args, env=env)
        assert proxy.stalled.wait(120), "the submission never reached the proxy"
        with SeedTable(redis_server.url) as t:
            assert job in {j.job for j in t.list_jobs()}  # registered, its runner not yet started
        t0 = time.monotonic()
        if how != "timeout":
            p.send_signal(getattr(signal, how))
        (rc, _, err), took = finish([p], timeout=60)[0], time.monotonic() - t0
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
        if how == "timeout":
            assert proxy.url.split("//")[1] in lines[0] and "did not answer within 3s" in lines[0], lines[0]
            assert took < 20
        else:
            assert f"interrupted by {how}" in lines[0], lines[0]
        with SeedTable(redis_server.url) as t:
            assert job not in {j.job for j in t.list_jobs()}  # nothing half-written: the id is free again
        assert ray_runners(ray_cluster.dashboard_url, job) == []
    finally:
        proxy.close()
        cleanup(redis_server.url, job)

"""Across hosts with their own addresses: Redis, a Ray head and two Ray worker hosts, each in its own network
namespace on a private /24 (``netns.py``), all started for real. A seed-search job is submitted from the
head with the CLI; workers on both worker hosts evaluate candidates; then one worker host is cut off the
network mid-job, and the job must still complete on the other host without losing an accepted commit.

Nothing is added to the machine's own network namespace: traffic stays inside the namespaces this test
creates (and their loopbacks). Everything it starts is killed and every namespace deleted afterwards, also
when the test fails; leftovers of a crashed earlier run are removed first.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import netns  # this folder's helper (pytest puts the folder on sys.path)
import pytest
import yaml
from redis_server import redis_server_binary

from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent  # ray, germinator-dist and python of the venv running the tests
HOSTS = {"redis": "10.213.0.1", "head": "10.213.0.2", "w1": "10.213.0.3", "w2": "10.213.0.4"}
WORKER_HOSTS = ("w1", "w2")
REDIS_PORT, GCS_PORT, DASHBOARD_PORT = 6379, 6380, 8265
BUDGET_EVALS = 3000
# Ray declares a node dead after health_check_failure_threshold failed checks in a row; a check of an
# unreachable node takes timeout_ms and the next one starts period_ms later: ~9 s here (measured) instead
# of Ray's default ~12-15 s, with enough slack that a busy 2-core machine does not lose a healthy node.
# Names from Ray 2.60's ray_config_def.h (RAY_<name> overrides one; read by the GCS on the head).
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "3",
}


def wait_for(cond, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class MultiHost:
    topo: netns.Topology
    base: Path  # short private dir: Ray's unix sockets live under each host's temp dir
    logs: Path
    password: str
    env: dict
    node_ids: dict[str, str] = field(default_factory=dict)  # host -> Ray node id
    _table: SeedTable | None = None

    @property
    def redis_url(self) -> str:  # the password travels in GERMINATOR_REDIS_PASSWORD, not in the URL
        return f"redis://{HOSTS['redis']}:{REDIS_PORT}/0"

    @property
    def dashboard(self) -> str:
        return f"http://{HOSTS['head']}:{DASHBOARD_PORT}"

    def table(self, fn):
        """Call ``fn(table)`` from the head host (a thread of this process in the head's namespace)."""

        def call():
            if self._table is None:
                self._table = SeedTable(self.redis_url, password=self.password, retries=2, backoff=0.1)
            return fn(self._table)

        return self.topo.call("head", call)

    def http(self, path: str, timeout: float = 5.0):
        """GET the head's dashboard (JSON), from the head host."""

        def get():
            with urllib.request.urlopen(self.dashboard + path, timeout=timeout) as r:
                return json.loads(r.read())

        return self.topo.call("head", get, timeout=timeout + 5)

    def cli(self, *args: str, timeout: float = 120) -> str:
        argv = [str(VENV_BIN / "germinator-dist"), *args]
        return self.topo.run("head", argv, env=self.env, timeout=timeout).stdout

    def alive_nodes(self) -> dict[str, str]:
        """node ip -> node id of the nodes Ray sees alive."""
        res = self.http("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return {n["node_ip"]: n["node_id"] for n in res if n["state"] == "ALIVE"}


def _ray_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GERMINATOR_"))}
    env.update(
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",  # the job's `python` is the venv's
        RAY_AUTH_MODE="disabled",  # private network of namespaces
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.update(extra or {})
    return env


def _start(mh: MultiHost) -> None:
    topo, base = mh.topo, mh.base
    (base / "redis").mkdir(parents=True)
    redis = [redis_server_binary(), "--bind", HOSTS["redis"], "--port", str(REDIS_PORT)]
    redis += ["--protected-mode", "yes", "--requirepass", mh.password, "--dir", str(base / "redis")]
    redis += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
    topo.popen("redis", redis, log=mh.logs / "redis.log")
    wait_for(lambda: _redis_answers(mh), 20, "redis-server, from the head host", interval=0.2)
    ray = str(VENV_BIN / "ray")
    common = ["--block", "--disable-usage-stats", "--object-store-memory=80000000"]
    head = [ray, "start", "--head", *common, f"--node-ip-address={HOSTS['head']}", f"--port={GCS_PORT}"]
    head += ["--num-cpus=0", "--include-dashboard=true", f"--dashboard-host={HOSTS['head']}"]
    head += [f"--dashboard-port={DASHBOARD_PORT}", f"--temp-dir={base / 'head'}"]
    # like the provided cluster configs, every node carries the Redis password in its own environment
    secret = {"GERMINATOR_REDIS_PASSWORD": mh.password}
    topo.popen("head", head, log=mh.logs / "ray-head.log", env=_ray_env({**HEALTH_CHECK, **secret}))
    wait_for(lambda: _answers(mh, "/api/version"), 60, "the Ray head's dashboard", interval=0.3)
    for w in WORKER_HOSTS:
        node = [ray, "start", *common, f"--address={HOSTS['head']}:{GCS_PORT}", "--num-cpus=1"]
        node += [f"--node-ip-address={HOSTS[w]}", f"--temp-dir={base / w}"]
        topo.popen(w, node, log=mh.logs / f"ray-{w}.log", env=_ray_env(secret))
    ips = {HOSTS[h]: h for h in ("head", *WORKER_HOSTS)}
    nodes = wait_for(lambda: (n := mh.alive_nodes()).keys() >= ips.keys() and n, 60, "3 alive Ray nodes")
    mh.node_ids = {h: nodes[ip] for ip, h in ips.items()}


def _redis_answers(mh: MultiHost) -> bool:
    try:
        mh.table(lambda t: t.ping())
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _answers(mh: MultiHost, path: str) -> bool:
    try:
        mh.http(path, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _keep_logs(mh: MultiHost) -> None:
    """Copy the job's driver logs and the Ray nodes' main logs next to the test's other logs."""
    for host in ("head", *WORKER_HOSTS):
        logs = mh.base / host / "session_latest" / "logs"
        for pattern in ("job-driver-*.log", "raylet.out", "gcs_server.out", "python-core-driver-*.log"):
            for f in logs.glob(pattern):
                try:
                    shutil.copy(f, mh.logs / f"{host}-{f.name}")
                except OSError:
                    pass


@pytest.fixture
def multihost(tmp_path: Path):
    reason = netns.namespaces_unavailable()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    if redis_server_binary() is None:
        pytest.skip("redis-server is not on PATH (install redis-server or set GERMINATOR_REDIS_SERVER)")
    netns.remove_stale()
    topo = netns.Topology(HOSTS)
    base = Path("/tmp") / topo.tag  # short: unix socket paths are limited to 107 bytes
    password = secrets.token_hex(16)
    env = _ray_env({"GERMINATOR_REDIS_PASSWORD": password})
    mh = MultiHost(topo, base, tmp_path / "logs", password, env)
    mh.logs.mkdir()
    try:
        topo.create()
        _start(mh)
        yield mh
    finally:
        try:
            _keep_logs(mh)
            if mh._table is not None:
                topo.call("head", mh._table.close, timeout=10)
        except Exception:  # noqa: BLE001 - cleanup goes on
            pass
        try:
            topo.destroy()
        finally:
            shutil.rmtree(base, ignore_errors=True)
            print(f"multihost logs: {mh.logs}")


def write_spec(tmp_path: Path) -> Path:
    spec = {
        "mode": "search",
        "model": {"hidden": [64], "rank": 8, "seed_bits": 8},
        "fitness": {"batch_size": 512},
        "search": {"budget_evals": BUDGET_EVALS, "candidates_per_call": 8, "refit_steps": 2, "swap": None},
        "workers": {"count": 2},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def evaluate_tasks_by_node(mh: MultiHost) -> dict[str, int]:
    """node id -> finished SeedWorker.evaluate calls, from Ray's State API on the head."""
    q = "/api/v0/tasks?limit=10000&detail=false&filter_keys=func_or_class_name&filter_predicates=%3D"
    q += "&filter_values=SeedWorker.evaluate"
    rows = mh.http(q)["data"]["result"]["result"]
    out: dict[str, int] = {}
    for r in rows:
        if r.get("state") == "FINISHED" and r.get("node_id"):
            out[r["node_id"]] = out.get(r["node_id"], 0) + 1
    return out


def seeds_events(t: SeedTable, job: str):
    return [e for e in t.events(job) if e.kind == "seeds"]


def driver_stats(mh: MultiHost, submission_id: str) -> dict[str, int]:
    """The counters of the job runner's last "search finished: DriverStats(...)" log line (head host)."""
    logs = mh.base / "head" / "session_latest" / "logs"
    text = "".join(f.read_text(errors="replace") for f in logs.glob(f"job-driver-{submission_id}.log"))
    found = re.findall(r"search finished: DriverStats\((.*?)\)", text)
    return {k: int(float(v)) for k, v in re.findall(r"(\w+)=([\d.]+)", found[-1])} if found else {}


def test_job_across_hosts_survives_losing_a_worker_host(multihost: MultiHost, tmp_path: Path):
    mh = multihost
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    job = mh.cli("submit", str(write_spec(tmp_path)), "--redis", mh.redis_url, "--address", mh.dashboard)
    job = job.strip()
    marks["submitted"] = time.monotonic() - t0
    worker_nodes = {mh.node_ids[w]: w for w in WORKER_HOSTS}
    seen_workers: dict[str, str] = {}  # worker id -> host, from the workers' heartbeats

    def both_hosts_busy():
        for hb in mh.table(lambda t: t.live(job, "worker")):
            host = worker_nodes.get(str(hb.payload.get("node")))
            if host:
                seen_workers[hb.id] = host
        prog = mh.table(lambda t: t.progress(job))
        state = mh.table(lambda t: t.get_state(job)).value
        if prog.evaluations:
            marks.setdefault("first evaluations", time.monotonic() - t0)
        if len(seen_workers) == 2:
            marks.setdefault("two workers", time.monotonic() - t0)
        assert state in ("PENDING", "RUNNING"), f"job {job} is {state} before the cut"
        assert prog.evaluations < BUDGET_EVALS, "the budget ran out before both hosts were seen working"
        by_node = evaluate_tasks_by_node(mh)
        busy = {w for n, w in worker_nodes.items() if by_node.get(n, 0) > 0}
        return busy == set(WORKER_HOSTS) and set(seen_workers.values()) == busy and prog.accepted >= 1

    wait_for(both_hosts_busy, 90, "finished evaluations on both worker hosts and an accepted commit")
    t_busy = time.monotonic() - t0

    before = mh.table(lambda t: seeds_events(t, job))
    evals_at_cut = mh.table(lambda t: t.progress(job)).evaluations
    mh.topo.link("w2", up=False)  # the host is cut off mid-job: no goodbye, its raylet keeps running
    t_cut = time.monotonic()
    tasks_at_cut = evaluate_tasks_by_node(mh)

    lost_reported = False  # the driver's heartbeat said it lost a worker (w2's)

    def ended():
        nonlocal lost_reported
        drivers = mh.table(lambda t: t.live(job, "driver"))
        lost_reported |= any(int(d.payload.get("lost_workers") or 0) >= 1 for d in drivers)
        state = mh.table(lambda t: t.get_state(job)).value
        return state != "RUNNING" and state

    final_state = wait_for(ended, 120, "the job to end after the cut")
    t_end = time.monotonic()
    doc = json.loads(mh.cli("status", job, "--json", "--redis", mh.redis_url, timeout=60))
    after = mh.table(lambda t: seeds_events(t, job))
    snap = mh.table(lambda t: t.snapshot(job))
    submission = json.loads(mh.table(lambda t: t.get_doc(job, "submission")))
    terminal = ("SUCCEEDED", "FAILED", "STOPPED")
    ray_job = wait_for(
        lambda: (s := mh.http(f"/api/jobs/{submission['id']}")["status"]) in terminal and s,
        30,
        "the Ray job to finish",
    )
    alive = mh.alive_nodes()
    tasks_at_end = evaluate_tasks_by_node(mh)
    events = mh.table(lambda t: t.events(job))
    stats = driver_stats(mh, submission["id"])
    w1, w2 = mh.node_ids["w1"], mh.node_ids["w2"]
    print(
        f"multihost: both hosts busy after {t_busy:.1f}s, cut at {evals_at_cut} evaluations, job ended "
        f"{t_end - t_cut:.1f}s after the cut ({final_state}, {doc['evaluations']} evaluations, "
        f"{len(after)} commits, {len(before)} before the cut, marks {marks}; evaluate calls w1/w2 at the "
        f"cut {tasks_at_cut.get(w1)}/{tasks_at_cut.get(w2)}, "
        f"at the end {tasks_at_end.get(w1)}/{tasks_at_end.get(w2)}; driver {stats})"
    )

    assert final_state == "SUCCEEDED" and doc["state"] == "SUCCEEDED", doc
    assert ray_job == "SUCCEEDED", ray_job
    assert doc["evaluations"] >= BUDGET_EVALS > evals_at_cut
    # w2 is dead to Ray and the driver saw its worker go; the rest of the budget was evaluated on w1
    assert HOSTS["w2"] not in alive and HOSTS["w1"] in alive, alive
    assert lost_reported, "the driver never reported the worker on w2 lost"
    # the batches in flight on w2 were lost with it and evaluated again elsewhere
    assert stats.get("lost_workers", 0) >= 1 and stats.get("redispatched", 0) >= 1, stats
    assert tasks_at_end.get(w1, 0) > tasks_at_cut.get(w1, 0), (tasks_at_cut, tasks_at_end)
    # no accepted commit is lost: what was in the stream before the cut is still there, in order
    assert [e.id for e in after[: len(before)]] == [e.id for e in before]
    assert len(after) == doc["accepted"]
    # every layer's loss only went down, from its initial row commit by commit, and the table holds
    # the last commit
    assert {e.kind for e in events} <= {"init", "seeds"}, {e.kind for e in events}
    for entry in snap.layers:
        losses = [e.loss for e in events if e.layer == entry.layer]
        assert all(b < a for a, b in zip(losses, losses[1:])), (entry.layer, losses)
        assert math.isclose(entry.loss, losses[-1]) and entry.version >= len(losses) - 1, (entry, losses)
    # the Redis password never went through Ray: no Ray log, job record or temp file on any host holds it
    leaked = [
        str(p)
        for p in mh.base.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.stat().st_size < 50 * 2**20
        and mh.password.encode() in p.read_bytes()
    ]
    assert not leaked, f"the Redis password appears in {leaked[:5]}"
    assert mh.password not in json.dumps(mh.http(f"/api/jobs/{submission['id']}"))

"""Run one short hybrid job on a Ray of its own that exports metrics, and read the job's series.

``python metrics_job.py REDIS_URL JOB SPEC_JSON OUT_JSON``: starts a local Ray (2 CPUs, a metrics export port,
its own temp dir), runs the job with ``distributed.runner.run_job`` in this process (the driver), and reads
the Prometheus text on the metrics port: once every expected series of the job has appeared while it runs, and
again after it ended until the driver's counters equal the table's. Writes what it read to OUT_JSON. A process
of its own, because a test session shares one Ray (conftest.ray_cluster).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request

# flush user metrics every second instead of Ray's default (the test reads them while a 10 s job runs)
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# the series expected while the job runs (Ray adds the "ray_" prefix, counters "_total")
EXPECTED = (
    "ray_germinator_evaluations_total",
    "ray_germinator_candidates_screened_total",
    "ray_germinator_candidates_per_second",
    "ray_germinator_workers_live",
    "ray_germinator_workers_desired",
    "ray_germinator_best_loss",
    "ray_germinator_trainer_steps_total",
    "ray_germinator_trainer_publishes_total",
    "ray_germinator_trainer_fitness_loss",
    "ray_germinator_worker_calls_total",
    "ray_germinator_worker_candidates_total",
)


def parse(text: str, job: str) -> dict[str, float]:
    """Prometheus text -> {series name: value summed over its lines} for lines tagged job_id=JOB."""
    out: dict[str, float] = {}
    tag = f'job_id="{job}"'
    for line in text.splitlines():
        if line.startswith("#") or tag not in line:
            continue
        name = line.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def scrape(port: int, job: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return parse(r.read().decode(), job)
    except OSError:
        return {}


def main(url: str, job: str, spec_json: str, out_path: str) -> int:
    import ray

    from germinator_dist.config import parse_job_spec
    from germinator_dist.distributed.runner import run_job
    from germinator_dist.search.job_setup import create_job
    from germinator_dist.table import SeedTable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="germ-ray-metrics-")
    ray.init(num_cpus=2, _metrics_export_port=port, include_dashboard=False, _temp_dir=tmp,
             _node_ip_address="127.0.0.1", log_to_driver=False)  # fmt: skip
    result: dict = {"port": port}
    try:
        with SeedTable(url) as table:
            create_job(table, parse_job_spec(json.loads(spec_json)))
            th = threading.Thread(target=lambda: result.update(state=run_job(table, job).value))
            th.start()
            running: dict[str, float] = {}
            while th.is_alive() and not all(n in running for n in EXPECTED):
                time.sleep(0.5)
                running = scrape(port, job)
            result["running"] = running
            th.join(300)
            want = table.progress(job).evaluations
            deadline = time.monotonic() + 20
            final = scrape(port, job)
            while final.get("ray_germinator_evaluations_total") != want and time.monotonic() < deadline:
                time.sleep(0.5)
                final = scrape(port, job)
            result["final"], result["table_evaluations"] = final, want
    finally:
        ray.shutdown()
        with open(out_path, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

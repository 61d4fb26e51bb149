"""``germinator-dist demo``: the README's main job, end to end, as a new user would run it.

Brings up the embedded local default when nothing is configured, submits ``examples/digits.yaml`` as a
Ray job, watches it to the end, exports the tiny checkpoint, evaluates it on the test split, and prints
accuracy and checkpoint size.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console

from germinator_dist.cli.plot import plot_job
from germinator_dist.cli.watch import watch
from germinator_dist.config import load_job_spec
from germinator_dist.core.metrics import evaluate_checkpoint
from germinator_dist.endpoints import read_local_state
from germinator_dist.errors import GerminatorError
from germinator_dist.service import local_stack
from germinator_dist.service import operations as service

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "examples" / "digits.yaml"  # the checkout's examples/


def run_demo(args) -> dict:
    """Run the demo; returns {'job_id', 'state', 'accuracy', 'loss', 'checkpoint_bytes', ...}."""
    quiet = bool(getattr(args, "json", False))
    console = Console(stderr=quiet)
    spec_path = Path(args.spec) if args.spec else DEFAULT_SPEC
    spec = load_job_spec(spec_path)
    configured = args.redis or args.address or os.environ.get("GERMINATOR_REDIS_URL")
    state = read_local_state()
    if not configured and not (state and local_stack._alive(state)):
        console.print("[bold]starting the local default[/] (Ray head + redis-server on 127.0.0.1)")
        local_stack.up()
    ep = service.resolve(args.redis, args.address, need_ray=True)
    job = service.submit(spec, ep)
    console.print(f"submitted job [bold]{job}[/] from {spec_path}")
    table = service.open_table(ep)
    doc = watch(table, job, console=console)
    if doc["state"] != "SUCCEEDED":
        raise GerminatorError(f"job: {job} ended {doc['state']}")
    out = Path(getattr(args, "output", None) or Path(tempfile.gettempdir()) / f"{job}.json")
    size = service.export(table, job, out)
    metrics = evaluate_checkpoint(out)
    swaps = service.swap_count(table, job)
    plot, _ = plot_job(table, job, out.with_suffix(".png"))  # the job's loss per layer against time
    result = {
        "job_id": job,
        "state": doc["state"],
        "evaluations": doc["evaluations"],
        "accepted": doc["accepted"],
        "swaps": swaps,
        "model": str(out),
        **metrics,
        "checkpoint_bytes": size,
        "plot": str(plot),
    }
    console.print(
        f"seed swaps committed: [bold]{swaps}[/] (component seeds replaced beside the trainer; "
        f"{doc['evaluations']} candidates considered)"
    )
    console.print(
        f"test accuracy [bold]{metrics['accuracy']:.3f}[/]  loss {metrics['loss']:.4f}  "
        f"checkpoint {size} bytes ({out})  trained floats {metrics['trained_floats']}"
    )
    console.print(f"plot of the job: {plot}  (germinator-dist plot {job} -o job.png)")
    return result

"""Learning benchmark: does the seed search add what the trained floats cannot, at equal wall clock?

    .venv/bin/python benchmarks/bench_learning.py --quick                   # smoke run (8 s per row)
    .venv/bin/python benchmarks/bench_learning.py --tasks digits --digits-ranks 16,32,64,128 \
        --init-seeds 0,1,2,3,4 --budget 30                                # the digits tables of the README
    .venv/bin/python benchmarks/bench_learning.py --tasks lm --init-seeds 0,1,2 --budget 90   # the byte LM

Rows, every one given the same wall-clock budget (``--budget`` seconds):

- ``train``: the scale trainer only; seeds stay at their initial values (the random-features baseline).
- ``hybrid``: the trainer and the swap search at once (``search.swap``, mode ``screen``): component seeds
  of the weakest slots are screened by the gradient, the best verified on the fitness loss, committed slot
  by slot beside the trainer's publishes (docs/layout.md).
- ``hybrid-loss``: the same with mode ``loss`` (no gradient: K random candidates, each verified).
- ``search``: the swap search alone (optional).
- ``dense``: the same network with stored ``nn.Linear`` weights, trained by Adam in one Ray worker process.

Cores: ``train`` uses one (the trainer actor), ``hybrid`` one trainer and ``--cpus - 1`` workers, ``dense``
one. The budget is the search's ``budget_seconds`` and the trainer's ``budget_s``; actor start-up comes on
top (the ``wall s`` column). The eager Philox path is used (``GERMINATOR_PRNG_COMPILE=0`` unless set).

The GERMINATOR rows are real jobs: the benchmark starts a redis-server on a free loopback port and a local Ray
instance, writes each job with ``search.job_setup.create_job`` and runs it with ``distributed.runner.run_job``
(worker actors, trainer actor, search driver), exactly as ``germinator-dist submit`` would on a cluster. After
each job the final snapshot is exported with ``checkpoint.save_checkpoint``; the reported test metric is
measured on the model loaded back from that file, so the numbers are those of the few-kilobyte artifact. The
fitness batch (what swaps are verified on) comes from ``--fitness-split``: the training split or the
validation split carved from it, never the test split; the test split serves only the reported metric.

Tasks: scikit-learn's digits (64-256-256-10 MLP, one task per ``--digits-ranks`` entry) and a byte-level
language model (``GerminatorLM``) on the fixed standard-library corpus, reported in test bits per byte.

Outputs: the tables (Markdown), ``benchmarks/out/learning.png`` (fitness loss against wall clock),
``benchmarks/out/frontier.png`` (test accuracy against checkpoint bytes across ranks, train-only and
hybrid), ``benchmarks/out/learning.json`` (every number and curve) and the exported checkpoints. Each row
records the 1-minute load average, and the tables print its range.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Ray reads these when it is imported / initialised: loopback only, no token auth (nothing but this
# process and its own raylet listen), no usage report. main() gives it a private temp directory.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The layers here are small (at most 256 x 384): the eager Philox path takes about a millisecond per tensor,
# while the first compiled call costs every fresh process (each actor) about 9 s. Same bits either way.
os.environ.setdefault("GERMINATOR_PRNG_COMPILE", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from local_redis import local_redis, redis_url  # noqa: E402
from torch import nn  # noqa: E402

from germinator_dist.config import JobSpec, parse_job_spec  # noqa: E402
from germinator_dist.core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from germinator_dist.core.metrics import accuracy  # noqa: E402
from germinator_dist.core.model import Batch, GerminatorModel, build_model  # noqa: E402
from germinator_dist.distributed.runner import run_job  # noqa: E402
from germinator_dist.search.driver import best_loss  # noqa: E402
from germinator_dist.search.job_setup import (  # noqa: E402
    create_job,
    fitness_batch,
    model_from_snapshot,
    resolve_job,  # noqa: E402
)
from germinator_dist.table import SeedTable  # noqa: E402

ROOT = Path(__file__).resolve().parent
LN2 = math.log(2)
ROWS = ("train", "hybrid", "hybrid-loss", "dense")
ALL_ROWS = (*ROWS, "search")
SWAP_MODE = {"hybrid": "screen", "hybrid-loss": "loss", "search": "screen"}  # row -> search.swap.mode
JOB_MODE = {"train": "train", "hybrid": "hybrid", "hybrid-loss": "hybrid", "search": "search"}


# ---- configuration --------------------------------------------------------------------------------------
@dataclass
class TaskConfig:
    """One task: a job spec template (mode and budgets are filled in per row) and the dense row's Adam."""

    name: str
    metric: str  # "accuracy" (digits) or "bits_per_byte" (LM)
    spec: dict
    search_workers: int  # workers in search mode (hybrid: one fewer, the trainer takes the other core)
    dense_lr: float
    dense_batch: int
    trainer_delay: float = 0.0  # hybrid: seconds the search runs alone before the trainer starts


def _swap(args) -> dict:
    return {"candidates": args.candidates, "top_k": args.top_k, "slot_choice": args.slot_choice}


def digits_task(args, rank: int) -> TaskConfig:
    spec = {
        "model": {"kind": "mlp", "hidden": [256, 256], "rank": rank, "seed_bits": 16},
        "data": {"kind": "digits"},
        # the whole split the fitness comes from (training: 1150 rows; validation: 288)
        "fitness": {"batch_size": 2048, "seed": 0, "split": args.fitness_split},
        "search": {"swap": _swap(args), "in_flight_per_worker": 1, "calls_per_layer": 1},
        "trainer": {"optimizer": "adam", "lr": 0.03, "batch_size": 256, "steps_per_publish": 25},
    }
    _search_options(spec, args)
    return TaskConfig(f"digits-r{rank}", "accuracy", spec, args.cpus, 2e-3, 256, args.trainer_delay)


def lm_task(args, rank: int) -> TaskConfig:
    spec = {
        "model": {
            "kind": "lm",
            "d_model": 64,
            "d_ff": 128,
            "n_blocks": 2,
            "context": 64,
            "rank": rank,
            "seed_bits": 16,
        },
        "data": {"kind": "text"},  # the fixed standard-library corpus
        "fitness": {"batch_size": 64, "seed": 0, "split": args.fitness_split},  # 64 windows of 64 bytes
        "search": {"swap": _swap(args), "in_flight_per_worker": 1, "calls_per_layer": 1},
        "trainer": {
            "optimizer": "adam",
            "lr": 0.02,
            "batch_size": 32,
            "steps_per_publish": 25,
            "val_limit": 64,  # the per-round validation inside the trainer stays cheap
        },
    }
    _search_options(spec, args)
    return TaskConfig(f"lm-r{rank}", "bits_per_byte", spec, args.cpus, 2e-3, 32, args.trainer_delay)


def _search_options(spec: dict, args) -> None:
    """The search settings the command line may change (for investigating what the search contributes)."""
    if args.layers:
        spec["search"]["layers"] = [int(v) for v in args.layers.split(",")]


def row_spec(task: TaskConfig, mode: str, budget: float, job: str, init_seed: int = 0) -> JobSpec:
    """The job spec of one GERMINATOR row: every row gets ``budget`` seconds of wall clock."""
    spec = json.loads(json.dumps(task.spec))
    spec["job"], spec["mode"] = job, JOB_MODE[mode]
    spec["model"]["init_seed"] = init_seed  # the initial seeds (train-only keeps them throughout)
    spec["search"].update(budget_evals=None, budget_seconds=budget)
    if mode in SWAP_MODE:
        spec["search"]["swap"]["mode"] = SWAP_MODE[mode]
    spec["trainer"]["budget_s"] = budget
    if JOB_MODE[mode] == "hybrid" and task.trainer_delay > 0:  # seed first: the search alone, then both
        spec["trainer"].update(start_delay_s=task.trainer_delay, budget_s=budget - task.trainer_delay)
    workers = {"search": task.search_workers, "hybrid": task.search_workers - 1, "train": 0}[JOB_MODE[mode]]
    spec["workers"] = {"count": workers, "cpus": 1.0}
    return parse_job_spec(spec)


# ---- measurements ---------------------------------------------------------------------------------------
@dataclass
class Row:
    task: str
    row: str
    init_seed: int  # the model's init_seed (GERMINATOR rows) or torch's seed (dense)
    metric: float  # test accuracy (digits) or validation bits per byte (LM)
    test_loss: float  # nats
    checkpoint_bytes: int
    trained_floats: int
    seed_bits: int  # integers in the checkpoint (bits)
    budget_s: float
    wall_s: float  # from run_job's call to its return (actor start-up included)
    cores: int
    evaluations: int = 0  # candidates considered (screened + verified)
    seed_commits: int = 0  # accepted swaps
    commits_after_training: int = 0  # swaps after the trainer's first float publish (hybrid)
    stale: int = 0
    float_publishes: int = 0
    trainer_steps: int = 0
    layers_changed: int = 0
    final_fitness_loss: float = math.nan
    load: float = math.nan  # 1-minute load average when the row ended
    checkpoint_path: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, fitness loss in nats)


class Poller(threading.Thread):
    """Samples the table's best loss (and the trainer's heartbeat) while a job runs."""

    def __init__(self, url: str, job: str, t0: float, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.job, self.t0, self.interval = url, job, t0, interval
        self.curve: list[tuple[float, float]] = []
        self.trainer_steps = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with SeedTable(self.url) as table:
            while not self._stop_event.is_set():
                with contextlib.suppress(Exception):  # a sample lost to a busy moment is just skipped
                    loss = best_loss(table.snapshot(self.job))
                    self.curve.append((time.monotonic() - self.t0, loss))
                    for hb in table.live(self.job, "trainer"):
                        self.trainer_steps = max(self.trainer_steps, int(hb.payload.get("steps", 0)))
                self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def run_germinator_row(
    table: SeedTable, url: str, task: TaskConfig, mode: str, budget: float, out: Path, init_seed: int = 0
) -> Row:
    job = f"bench-{task.name}-{mode}-{os.getpid()}-{int(time.time())}"
    spec, dataset = create_job(table, row_spec(task, mode, budget, job, init_seed))
    initial = table.snapshot(job)
    t0 = time.monotonic()
    poller = Poller(url, job, t0)
    poller.curve.append((0.0, best_loss(initial)))
    poller.start()
    try:
        state = run_job(table, job, redis_url=url, progress_interval=0.5)
    finally:
        poller.stop()
    wall = time.monotonic() - t0
    snap = table.snapshot(job)
    poller.curve.append((wall, best_loss(snap)))
    path = out / f"{task.name}-{mode}-seed{init_seed}.json"
    nbytes = save_checkpoint(model_from_snapshot(spec, snap), path)
    model = load_checkpoint(path)  # the reported numbers are those of the exported file
    metrics = accuracy(model, dataset, spec.model.context)
    events = table.events(job)
    progress = table.progress(job)
    changed = sum(a.seeds != b.seeds for a, b in zip(initial.layers, snap.layers))
    first_floats = next((i for i, e in enumerate(events) if e.kind == "floats"), len(events))
    late_commits = sum(e.kind in ("seeds", "swap") for e in events[first_floats:])
    table.delete_job(job)
    print(
        f"  {task.name}/{mode} (init seed {init_seed}): job {state.value}, {wall:.1f}s, "
        f"metric {_metric(task, metrics):.4f}, "
        f"{progress.evaluations} candidates, {progress.accepted} swaps, {progress.stale} stale, "
        f"{sum(e.kind == 'floats' for e in events)} float publishes, trainer {poller.trainer_steps} steps",
        flush=True,
    )
    return Row(
        task=task.name,
        row=mode,
        init_seed=init_seed,
        metric=_metric(task, metrics),
        test_loss=metrics["loss"],
        checkpoint_bytes=nbytes,
        trained_floats=model.num_floats(),
        seed_bits=8 * len(model.layers) * spec.model.seed_bits,
        budget_s=budget,
        wall_s=wall,
        cores=spec.workers.count + (mode != "search"),
        checkpoint_path=str(path),
        evaluations=progress.evaluations,
        seed_commits=progress.accepted,
        commits_after_training=late_commits,
        stale=progress.stale,
        float_publishes=sum(e.kind == "floats" for e in events),
        trainer_steps=poller.trainer_steps,
        layers_changed=changed,
        final_fitness_loss=best_loss(snap),
        load=os.getloadavg()[0],
        curve=poller.curve,
    )


def _metric(task: TaskConfig, metrics: dict) -> float:
    return metrics["accuracy"] if task.metric == "accuracy" else metrics["bits_per_byte"]


# ---- the dense baseline -----------------------------------------------------------------------------
class DenseLinear(nn.Module):
    """A stored-weight ``nn.Linear`` with SeedLinear's call signature, so it drops into a GERMINATOR model."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x, token_ids=None, fixed=None):
        return self.linear(x)

    def embed(self, token_ids, fixed=None):  # column t of W plus the bias, as SeedLinear.embed
        return self.linear.weight.T[token_ids] + self.linear.bias


def dense_model(spec: JobSpec) -> GerminatorModel:
    """The GERMINATOR network of ``spec`` with every seeded layer replaced by a dense nn.Linear: the same
    stages (MLP activations; LM embedding, mixer blocks, RMS norms, head), only the weights are stored."""
    model = build_model(spec.model)
    model.layers = nn.ModuleList(DenseLinear(la.in_features, la.out_features) for la in model.layers)
    return model


@torch.no_grad()
def _loss_on(model: nn.Module, batch: Batch, chunk: int = 4096) -> float:
    total = 0.0
    for a in range(0, len(batch), chunk):
        x, y = batch.inputs[a : a + chunk], batch.targets[a : a + chunk]
        total += float(model.loss_from_logits(model(x), y)) * y.numel()
    return total / batch.targets.numel()


@ray.remote(num_cpus=1, max_retries=0)
def _train_dense(
    spec_json: str, lr: float, batch_size: int, budget: float, submitted: float, seed: int = 0
) -> dict:
    """Adam on the dense model for ``budget`` seconds, in a Ray worker (one thread, the niceness Ray gives
    its workers: the same footing as the trainer actor on a shared machine). Curve times count from
    ``submitted`` (the row's start), like the GERMINATOR rows'."""
    torch.set_num_threads(1)
    spec, dataset = resolve_job(JobSpec.model_validate_json(spec_json))
    torch.manual_seed(seed)
    model = dense_model(spec)
    fit = fitness_batch(spec, dataset)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.monotonic()
    offset = time.time() - submitted  # start-up: process, imports, data
    curve = [(offset, _loss_on(model, fit))]
    steps, next_sample = 0, 0.25
    while (now := time.monotonic() - t0) < budget:
        batch = dataset.train_batch(batch_size, spec.model.context, g)
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if now >= next_sample:
            curve.append((offset + time.monotonic() - t0, _loss_on(model, fit)))
            next_sample = now + 0.25
    curve.append((offset + time.monotonic() - t0, _loss_on(model, fit)))
    return {
        "curve": curve,
        "metrics": accuracy(model, dataset, spec.model.context),
        "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_dense_row(task: TaskConfig, budget: float, init_seed: int = 0) -> Row:
    spec = row_spec(task, "train", budget, f"bench-{task.name}-dense")
    t0 = time.monotonic()
    ref = _train_dense.remote(
        spec.model_dump_json(), task.dense_lr, task.dense_batch, budget, time.time(), init_seed
    )
    res = ray.get(ref)
    wall = time.monotonic() - t0
    metric, n = _metric(task, res["metrics"]), res["params"]
    print(
        f"  {task.name}/dense (seed {init_seed}): {wall:.1f}s, {res['steps']} Adam steps, "
        f"metric {metric:.4f}",
        flush=True,
    )
    return Row(
        task=task.name,
        row="dense",
        init_seed=init_seed,
        metric=metric,
        test_loss=res["metrics"]["loss"],
        checkpoint_bytes=4 * n,  # float32 parameters
        trained_floats=n,
        seed_bits=0,
        budget_s=budget,
        wall_s=wall,
        cores=1,
        trainer_steps=res["steps"],
        final_fitness_loss=res["curve"][-1][1],
        load=os.getloadavg()[0],
        curve=[tuple(c) for c in res["curve"]],
    )


# ---- report ---------------------------------------------------------------------------------------------
def table_markdown(rows: list[Row], task: TaskConfig) -> str:
    acc = task.metric == "accuracy"
    head = "test accuracy" if acc else "test bits/byte"
    unit = "" if acc else " (bits/byte)"
    lines = [
        f"| row | init seed | {head} | checkpoint bytes | trained floats | cores | wall s "
        f"| fitness loss{unit} | candidates | swaps (after training began) | stale | trainer steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        metric = f"{100 * r.metric:.1f}%" if acc else f"{r.metric:.3f}"
        fit = r.final_fitness_loss if acc else r.final_fitness_loss / LN2
        searched = r.row in SWAP_MODE
        commits = f"{r.seed_commits} ({r.commits_after_training})" if searched else "-"
        lines.append(
            f"| {r.row} | {r.init_seed} | {metric} | {r.checkpoint_bytes:,} | {r.trained_floats:,} "
            f"| {r.cores} | {r.wall_s:.0f} | {fit:.2e} | {r.evaluations if searched else '-'} | {commits} "
            f"| {r.stale if searched else '-'} | {r.trainer_steps or '-'} |"
        )
    lines += ["", *summary_lines(rows, acc)]
    loads = [r.load for r in rows]
    lines.append(
        f"\nBudget {rows[0].budget_s:.0f} s per row; 1-minute load average at the end of the rows: "
        f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores."
    )
    return "\n".join(lines)


def summary_lines(rows: list[Row], acc: bool) -> list[str]:
    """Mean and range per row over the init seeds, and each searched row minus train, per init seed."""
    fmt = (lambda v: f"{100 * v:.2f}%") if acc else (lambda v: f"{v:.3f}")
    seeds = sorted({r.init_seed for r in rows})
    out = [f"Over init seeds {seeds}:", ""]
    for name in dict.fromkeys(r.row for r in rows):
        vals = [r.metric for r in rows if r.row == name]
        nbytes = [r.checkpoint_bytes for r in rows if r.row == name]
        out.append(
            f"- {name}: mean {fmt(sum(vals) / len(vals))}, range {fmt(min(vals))} - {fmt(max(vals))}, "
            f"checkpoint {sum(nbytes) / len(nbytes):,.0f} bytes"
        )
    by = {(r.row, r.init_seed): r.metric for r in rows}
    scale, unit = (100, " points") if acc else (1, " bits/byte")
    for name in (n for n in SWAP_MODE if any(r.row == n for r in rows)):
        diffs = [by[(name, s)] - by[("train", s)] for s in seeds if (name, s) in by and ("train", s) in by]
        if diffs:
            per = ", ".join(f"{scale * d:+.2f}" for d in diffs)
            out.append(
                f"- {name} - train, per init seed: {per}{unit} (mean {scale * sum(diffs) / len(diffs):+.2f})"
            )
    return out


def means(rows: list[Row], task: str, row: str) -> tuple[float, float] | None:
    """(mean checkpoint bytes, mean metric) of one row of one task over its init seeds."""
    got = [r for r in rows if r.task == task and r.row == row]
    if not got:
        return None
    return sum(r.checkpoint_bytes for r in got) / len(got), sum(r.metric for r in got) / len(got)


def plot(rows: list[Row], tasks: list[TaskConfig], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"train": "tab:blue", "search": "tab:orange", "hybrid": "tab:green", "hybrid-loss": "tab:olive",
              "dense": "tab:gray"}  # fmt: skip
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        lm = task.metric != "accuracy"
        first = min(r.init_seed for r in rows)
        for r in (r for r in rows if r.task == task.name and r.init_seed == first):
            pts = [(t, v / LN2 if lm else v) for t, v in r.curve if math.isfinite(v)]
            if pts:
                ax.step(*zip(*pts), where="post", color=colors[r.row], label=r.row)
        ax.set_title(f"{task.name}: fitness loss (budget {rows[0].budget_s:.0f}s per row)", fontsize=9)
        ax.set_xlabel("wall-clock seconds since the row started")
        ax.set_ylabel("bits per byte" if lm else "cross-entropy (nats)")
        if not lm:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(rows: list[Row], tasks: list[TaskConfig], path: Path) -> bool:
    """Test accuracy against checkpoint bytes across the digits ranks (means over init seeds)."""
    digits = [t for t in tasks if t.metric == "accuracy"]
    if len(digits) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, color in (("train", "tab:blue"), ("hybrid", "tab:green"), ("hybrid-loss", "tab:olive")):
        pts = [(m, t.spec["model"]["rank"]) for t in digits if (m := means(rows, t.name, name))]
        if pts:
            ax.plot([p[0][0] for p in pts], [100 * p[0][1] for p in pts], "o-", color=color, label=name)
            for (x, y), rank in pts:
                ax.annotate(f"r{rank}", (x, 100 * y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    dense = [m for t in digits if (m := means(rows, t.name, "dense"))]
    if dense:
        ax.plot([dense[0][0]], [100 * dense[0][1]], "s", color="tab:gray", label="dense (stored weights)")
    ax.set_xscale("log")
    ax.set_xlabel("checkpoint bytes (JSON file: seeds, floats, spec)")
    ax.set_ylabel("test accuracy (%), mean over init seeds")
    ax.set_title("digits: accuracy against model size", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- main -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (8 s per row)")
    p.add_argument(
        "--budget", type=float, default=None, help="wall-clock seconds per row (default 70; quick 8)"
    )
    p.add_argument("--tasks", default="digits,lm", help="comma list of digits, lm")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ALL_ROWS)}")
    p.add_argument("--cpus", type=int, default=2, help="Ray CPUs (search workers; hybrid: 1 fewer)")
    p.add_argument(
        "--init-seeds", default="0", help="comma list: every row runs once per model init_seed (mean, range)"
    )
    p.add_argument("--digits-ranks", default="32", help="comma list of ranks: one digits task each")
    p.add_argument("--lm-rank", type=int, default=32)
    p.add_argument("--candidates", type=int, default=1024, help="swap: candidates screened per slot per call")
    p.add_argument("--top-k", type=int, default=4, help="swap: candidates verified on the loss per call")
    p.add_argument("--slot-choice", default="weakest", choices=("weakest", "round_robin"))
    p.add_argument("--fitness-split", default="train", choices=("train", "validation"))
    p.add_argument("--layers", default="", help="searched layers (default all)")
    p.add_argument(
        "--trainer-delay",
        type=float,
        default=0.0,
        help="hybrid: seconds of seed search alone before the trainer starts (seed first; the "
        "trainer then gets the rest of the budget)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "out")
    args = p.parse_args(argv)
    if args.cpus < 2:
        p.error("--cpus: hybrid needs at least 2 (one trainer, one worker)")
    budget = args.budget or (8.0 if args.quick else 70.0)
    if not 0 <= args.trainer_delay < budget:
        p.error(f"--trainer-delay: must be in [0, budget {budget:g}) (value {args.trainer_delay:g})")
    tasks = []
    for name in (t for t in args.tasks.split(",") if t):
        if name == "digits":
            tasks += [digits_task(args, int(r)) for r in args.digits_ranks.split(",") if r]
        elif name == "lm":
            tasks.append(lm_task(args, args.lm_rank))
        else:
            p.error(f"--tasks: unknown task {name!r} (digits, lm)")
    if unknown := [r for r in args.rows.split(",") if r and r not in ALL_ROWS]:
        p.error(f"--rows: unknown rows {unknown} ({', '.join(ALL_ROWS)})")
    rows_wanted = [r for r in args.rows.split(",") if r]
    init_seeds = [int(v) for v in args.init_seeds.split(",") if v]
    args.out.mkdir(parents=True, exist_ok=True)

    print(
        f"learning benchmark: budget {budget:.0f}s per row, {args.cpus} Ray CPUs, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, ray {ray.__version__}, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    rows: list[Row] = []
    digits_first = next((t for t in tasks if t.metric == "accuracy"), None)
    ray_tmp = tempfile.mkdtemp(prefix="germ-learn-ray-")
    os.environ["RAY_TMPDIR"] = ray_tmp
    try:
        with local_redis() as port, SeedTable(url := redis_url(port)) as table:
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            for task in tasks:
                for seed in init_seeds:
                    for mode in rows_wanted:
                        if mode == "dense" and task.metric == "accuracy" and task is not digits_first:
                            continue  # the dense network does not depend on the rank: run it once
                        if mode == "dense":
                            rows.append(run_dense_row(task, budget, seed))
                        else:
                            rows.append(run_germinator_row(table, url, task, mode, budget, args.out, seed))
    finally:
        ray.shutdown()
        for _ in range(3):  # Ray's last processes may still be writing their logs as they exit
            shutil.rmtree(ray_tmp, ignore_errors=True)
            time.sleep(1.0)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    png = args.out / "learning.png"
    plot(rows, tasks, png)
    frontier = args.out / "frontier.png"
    has_frontier = plot_frontier(rows, tasks, frontier)
    (args.out / "learning.json").write_text(
        json.dumps(
            {
                "budget_s": budget,
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        )
    )
    for task in tasks:
        spec = row_spec(task, "train", budget, "x")
        print(f"\n### {task.name}: {spec.model.model_dump(exclude_defaults=True)}\n")
        print(table_markdown([r for r in rows if r.task == task.name], task))
    digits = [t for t in tasks if t.metric == "accuracy"]
    if len(digits) > 1:
        print("\n### digits frontier (means over init seeds)\n")
        print("| rank | train accuracy | train bytes | hybrid accuracy | hybrid bytes | hybrid - train |")
        print("|---:|---:|---:|---:|---:|---:|")
        for t in digits:
            tr, hy = means(rows, t.name, "train"), means(rows, t.name, "hybrid")
            if tr and hy:
                print(
                    f"| {t.spec['model']['rank']} | {100 * tr[1]:.2f}% | {tr[0]:,.0f} | {100 * hy[1]:.2f}% "
                    f"| {hy[0]:,.0f} | {100 * (hy[1] - tr[1]):+.2f} |"
                )
    print(f"\nplots: {png}" + (f", {frontier}" if has_frontier else ""))


if __name__ == "__main__":
    main()

"""Learning benchmark (issue 5, item 3): does the hybrid (seed search + scale trainer) learn, at equal budget?

    .venv/bin/python benchmarks/bench_learning.py             # full run (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_learning.py --quick     # smoke run (a few seconds per row)
    .venv/bin/python benchmarks/bench_learning.py --budget 120 --tasks digits
    .venv/bin/python benchmarks/bench_learning.py --tasks digits --rows hybrid --slots 4,5,6,7   # a variant

Two tasks, four rows each, every row given the same wall-clock budget (``--budget`` seconds):

- ``train``: the scale trainer only; seeds stay at their initial values (the random-features baseline).
- ``search``: the seed search only (with ``refit_steps``, each committed candidate carries its layer's
  briefly refitted floats).
- ``hybrid``: both at once, meeting only in the seed table.
- ``dense``: the same network with stored ``nn.Linear`` weights (same stages, activations, LM mixer and
  norms), trained by Adam in one Ray worker process (one thread, like the trainer actor).

Cores: ``train`` uses one (the trainer actor), ``search`` ``--cpus`` workers, ``hybrid`` one trainer and
``--cpus - 1`` workers, ``dense`` one. The budget is the search's ``budget_seconds`` and the trainer's
``budget_s``; actor start-up comes on top (the ``wall s`` column). The eager Philox path is used
(``GERMINATOR_PRNG_COMPILE=0`` unless set): same bits, and it spares every actor the ~9 s first compile.

The three GERMINATOR rows are real jobs: the benchmark starts a redis-server on a free loopback port and a
local Ray instance, writes each job with ``jobs.create_job`` and runs it with ``job_runner.run_job`` (worker
actors, trainer actor, search driver), exactly as ``germinator-dist submit`` would on a cluster. A thread
polls ``table.snapshot`` while a job runs and records the table's best loss against wall-clock time; the
dense row records its loss on the same fitness batch. After each job the final snapshot is exported with
``checkpoint.save_checkpoint`` and the reported test metric is measured on the model loaded back from that
file (``checkpoint.load_checkpoint``), so the numbers are those of the few-kilobyte artifact.

Tasks: scikit-learn's digits (fixed split of ``data.load_digits_dataset``; 64-256-256-10 MLP) and a
byte-level language model (``GerminatorLM``) on the fixed standard-library corpus of
``data.load_text_dataset`` (train / validation split), reported in validation bits per byte.

Outputs: the tables (printed at the end, as Markdown), ``benchmarks/out/learning.png`` (loss against
wall-clock time, one panel per task), ``benchmarks/out/learning.json`` (every number and curve) and the
exported checkpoints ``benchmarks/out/<task>-<row>.json``. The machine may be shared: each row records the
1-minute load average, and the tables print its range.
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

from germinator_dist.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from germinator_dist.driver import best_loss  # noqa: E402
from germinator_dist.job_runner import run_job  # noqa: E402
from germinator_dist.jobs import accuracy, create_job, fitness_batch, model_from_snapshot  # noqa: E402
from germinator_dist.jobspec import JobSpec, parse_job_spec, resolve_job  # noqa: E402
from germinator_dist.model import Batch, GerminatorModel, build_model  # noqa: E402
from germinator_dist.table import SeedTable  # noqa: E402

ROOT = Path(__file__).resolve().parent
LN2 = math.log(2)
ROWS = ("train", "search", "hybrid", "dense")


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


def digits_task(args) -> TaskConfig:
    spec = {
        "model": {"kind": "mlp", "hidden": [256, 256], "rank": args.digits_rank, "seed_bits": 8},
        "data": {"kind": "digits"},
        "fitness": {"batch_size": 2048, "seed": 0},  # the whole training split (1438 rows)
        "search": {
            "proposer": args.proposer,
            "candidates_per_call": 4,
            "in_flight_per_worker": 1,
            "calls_per_layer": 4,
            "refit_steps": args.refit_steps,
            "refit_lr": 0.02,
        },
        "trainer": {"optimizer": "adam", "lr": 0.02, "batch_size": 256, "steps_per_publish": 200},
    }
    _search_options(spec, args)
    return TaskConfig("digits", "accuracy", spec, args.cpus, 2e-3, 256, args.trainer_delay)


def lm_task(args) -> TaskConfig:
    spec = {
        "model": {
            "kind": "lm",
            "d_model": 64,
            "d_ff": 128,
            "n_blocks": 2,
            "context": 64,
            "rank": args.lm_rank,
            "seed_bits": 8,
        },
        "data": {"kind": "text"},  # the fixed standard-library corpus
        "fitness": {"batch_size": 64, "seed": 0},  # 64 windows of 64 bytes
        "search": {
            "proposer": args.proposer,
            "candidates_per_call": 2,
            "in_flight_per_worker": 1,
            "calls_per_layer": 4,
            "refit_steps": min(args.refit_steps, 5),
            "refit_lr": 0.02,
        },
        "trainer": {
            "optimizer": "adam",
            "lr": 0.02,
            "batch_size": 32,
            "steps_per_publish": 50,
            "val_limit": 64,  # the per-round validation inside the trainer stays cheap
        },
    }
    _search_options(spec, args)
    return TaskConfig("lm", "bits_per_byte", spec, args.cpus, 2e-3, 32, args.trainer_delay)


def _search_options(spec: dict, args) -> None:
    """The search settings the command line may change (for investigating what the search contributes)."""
    if args.slots:
        spec["search"]["slots"] = [int(v) for v in args.slots.split(",")]
    if args.layers:
        spec["search"]["layers"] = [int(v) for v in args.layers.split(",")]
    if args.population:
        spec["search"]["population"] = args.population


def row_spec(task: TaskConfig, mode: str, budget: float, job: str, init_seed: int = 0) -> JobSpec:
    """The job spec of one GERMINATOR row: every row gets ``budget`` seconds of wall clock."""
    spec = json.loads(json.dumps(task.spec))
    spec["job"], spec["mode"] = job, mode
    spec["model"]["init_seed"] = init_seed  # the initial seeds (train-only keeps them throughout)
    spec["search"].update(budget_evals=None, budget_seconds=budget)
    spec["trainer"]["budget_s"] = budget
    if mode == "hybrid" and task.trainer_delay > 0:  # seed first: the search alone, then both; same total
        spec["trainer"].update(start_delay_s=task.trainer_delay, budget_s=budget - task.trainer_delay)
    workers = {"search": task.search_workers, "hybrid": task.search_workers - 1, "train": 0}[mode]
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
    evaluations: int = 0
    seed_commits: int = 0
    commits_after_training: int = 0  # seed commits after the trainer's first float publish (hybrid)
    stale: int = 0
    float_publishes: int = 0
    trainer_steps: int = 0
    layers_changed: int = 0
    final_fitness_loss: float = math.nan
    load: float = math.nan  # 1-minute load average when the row ended
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
    path = out / (
        f"{task.name}-{mode}.json" if init_seed == 0 else f"{task.name}-{mode}-seed{init_seed}.json"
    )
    nbytes = save_checkpoint(model_from_snapshot(spec, snap), path)
    model = load_checkpoint(path)  # the reported numbers are those of the exported file
    metrics = accuracy(model, dataset, spec.model.context)
    events = table.events(job)
    progress = table.progress(job)
    changed = sum(a.seeds != b.seeds for a, b in zip(initial.layers, snap.layers))
    first_floats = next((i for i, e in enumerate(events) if e.kind == "floats"), len(events))
    late_commits = sum(e.kind == "seeds" for e in events[first_floats:])
    table.delete_job(job)
    print(
        f"  {task.name}/{mode} (init seed {init_seed}): job {state.value}, {wall:.1f}s, "
        f"metric {_metric(task, metrics):.4f}, "
        f"{progress.evaluations} evaluations, {progress.accepted} seed commits, {progress.stale} stale, "
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
    head = "test accuracy" if acc else "val. bits/byte"
    unit = "" if acc else " (bits/byte)"
    lines = [
        f"| row | init seed | {head} | checkpoint bytes | trained floats | seed bits | cores | wall s "
        f"| fitness loss{unit} | evaluations | seed commits (after training began) | stale | trainer steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        metric = f"{100 * r.metric:.1f}%" if acc else f"{r.metric:.3f}"
        fit = r.final_fitness_loss if acc else r.final_fitness_loss / LN2
        searched = r.row in ("search", "hybrid")
        commits = str(r.seed_commits) if searched else "-"
        if r.row == "hybrid":
            commits += f" ({r.commits_after_training})"
        lines.append(
            f"| {r.row} | {r.init_seed} | {metric} | {r.checkpoint_bytes:,} | {r.trained_floats:,} "
            f"| {r.seed_bits:,} "
            f"| {r.cores} | {r.wall_s:.0f} | {fit:.2e} | {r.evaluations if searched else '-'} | {commits} "
            f"| {r.stale if searched else '-'} | {r.trainer_steps or '-'} |"
        )
    seeds = sorted({r.init_seed for r in rows})
    if len(seeds) > 1:  # one line per row: mean and range over the init seeds, then hybrid - train per seed
        lines.append(f"\nOver init seeds {seeds}:\n")
        fmt = (lambda v: f"{100 * v:.2f}%") if acc else (lambda v: f"{v:.3f}")
        for name in dict.fromkeys(r.row for r in rows):
            vals = [r.metric for r in rows if r.row == name]
            lines.append(
                f"- {name}: mean {fmt(sum(vals) / len(vals))}, range {fmt(min(vals))} - {fmt(max(vals))}"
            )
        by = {(r.row, r.init_seed): r.metric for r in rows}
        diffs = [
            by[("hybrid", s)] - by[("train", s)] for s in seeds if ("hybrid", s) in by and ("train", s) in by
        ]
        if diffs:
            scale, unit = (100, " points") if acc else (1, " bits/byte")
            per = ", ".join(f"{scale * d:+.2f}" for d in diffs)
            lines.append(
                f"- hybrid - train, per init seed: {per}{unit} (mean {scale * sum(diffs) / len(diffs):+.2f})"
            )
    loads = [r.load for r in rows]
    lines.append(
        f"\nBudget {rows[0].budget_s:.0f} s per row; 1-minute load average at the end of the rows: "
        f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores."
    )
    return "\n".join(lines)


def plot(rows: list[Row], tasks: list[TaskConfig], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"train": "tab:blue", "search": "tab:orange", "hybrid": "tab:green", "dense": "tab:gray"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        lm = task.metric != "accuracy"
        first = min(r.init_seed for r in rows)
        for r in (r for r in rows if r.task == task.name and r.init_seed == first):
            pts = [(t, v / LN2 if lm else v) for t, v in r.curve if math.isfinite(v)]
            if pts:
                ax.step(*zip(*pts), where="post", color=colors[r.row], label=r.row)
        ax.set_title(f"{task.name}: loss on the fitness batch (budget {rows[0].budget_s:.0f}s per row)")
        ax.set_xlabel("wall-clock seconds since the row started")
        ax.set_ylabel("bits per byte" if lm else "cross-entropy (nats)")
        if not lm:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (8 s per row)")
    p.add_argument(
        "--budget", type=float, default=None, help="wall-clock seconds per row (default 70; quick 8)"
    )
    p.add_argument("--tasks", default="digits,lm", help="comma list of digits, lm")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--cpus", type=int, default=2, help="Ray CPUs (search workers; hybrid: 1 fewer)")
    p.add_argument(
        "--init-seeds", default="0", help="comma list: every row runs once per model init_seed (mean, range)"
    )
    p.add_argument("--digits-rank", type=int, default=128)
    p.add_argument("--lm-rank", type=int, default=32)
    p.add_argument("--refit-steps", type=int, default=10, help="search: refit steps per candidate")
    p.add_argument("--proposer", default="evolutionary")
    p.add_argument("--slots", default="", help="searched seed slots (indices into SEED_NAMES; default all)")
    p.add_argument("--layers", default="", help="searched layers (default all)")
    p.add_argument("--population", type=int, default=0, help="proposer population (default: the spec's)")
    p.add_argument("--trainer-delay", type=float, default=0.0,
                   help="hybrid: seconds of seed search alone before the trainer starts (seed first; the "
                   "trainer then gets the rest of the budget)")
    p.add_argument("--out", type=Path, default=ROOT / "out")
    args = p.parse_args(argv)
    if args.cpus < 2:
        p.error("--cpus: hybrid needs at least 2 (one trainer, one worker)")
    budget = args.budget or (8.0 if args.quick else 70.0)
    if not 0 <= args.trainer_delay < budget:
        p.error(f"--trainer-delay: must be in [0, budget {budget:g}) (value {args.trainer_delay:g})")
    makers = {"digits": digits_task, "lm": lm_task}
    tasks = [makers[t](args) for t in args.tasks.split(",") if t]
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
    ray_tmp = tempfile.mkdtemp(prefix="germ-learn-ray-")
    os.environ["RAY_TMPDIR"] = ray_tmp
    try:
        with local_redis() as port, SeedTable(url := redis_url(port)) as table:
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            for task in tasks:
                for seed in init_seeds:
                    for mode in rows_wanted:
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
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()

"""Seed-search throughput: the driver on Ray against the per-worker ideal and its baselines (issue 4, item 7).

    .venv/bin/python benchmarks/bench_search.py            # full run (about 3-4 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_search.py --quick    # smoke run (about a minute)
    options: --rounds N, --seconds S (per measurement), --tune-trials N, --candidates-per-call N (8),
             --fixed-call N (8), --capacity-workers N (256), --aof always|everysec|no, --markdown

Every row is measured in this one run on the same objective: a GerminatorMLP 64-256-256-10 (rank 16, 16-bit
seeds) on scikit-learn's digits, the loss on the job's fitness batch (``search.job_setup.fitness_batch``: 1024
rows), one layer searched (layer 1, the 256x256 one), no float refit (``refit_steps=0``). The benchmark starts
its own redis-server (the seed table) and a private local Ray on 127.0.0.1, and prints one table:

* **ideal**: the same forward computation (layer 1 on the cached activations entering it, relu, layer 2,
  cross-entropy) with every weight already stored in memory: no generation, no Ray, one thread (a worker
  runs one thread). The physical limit of a worker here; target: a worker reaches at least 80% of it.
* **LayerEvaluator in-process**: the worker's code without Ray or the driver (where a worker loses time).
* **this driver**: ``SearchDriver`` with the evolutionary proposer, ``RayPool`` of ``SeedWorker`` actors,
  the real Redis table (commits, progress, heartbeats), with 1 and 2 workers; scaling efficiency is the
  2-worker rate over twice the 1-worker rate. These rows use the spec's default call size, ``auto``: the
  driver sizes each worker's calls from its measured seconds per candidate to take about
  ``search.call_seconds`` (0.05 s), so Ray's per-call cost is spread thin. One more 1-worker row keeps
  every call at 8 candidates (``--fixed-call``; the default before ``auto``), and the in-process rows
  evaluate 8 candidates per call too.
* **ActorPool.map**: one candidate per Ray call through ``ray.util.ActorPool.map`` over the same actors,
  EvoTorch-style: a generation of ``search.population`` (16) children of the same evolutionary proposer
  is mapped, told back, and the next one asked (no commits, no table: lighter than our driver's work).
  Target: ours at least 2x faster.
* **Ray Tune + NevergradSearch**: one trial per candidate (DiscreteOnePlusOne over the layer's 8 seeds,
  up to 2 concurrent trials), twice: with ``reuse_actors=True`` and the LayerEvaluator cached in the
  reused trial actor (Tune's fastest setting here), and with Tune's defaults, where every trial starts a
  fresh process. Trials/s from the first trial's end to the last one's, so Tune's start-up is left out
  (the rate over the whole ``Tuner.fit`` is printed below the table). Target: ours at least 50x faster.
* **driver capacity**: the real ``SearchDriver`` and Redis table driving a zero-cost in-process pool
  (results come back at once, random losses), evolutionary proposer: candidates proposed, dispatched
  and committed per second. Target: at least 20,000/s.

Rates are medians over ``--rounds`` rounds; within a round the rows take turns, so a load spike from
another process hits them alike, and a ratio to the ideal is the median over rounds of the row's rate
over the ideal measured right before and after it. The machine's cores and load average are printed.
"""

from __future__ import annotations

import os
import tempfile

# Ray on 127.0.0.1 only, no token auth (local, loopback), no usage stats, private temp dir: set before
# ray is imported anywhere (germinator_dist.distributed.ray_pool imports it).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="germ-bench-ray-"))
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import argparse  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter, deque  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from local_redis import local_redis, redis_url  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from germinator_dist.config import (  # noqa: E402
    FitnessSpec,
    JobSpec,
    ModelSpec,  # noqa: E402
    SearchSpec,
    WorkersSpec,
)
from germinator_dist.core.data import load_digits_dataset  # noqa: E402
from germinator_dist.records import EvalResult, JobState  # noqa: E402
from germinator_dist.search.driver import SearchDriver  # noqa: E402
from germinator_dist.search.evaluator import LayerEvaluator  # noqa: E402
from germinator_dist.search.job_setup import create_job, fitness_batch  # noqa: E402
from germinator_dist.search.pool import Completion, PoolStatus, Task  # noqa: E402
from germinator_dist.search.proposers import (
    make_proposer,  # noqa: E402
    proposer_fields,  # noqa: E402
)
from germinator_dist.table import SeedTable  # noqa: E402

LAYER = 1  # the 256x256 layer of 64-256-256-10
CORES = os.cpu_count() or 1


@functools.cache
def digits_dims() -> tuple[tuple[str, int], ...]:
    return tuple(load_digits_dataset().dims().items())


def make_spec(job: str, workers: int, seconds: float, cands: int | str) -> JobSpec:
    model = ModelSpec(hidden=(256, 256), rank=16).resolved(**dict(digits_dims()))
    search = SearchSpec(
        swap=None,  # the whole-vector path this benchmark measures (bench_swap.py measures swaps)
        proposer="evolutionary",
        layers=(LAYER,),
        refit_steps=0,
        candidates_per_call=cands,
        in_flight_per_worker=2,
        budget_evals=None,
        budget_seconds=seconds,
    )
    workers_spec = WorkersSpec(count=workers, max=max(64, workers))
    fitness = FitnessSpec(split="train")  # 1024 training rows: the objective of every earlier run
    return JobSpec(job=job, mode="search", model=model, fitness=fitness, search=search, workers=workers_spec)


def ask_candidates(spec: JobSpec, snap, n: int, rng_seed: int = 1) -> list[tuple[int, ...]]:
    """``n`` children of the incumbent from the evolutionary proposer (what the driver would send)."""
    entry = snap.layers[LAYER]
    fields = proposer_fields(spec, entry.seeds) | {"rng_seed": rng_seed}
    prop = make_proposer("evolutionary", incumbent_loss=entry.loss, **fields)
    return [c.seeds for c in prop.ask(n)]


IN_PROCESS_CPU: list[float] = []  # in-process rows: this thread's share of wall time on a CPU


def timed(fn, seconds: float) -> float:
    """Call ``fn`` (which returns how many candidates it did) for about ``seconds``: candidates/s."""
    s0 = schedstat(os.getpid())
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        done += fn()
    took = time.perf_counter() - start
    s1 = schedstat(os.getpid())
    if s0 and s1:
        IN_PROCESS_CPU.append((s1[0] - s0[0]) / took)
    return done / took


# ---- in-process rows: the ideal and the worker's code without Ray -------------------------------------
class InProcess:
    """A LayerEvaluator on the job's snapshot, and the ideal: the same forward with stored weights."""

    def __init__(self, spec: JobSpec, batch, snap, cands: int) -> None:
        self.ev = LayerEvaluator(spec.model, batch)
        self.ev.load_snapshot(snap.seeds(), snap.floats(), snap.versions)
        self.targets = batch.targets
        self.cands = cands
        self.pool = ask_candidates(spec, snap, 50_000, rng_seed=7)
        self.pos = 0
        model = self.ev.model
        self.h = self.ev._state_entering(LAYER)["h"]  # (B, 256): what the evaluator caches too
        self.act = model.act
        self.stored = []  # 16 candidates: [(W, b) of layer 1, then the fixed downstream layers]
        down = []
        with torch.no_grad():
            for j in range(LAYER + 1, len(model.layers)):
                layer = model.layers[j]
                f = layer.generate()
                down.append((layer.weight(f, layer.g.unsqueeze(0))[0].clone(), (layer.beta * f.bias).clone()))
            layer = model.layers[LAYER]
            for seeds in self.pool[:16]:
                f = layer.generate(seeds=seeds)
                w = layer.weight(f, layer.g.unsqueeze(0))[0].clone()
                self.stored.append([(w, (layer.beta * f.bias).clone()), *down])
        # the ideal computes the same losses as the evaluator (same computation, weights stored)
        ref = self.ev.evaluate(LAYER, self.pool[:4]).losses
        for i in range(4):
            assert math.isclose(self._ideal_one(i), ref[i], rel_tol=1e-4), (self._ideal_one(i), ref[i])
        self.evaluator_batch()  # warm up (compiled generator kernels)

    def _ideal_one(self, i: int) -> float:
        h = self.h
        weights = self.stored[i % len(self.stored)]
        for j, (w, b) in enumerate(weights):
            h = torch.nn.functional.linear(h, w, b)  # what SeedLinear.forward does with its W
            if j + 1 < len(weights):
                h = self.act(h)
        return float(torch.nn.functional.cross_entropy(h, self.targets))

    def ideal_batch(self) -> int:
        with torch.no_grad():
            for i in range(self.cands):
                self._ideal_one(i)
        return self.cands

    def evaluator_batch(self) -> int:
        cands = self.pool[self.pos : self.pos + self.cands]
        self.pos = (self.pos + self.cands) % (len(self.pool) - self.cands)
        self.ev.evaluate(LAYER, cands)
        return len(cands)


# ---- driver rows --------------------------------------------------------------------------------------
class FirstN:
    """The first ``n`` live workers of a pool (so 1- and 2-worker rows use the very same actors)."""

    def __init__(self, pool, n: int) -> None:
        self.pool, self.n = pool, n

    def resize(self, n: int) -> None:  # membership is the benchmark's business
        pass

    def status(self) -> PoolStatus:
        st = self.pool.status()
        live = st.live[: self.n]
        return PoolStatus(live=live, nodes={w: st.nodes.get(w, "") for w in live})

    def in_flight(self, worker: str) -> int:
        return self.pool.in_flight(worker)

    def submit(self, worker: str, task: Task) -> None:
        self.pool.submit(worker, task)

    def poll(self, timeout: float) -> list[Completion]:
        return self.pool.poll(timeout)

    def shutdown(self) -> None:
        pass


CALL_SIZES: list[int] = []  # auto-sized driver rows: each worker's call size when its run ended


def run_driver(table, job: str, spec: JobSpec, pool) -> tuple[float, object]:
    table.set_state(job, JobState.RUNNING)
    driver = SearchDriver(table, job, spec, pool, driver_id="bench")
    stats = driver.run()
    if spec.search.candidates_per_call == "auto":
        CALL_SIZES.extend(driver.call_size(w) for w in pool.status().live)
    return stats.evaluations / stats.seconds, stats


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process's main thread (Linux)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return None


def actor_pool_map(actors, spec: JobSpec, snap, seconds: float, rng_seed: int) -> float:
    """EvoTorch-style: each generation (``search.population`` children of the evolutionary proposer)
    goes through ray.util.ActorPool.map, one candidate per Ray call, and is told back before the next
    generation is asked. Candidates/s over about ``seconds``."""
    from ray.util import ActorPool

    entry = snap.layers[LAYER]
    prop = make_proposer(
        "evolutionary",
        incumbent_loss=entry.loss,
        **(proposer_fields(spec, entry.seeds) | {"rng_seed": rng_seed}),
    )
    snap_json = snap.model_dump_json()
    ap = ActorPool(list(actors))
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        cands = prop.ask(spec.search.population)
        out = list(ap.map(lambda a, c: a.evaluate.remote(LAYER, [list(c.seeds)], snap_json, 0, 0.02), cands))
        prop.tell_many((c, r["losses"][0]) for c, r in zip(cands, out))
        done += len(cands)
    return done / (time.perf_counter() - start)


# ---- Ray Tune + NevergradSearch -------------------------------------------------------------------------
def _tune_trial(config, spec_json, inputs, targets, snap_json, compiled):
    """One Tune trial = one candidate: its loss on the fitness batch, by the worker's evaluator.

    The evaluator is built once per trial process (kept while Tune reuses the actor). The compiled
    generator kernels are used only in reused actors: compiling them costs a fresh process seconds."""
    import sys
    import types

    from ray import tune as _tune

    from germinator_dist.config import ModelSpec as _MS
    from germinator_dist.core.model import Batch
    from germinator_dist.records import Snapshot
    from germinator_dist.search.evaluator import LayerEvaluator as _LE

    os.environ["GERMINATOR_PRNG_COMPILE"] = "1" if compiled else "0"
    torch.set_num_threads(1)
    cache = sys.modules.setdefault("_germ_bench_tune", types.ModuleType("_germ_bench_tune"))
    if not hasattr(cache, "ev"):
        snap = Snapshot.model_validate_json(snap_json)
        batch = Batch(torch.from_numpy(np.array(inputs)), torch.from_numpy(np.array(targets)))
        cache.ev = _LE(_MS.model_validate_json(spec_json), batch)
        cache.ev.load_snapshot(snap.seeds(), snap.floats(), snap.versions)
    from germinator_dist.records import duplicate_component

    seeds = [int(config[f"s{i}"]) for i in range(len(config))]  # the layer's rank + 4 seeds
    if duplicate_component(seeds) is not None:  # independent draws may repeat a component: infeasible
        _tune.report({"loss": float("inf"), "t_end": time.time()})
        return
    res = cache.ev.evaluate(LAYER, [seeds])
    _tune.report({"loss": res.losses[0], "t_end": time.time()})


def ray_tune(spec: JobSpec, batch, snap, trials: int, reuse: bool) -> tuple[float, float]:
    """Ray Tune with NevergradSearch, one trial per candidate, up to 2 concurrent trials, trial actors
    reused or not (Tune's default here: a fresh process per trial). Returns trials/s in steady state
    (first to last trial end, so Tune's own start-up is left out) and over the whole ``Tuner.fit``."""
    import nevergrad as ng
    from ray import cloudpickle, tune
    from ray.tune.search.nevergrad import NevergradSearch

    if __name__ != "__main__":  # imported (e.g. as bench_search): ship the trial function by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])

    n_seeds = len(snap.layers[LAYER].seeds)
    space = {f"s{i}": tune.randint(0, 2**spec.model.seed_bits) for i in range(n_seeds)}
    points = [{f"s{i}": int(v) for i, v in enumerate(snap.layers[LAYER].seeds)}]
    alg = NevergradSearch(
        optimizer=ng.optimizers.DiscreteOnePlusOne,
        optimizer_kwargs={"budget": trials},
        metric="loss",
        mode="min",
        points_to_evaluate=points,
    )
    trainable = tune.with_parameters(
        _tune_trial,
        spec_json=spec.model.model_dump_json(),
        inputs=batch.inputs.numpy(),
        targets=batch.targets.numpy(),
        snap_json=snap.model_dump_json(),
        compiled=reuse,
    )
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as d:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                search_alg=alg, num_samples=trials, max_concurrent_trials=2, reuse_actors=reuse
            ),
            run_config=tune.RunConfig(storage_path=d, name="bench", verbose=0),
        )
        start = time.perf_counter()
        results = tuner.fit()
        took = time.perf_counter() - start
    ends = sorted(r.metrics["t_end"] for r in results if r.error is None and "t_end" in r.metrics)
    if len(ends) != trials:
        print(f"warning: {trials - len(ends)} of {trials} Tune trials failed", file=sys.stderr)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else math.nan
    return steady, len(ends) / took


# ---- driver capacity: a zero-cost pool --------------------------------------------------------------------
class InstantPool:
    """EvaluatorPool whose results come back at once with random losses (a zero-cost objective).

    Each candidate beats the incumbent (in the same evaluation) with probability ``p_better``; the others
    are worse by a random margin. Results carry the snapshot versions they were sent with, like a worker's.
    """

    def __init__(self, workers: int, p_better: float = 0.001, seed: int = 0) -> None:
        self.live = [f"fake{i}" for i in range(workers)]
        self.nodes = dict.fromkeys(self.live, "local")
        self._queue: deque[tuple[str, Task]] = deque()
        self._in_flight: Counter = Counter()
        self._rng = random.Random(seed)
        self.p_better = p_better

    def resize(self, n: int) -> None:
        pass

    def status(self) -> PoolStatus:
        return PoolStatus(live=list(self.live), nodes=self.nodes)

    def in_flight(self, worker: str) -> int:
        return self._in_flight[worker]

    def submit(self, worker: str, task: Task) -> None:
        self._queue.append((worker, task))
        self._in_flight[worker] += 1

    def poll(self, timeout: float) -> list[Completion]:
        out, rnd, p = [], self._rng.random, self.p_better
        while self._queue:
            worker, task = self._queue.popleft()
            self._in_flight[worker] -= 1
            entry = task.snapshot.layers[task.layer]
            inc = entry.loss
            losses = tuple(inc - 1e-4 * rnd() if rnd() < p else inc + 0.01 + rnd() for _ in task.candidates)
            res = EvalResult(
                layer=task.layer,
                versions=task.snapshot.versions,
                incumbent_loss=inc,
                incumbent_floats=entry.floats,
                losses=losses,
                floats=(entry.floats,) * len(losses),
                worker=worker,
            )
            out.append(Completion(task, worker, result=res))
        return out

    def shutdown(self) -> None:
        pass


# ---- the run ----------------------------------------------------------------------------------------------
def fmt_rate(xs: list[float]) -> tuple[str, str]:
    med = statistics.median(xs)
    spread = f"{min(xs):,.0f} - {max(xs):,.0f}" if len(xs) > 1 else ""
    return (f"{med:,.1f}" if med < 100 else f"{med:,.0f}"), spread


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, short measurements")
    p.add_argument("--rounds", type=int, default=None, help="rounds (medians over them); default 3, quick 1")
    p.add_argument("--seconds", type=float, default=None, help="seconds per measurement; default 5, quick 2")
    p.add_argument(
        "--tune-trials",
        type=int,
        default=None,
        help="Ray Tune trials with actor reuse; default 20, quick 12 (2/5 as many without)",
    )
    p.add_argument(
        "--candidates-per-call",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="driver call size of the main rows: auto (the spec default) or a number",
    )
    p.add_argument("--fixed-call", type=int, default=8, help="call size of the extra fixed-size 1-worker row")
    p.add_argument("--capacity-workers", type=int, default=256, help="fake workers for driver capacity")
    p.add_argument("--aof", default="always", choices=["always", "everysec", "no"], help="Redis appendfsync")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    secs = args.seconds or (2.0 if args.quick else 5.0)
    trials = args.tune_trials or (12 if args.quick else 20)
    fresh_trials = max(4, trials // 3 if args.quick else trials * 2 // 5)  # a fresh process each: slow
    cpc = args.candidates_per_call
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    console = Console(width=130)
    say = console.print
    load0 = os.getloadavg()
    t_start = time.monotonic()

    import ray

    from germinator_dist.distributed.ray_pool import RayPool

    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}  # per round, against the ideal measured next to the row
    busy: list[tuple[float, float]] = []  # 1-worker rows: worker's share on a CPU, waiting for a CPU
    commits: Counter = Counter()  # driver rows: accepted commits, stale batches, evaluations
    notes: list[str] = []
    with local_redis(args.aof) as port, SeedTable(redis_url(port)) as table:
        spec, dataset = create_job(table, make_spec("bench-search", 2, secs, cpc))
        batch = fitness_batch(spec, dataset)
        job = spec.job
        say(
            f"[dim]objective: {spec.model.input_dim}-256-256-{spec.model.num_classes} GerminatorMLP, rank "
            f"{spec.model.rank}, {spec.model.seed_bits}-bit seeds, digits fitness batch {len(batch)} rows, "
            f"layer {LAYER} searched, refit_steps 0, candidates per call: {cpc} (driver rows), "
            f"{args.fixed_call} (in-process and fixed rows)[/dim]"
        )
        snap = table.snapshot(job)
        inproc = InProcess(spec, batch, snap, args.fixed_call)

        ray.init(
            address="local",
            num_cpus=CORES,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.ERROR,
        )
        pool = RayPool(
            spec.model.model_dump_json(),
            batch.inputs.numpy(),
            batch.targets.numpy(),
            cpus=1,
            name_prefix="bench-w",
        )
        pool.resize(2)
        deadline = time.monotonic() + 180
        while len(pool.status().live) < 2:
            if time.monotonic() > deadline:
                sys.exit("Ray workers did not start within 180 s")
            time.sleep(0.1)
        live = pool.status().live
        actors = [pool._actors[w] for w in live]  # the same SeedWorker actors, for ActorPool.map
        worker_pid = pool.workers_info()[live[0]]["pid"]  # runs the 1-worker rows (same machine)
        # warm-up: compile the generator kernels in each worker, then one short driver run
        warm = ask_candidates(spec, snap, 64, rng_seed=3)
        ray.get(
            [
                a.evaluate.remote(LAYER, [list(c) for c in warm], snap.model_dump_json(), 0, 0.02)
                for a in actors
            ],
            timeout=300,
        )
        run_driver(table, job, make_spec(job, 2, 1.0, cpc), FirstN(pool, 2))
        say(f"[dim]started redis + Ray (2 workers) and warmed up in {time.monotonic() - t_start:.0f} s[/dim]")

        for r in range(rounds):
            # the ideal is measured right before and right after the rows compared with it, and each
            # round's ratio is taken against their mean: the machine's load drifts between rows
            before = timed(inproc.ideal_batch, secs / 2)
            rates.setdefault("inproc", []).append(timed(inproc.evaluator_batch, secs))
            rate, _ = run_driver(table, job, make_spec(job, 1, secs, args.fixed_call), FirstN(pool, 1))
            rates.setdefault("driver1fixed", []).append(rate)
            for n in (1, 2):
                t0, s0 = time.monotonic(), schedstat(worker_pid)
                rate, stats = run_driver(table, job, make_spec(job, n, secs, cpc), FirstN(pool, n))
                rates.setdefault(f"driver{n}", []).append(rate)
                commits.update(
                    {
                        f"{n}w accepted": stats.accepted,
                        f"{n}w stale": stats.stale,
                        f"{n}w evaluations": stats.evaluations,
                    }
                )
                s1 = schedstat(worker_pid)
                if n == 1 and s0 and s1:  # where the worker's wall time went: computing, or not
                    wall = time.monotonic() - t0
                    busy.append(((s1[0] - s0[0]) / wall, (s1[1] - s0[1]) / wall))
                if stats.lost_workers or stats.redispatched:
                    notes.append(f"round {r}: driver {n}w lost {stats.lost_workers} workers")
                if n == 1:
                    after = timed(inproc.ideal_batch, secs / 2)
            rates.setdefault("ideal", []).extend([before, after])
            for key in ("inproc", "driver1fixed", "driver1"):
                ratios.setdefault(key, []).append(rates[key][-1] / ((before + after) / 2))
            snap = table.snapshot(job)
            for n in (1, 2):
                rates.setdefault(f"map{n}", []).append(actor_pool_map(actors[:n], spec, snap, secs, 100 + r))
            say(
                f"[dim]round {r + 1}/{rounds} done ({time.monotonic() - t_start:.0f} s, load "
                f"{os.getloadavg()[0]:.1f})[/dim]"
            )
        pool.shutdown()
        if CALL_SIZES:
            notes.append(
                f"auto call size: the workers' call sizes at the end of the driver runs ranged "
                f"{min(CALL_SIZES)}-{max(CALL_SIZES)} candidates (median "
                f"{statistics.median(CALL_SIZES):.0f}; call_seconds {spec.search.call_seconds})"
            )
        for n in (1, 2):
            notes.append(
                f"driver {n}w rows ({cpc} per call): {commits[f'{n}w accepted']} commits accepted (each a"
                f" new snapshot for every worker) and {commits[f'{n}w stale']} stale batches dropped, in "
                f"{commits[f'{n}w evaluations']} evaluations over {rounds} rounds"
            )
        snap = table.snapshot(job)
        for key, reuse, n in (("tune", True, trials), ("tune_fresh", False, fresh_trials)):
            steady, overall = ray_tune(spec, batch, snap, n, reuse)
            rates[key] = [steady]
            notes.append(
                f"Ray Tune, reuse_actors={reuse}: {n} trials; {steady:.2f} trials/s from the first "
                f"trial's end to the last one's (in the table), {overall:.2f}/s over the whole "
                f"Tuner.fit with its start-up"
            )
        say(f"[dim]Ray Tune done ({time.monotonic() - t_start:.0f} s)[/dim]")
        ray.shutdown()

        # driver capacity: real SearchDriver + real Redis table, zero-cost pool, its own job
        cap_spec = make_spec("bench-capacity", args.capacity_workers, secs, args.fixed_call)
        cap_spec, _ = create_job(table, cap_spec)
        accepted = stale = 0
        for _ in range(rounds):
            rate, stats = run_driver(table, cap_spec.job, cap_spec, InstantPool(args.capacity_workers))
            rates.setdefault("capacity", []).append(rate)
            accepted += stats.accepted
            stale += stats.stale
        notes.append(
            f"driver capacity: {args.capacity_workers} fake workers x 2 in flight x {args.fixed_call} "
            f"candidates; 1 candidate in 1000 beats the incumbent: {accepted} commits accepted, "
            f"{stale} stale batches dropped over {rounds} runs"
        )
    took = time.monotonic() - t_start

    med = {k: statistics.median(v) for k, v in rates.items()}
    table_out = Table(
        title=f"Seed search throughput (candidates/s, median of {rounds} rounds; {CORES} CPU cores)",
        box=box.MARKDOWN if args.markdown else box.SIMPLE_HEAVY,
    )
    for col in ("row", "workers", "candidates/s", "range", "compared", "target", "met"):
        table_out.add_column(col, justify="left" if col in ("row", "compared") else "right")

    def row(name, key, workers, compared="", target="", met=None):
        rate, spread = fmt_rate(rates[key])
        mark = "" if met is None else ("yes" if met else "NO")
        table_out.add_row(name, str(workers), rate, spread, compared, target, mark)

    row("ideal: stored weights, no generation, no Ray", "ideal", "1 thread", "100% (the limit)")
    ratio = {k: statistics.median(v) for k, v in ratios.items()}
    row("LayerEvaluator in-process, no Ray", "inproc", "1 thread", f"{ratio['inproc']:.0%} of ideal")
    w1 = ratio["driver1"]
    name = f"this driver (SearchDriver, RayPool, Redis), calls {cpc}"
    row(name, "driver1", 1, f"{w1:.0%} of ideal", ">= 80%", w1 >= 0.8)
    row(
        f"this driver, every call {args.fixed_call} candidates",
        "driver1fixed",
        1,
        f"{ratio['driver1fixed']:.0%} of ideal",
    )
    eff = med["driver2"] / (2 * med["driver1"])
    row(name, "driver2", 2, f"scaling efficiency {eff:.0%}")
    for n in (1, 2):
        x = med[f"driver{n}"] / med[f"map{n}"]
        row(
            "ActorPool.map, 1 candidate per call",
            f"map{n}",
            n,
            f"ours ({n}w) {x:.2f}x faster",
            ">= 2x",
            x >= 2,
        )
    x = med["driver2"] / med["tune"]
    row(
        "Ray Tune + NevergradSearch, actors reused",
        "tune",
        "<= 2 trials",
        f"ours (2w) {x:,.0f}x faster",
        ">= 50x",
        x >= 50,
    )
    x = med["driver2"] / med["tune_fresh"]
    row(
        "Ray Tune + NevergradSearch, Tune defaults",
        "tune_fresh",
        "<= 2 trials",
        f"ours (2w) {x:,.0f}x faster",
        ">= 50x",
        x >= 50,
    )
    row(
        "driver capacity, zero-cost pool",
        "capacity",
        f"{args.capacity_workers} fake",
        "propose+dispatch+commit",
        ">= 20,000",
        med["capacity"] >= 20_000,
    )
    console.print(table_out)
    load1 = os.getloadavg()
    say(
        f"machine: {CORES} CPU cores ({os.uname().machine}). With 2 workers, the driver, Redis and Ray's own "
        f"processes share these {CORES} cores with the workers: 2-worker scaling is bounded by the machine."
    )
    say(
        f"load average (1 min) {load0[0]:.1f} at the start, {load1[0]:.1f} at the end; "
        f"torch {torch.__version__}, ray {ray.__version__}; {took:.0f} s in all"
    )
    if busy:
        on = statistics.median(b[0] for b in busy)
        wait = statistics.median(b[1] for b in busy)
        say(
            f"1-worker rows: the worker's thread was on a CPU {on:.0%} of the time, runnable but waiting for "
            f"a CPU (other processes) {wait:.0%}, idle (waiting for work) {max(0.0, 1 - on - wait):.0%}; "
            f"the in-process rows' thread was on a CPU {statistics.median(IN_PROCESS_CPU):.0%} of the time"
        )
    for n in notes:
        say(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

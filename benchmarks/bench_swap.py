"""Swap-search throughput: the gradient screen against its limit, against forward-loss evaluation, and the
driver in swap mode on Ray (docs/swap_benchmark.md).

    .venv/bin/python benchmarks/bench_swap.py            # full run (about 5-6 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_swap.py --quick    # smoke run (about 1-2 minutes, most of it Ray)
    options: --rounds N (default 3, quick 1), --seconds S per in-process measurement (1.0, quick 0.3),
             --driver-seconds S per driver run (20, quick 4), --no-driver (in-process tables only)

Every figure is measured in this one run; rows take turns within a round (so a load spike from another
process hits them alike), rates are medians over rounds and a ratio is the median of its per-round ratios.
One thread (``torch.set_num_threads(1)``), as a worker runs. Layers, each at its initial (untrained) seeds
and floats, 16-bit seeds: the digits MLP 64-256-256-10 at rank 32 and 128 (layers 64->256, 256->256,
256->10; fitness batch 1024 rows), and the byte LM of examples/lm.yaml (vocab 256, d_model 64, d_ff 128,
2 blocks, context 64, no expert splits, rank 32; the embedding 256->64, block 0's up 192->128 and down
128->64, the head 64->256; fitness batch 64 windows of 64 bytes).

Table 1, per worker: **screen** = ``SwapScorer.screen`` on N = 1024 fresh candidate seeds (one generator
call for their components, then one product per factor against G * F); **limit** = the same products on
component vectors generated beforehand; target: screen >= 50% of limit. The generator call alone is
timed too, so the two columns on the right split the screen's time.
Table 2: **evaluate** = ``LayerEvaluator.evaluate`` (no refit) on calls of 32 candidate seed vectors that
each replace one component slot of the incumbent with a fresh seed, the forward-loss path the
whole-vector proposers use; target: screening >= 100x more candidates/s. **verify** = the verify step of
a swap call (the components of K candidates, then ``SwapScorer.verify``'s line search, one sign each);
**swap call** = ``LayerEvaluator.swap`` with N 1024, K 4 on one slot, steady state (G cached); **G** =
``LayerEvaluator._grad``, paid once per (snapshot, layer).
Table 3: ``SearchDriver`` in swap mode (``search.swap``: candidates 1024, top_k 4, weakest slot) on digits
rank 32, every layer, ``RayPool`` of ``SeedWorker`` actors and the real Redis table (as
benchmarks/bench_search.py runs them), 1 and 2 workers, each run a fresh job from the initial model:
candidates considered per second as the driver counts them (each call's block, 1024: the budget's unit;
median of runs; screened/s pools the runs), swaps accepted and stale, the 2-worker scaling.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from bench_search import FirstN, run_driver, schedstat, timed  # sets Ray's environment (before ray)
from local_redis import local_redis, redis_url

from germinator_dist.config import FitnessSpec, JobSpec, ModelSpec, SearchSpec, WorkersSpec
from germinator_dist.core.data import load_digits_dataset, load_text_dataset
from germinator_dist.core.model import build_model
from germinator_dist.records import CandidateBlock, SlotTask, SwapTask
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.job_setup import create_job, fitness_batch
from germinator_dist.search.swap_proposer import SwapConfig

N, K = 1024, 4  # candidates screened per swap call, verified per call
EVAL_CALL = 32  # candidates per LayerEvaluator.evaluate call (the forward-loss baseline)
BITS = 16
CORES = os.cpu_count() or 1


def load() -> float:
    return os.getloadavg()[0]


# ---- in-process rows: one (model, layer) -------------------------------------------------------------
class LayerBench:
    """A LayerEvaluator on a model's initial snapshot, the SwapScorer of one layer, and each row's call."""

    def __init__(self, model: str, spec: ModelSpec, batch, k: int, name: str) -> None:
        self.model, self.k, self.name = model, k, name
        self.ev = LayerEvaluator(spec, batch)
        m = build_model(spec)
        self.ev.load_snapshot(m.get_seeds(), m.get_floats(), (1,) * len(m.layers))
        self.layer = layer = self.ev.model.layers[k]
        self.shape = f"{layer.in_features}->{layer.out_features}"
        self.inc = layer.get_seeds()
        self.held = set(self.inc[: layer.rank])
        self.slot = 0
        self.sw = self.ev._swap_scorer(k, "screen")  # G, built once per snapshot
        self.cursor = 4096 * k + 3  # next fresh candidate seed
        self.vecs = layer.component_batch(self.fresh_range(N), "cpu")  # the limit's vectors, made once
        seeds = self.fresh_range(4096)  # the verify rows' candidates: signs as the screen gives them
        signs = [-1.0 if v * self.sw.scale > 0 else 1.0 for v in self.sw.screen(seeds).tolist()]  # descent
        self.verify_pool = [(s, g) for s, g in zip(seeds, signs) if s not in self.held]
        self.vpos = 0
        self.evals_per_verify: list[float] = []
        self.call_ms: list[float] = []
        self.considered: list[int] = []
        self.g_ms = 1e3 * statistics.median(self._time(lambda: self.ev._grad(k)) for _ in range(3))
        for fn in (self.screen, self.limit, self.generate, self.evaluate, self.verify):
            fn()  # warm up: compiled generator kernels, the slot's cached parts, the incumbent's loss
        self.swap_once()

    @staticmethod
    def _time(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def fresh_range(self, n: int) -> np.ndarray:  # (n,) int64, as the worker's candidate blocks expand
        start = self.cursor
        self.cursor = (self.cursor + n) % ((1 << BITS) - n)
        return np.arange(start, start + n, dtype=np.int64)

    def screen(self) -> int:  # row 1: generation + products
        self.sw.screen(self.fresh_range(N))
        return N

    def limit(self) -> int:  # row 2: the products alone, on vectors generated beforehand
        gf1, gf2 = self.sw.gf
        a1, b1, a2, b2 = self.vecs
        with torch.no_grad():
            _ = ((a1 @ gf1) * b1).sum(1) + ((a2 @ gf2) * b2).sum(1)
        return N

    def generate(self) -> int:  # the screen's generator call alone (where its time goes)
        self.layer.component_batch(self.fresh_range(N), "cpu")
        return N

    def evaluate(self) -> int:  # row 3: forward-loss evaluation of one-slot changes, no refit
        cands = []
        for i, s in enumerate(self.fresh_range(EVAL_CALL + len(self.held))):
            if s not in self.held and len(cands) < EVAL_CALL:
                c = list(self.inc)
                c[(self.cursor + i) % self.layer.rank] = s
                cands.append(c)
        self.ev.evaluate(self.k, cands)
        return len(cands)

    def verify(self) -> int:  # the verify step of a swap call: K candidates' components, their line search
        picks = [self.verify_pool[(self.vpos + i) % len(self.verify_pool)] for i in range(K)]
        self.vpos += K
        comps = self.layer.make_components([s for s, _ in picks], "cpu")
        evals = sum(self.sw.verify(self.slot, s, comps[s], (g,))[2] for s, g in picks)
        self.evals_per_verify.append(evals / K)
        self.ev._trim()
        return K

    def swap_once(self) -> float:
        block = CandidateBlock(kind="range", start=self.fresh_range(N)[0], count=N)
        task = SwapTask(layer=self.k, slots=(SlotTask(slot=self.slot, slot_gen=0, block=block),), top_k=K)
        t = time.perf_counter()
        res = self.ev.swap(task, BITS)
        took = time.perf_counter() - t
        self.considered.append(sum(sw.screened + sw.verified for sw in res.swaps))
        return took

    def swap_calls(self, seconds: float) -> float:
        """Whole swap calls for about ``seconds``: candidates considered per second."""
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            self.call_ms.append(1e3 * self.swap_once())
            done += self.considered[-1]
        return done / (time.perf_counter() - start)


def make_benches() -> list[LayerBench]:
    digits, text = load_digits_dataset(), load_text_dataset()
    out = []
    for r in (32, 128):
        spec = ModelSpec(hidden=(256, 256), rank=r, seed_bits=BITS).resolved(**digits.dims())
        batch = digits.fitness_batch(1024)
        for k in range(3):
            out.append(LayerBench(f"digits MLP r{r}", spec, batch, k, f"{k}"))
    spec = ModelSpec(kind="lm", d_model=64, d_ff=128, n_blocks=2, context=64, rank=32, seed_bits=BITS)
    spec = spec.resolved(**text.dims())
    batch = text.fitness_batch(64, spec.context)
    for k, name in ((0, "embedding"), (1, "up (block 0)"), (2, "down (block 0)"), (5, "head")):
        out.append(LayerBench("byte LM r32", spec, batch, k, f"{k} {name}"))
    return out


# ---- driver rows --------------------------------------------------------------------------------------
def swap_job(job: str, workers: int, seconds: float) -> JobSpec:
    model = ModelSpec(hidden=(256, 256), rank=32, seed_bits=BITS)
    search = SearchSpec(swap=SwapConfig(candidates=N, top_k=K), budget_evals=None, budget_seconds=seconds)
    fitness = FitnessSpec(batch_size=1024, split="train")  # the in-process rows' batch: calls comparable
    return JobSpec(job=job, mode="search", model=model, search=search, fitness=fitness,
                   workers=WorkersSpec(count=workers, max=64))  # fmt: skip


def driver_rows(rounds: int, seconds: float, say) -> tuple[dict, list[str]]:
    import ray

    from germinator_dist.distributed.ray_pool import RayPool
    from germinator_dist.table import SeedTable

    rows: dict[int, list] = {1: [], 2: []}  # workers -> [(considered/s, stats)]
    notes, busy = [], []
    t0 = time.monotonic()
    with local_redis("always") as port, SeedTable(redis_url(port)) as table:
        spec, dataset = create_job(table, swap_job("swap-warm", 2, 2.0))
        batch = fitness_batch(spec, dataset)
        ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", logging_level=logging.ERROR)  # fmt: skip
        pool = RayPool(spec.model.model_dump_json(), batch.inputs.numpy(), batch.targets.numpy(),
                       cpus=1, name_prefix="bench-swap-w")  # fmt: skip
        pool.resize(2)
        deadline = time.monotonic() + 180
        while len(pool.status().live) < 2:
            if time.monotonic() > deadline:
                sys.exit("Ray workers did not start within 180 s")
            time.sleep(0.1)
        live = pool.status().live
        pid = pool.workers_info()[live[0]]["pid"]  # runs the 1-worker rows
        snap_json = table.snapshot(spec.job).model_dump_json()
        block = CandidateBlock(kind="range", start=0, count=64)
        slot = SlotTask(slot=0, slot_gen=0, block=block)
        warm = [SwapTask(layer=k, slots=(slot,), top_k=1).model_dump_json() for k in range(3)]
        ray.get([pool._actors[w].swap.remote(t, snap_json, BITS) for w in live for t in warm], timeout=300)
        run_driver(table, spec.job, spec, FirstN(pool, 2))
        say(f"driver: redis + Ray (2 workers) started and warmed up in {time.monotonic() - t0:.0f} s, "
            f"load {load():.1f}")  # fmt: skip
        for r in range(rounds):
            for n in (1, 2):
                job, _ = create_job(table, swap_job(f"swap-{n}w-{r}", n, seconds))
                s0, w0 = schedstat(pid), time.monotonic()
                rate, stats = run_driver(table, job.job, job, FirstN(pool, n))
                s1 = schedstat(pid)
                if n == 1 and s0 and s1:  # the worker's wall time: on a CPU, waiting for one, idle
                    wall = time.monotonic() - w0
                    busy.append(((s1[0] - s0[0]) / wall, (s1[1] - s0[1]) / wall))
                rows[n].append((rate, stats))
                if stats.lost_workers or stats.redispatched:
                    notes.append(f"round {r + 1}, {n} workers: {stats.lost_workers} workers lost")
            say(f"driver round {r + 1}/{rounds} done, load {load():.1f}")
        pool.shutdown()
        ray.shutdown()
    if busy:
        on, wait = (statistics.median(b[i] for b in busy) for i in (0, 1))
        notes.append(
            f"1-worker runs: the worker was on a CPU {on:.0%} of the wall time, runnable but "
            f"waiting for a CPU {wait:.0%}, idle (waiting for work) {max(0.0, 1 - on - wait):.0%}"
        )
    return rows, notes


# ---- output -------------------------------------------------------------------------------------------
def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, short measurements")
    p.add_argument("--rounds", type=int, default=None, help="rounds (medians over them); default 3, quick 1")
    p.add_argument("--seconds", type=float, default=None, help="per in-process row; default 1.0, quick 0.3")
    p.add_argument("--driver-seconds", type=float, default=None, help="per driver run; default 20, quick 4")
    p.add_argument("--no-driver", action="store_true", help="skip the driver rows (no Redis, no Ray)")
    args = p.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    secs = args.seconds or (0.3 if args.quick else 1.0)
    dsecs = args.driver_seconds or (4.0 if args.quick else 20.0)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731 - progress; tables go to stdout
    load0, t_start = load(), time.monotonic()
    benches = make_benches()
    say(f"in-process: {len(benches)} layers set up and warmed up in {time.monotonic() - t_start:.0f} s, "
        f"load {load():.1f}")  # fmt: skip
    rates: dict[tuple[int, str], list[float]] = {}
    ratios: dict[tuple[int, str], list[float]] = {}
    for r in range(rounds):
        for i, b in enumerate(benches):
            got = {name: timed(getattr(b, name), secs) for name in ("screen", "limit", "generate")}
            got["evaluate"] = timed(b.evaluate, secs)
            got["verify"] = timed(b.verify, secs)
            got["swap"] = b.swap_calls(secs)
            for name, v in got.items():
                rates.setdefault((i, name), []).append(v)
            ratios.setdefault((i, "limit"), []).append(got["screen"] / got["limit"])
            ratios.setdefault((i, "evaluate"), []).append(got["screen"] / got["evaluate"])
        say(f"in-process round {r + 1}/{rounds} done ({time.monotonic() - t_start:.0f} s), load {load():.1f}")
    load_mid = load()
    drv, notes = driver_rows(rounds, dsecs, say) if not args.no_driver else ({}, [])
    med = {key: statistics.median(v) for key, v in rates.items()}
    ratio = {key: statistics.median(v) for key, v in ratios.items()}

    t1, t2 = [], []
    for i, b in enumerate(benches):
        sc, lim, gen = med[(i, "screen")], med[(i, "limit")], med[(i, "generate")]
        x = ratio[(i, "limit")]
        t1.append([b.model, b.name, b.shape, num(sc), num(lim), f"{x:.0%}", "yes" if x >= 0.5 else "NO",
                   f"{1e3 * N / gen:.2f}", f"{1e3 * N / lim:.2f}"])  # fmt: skip
        y = ratio[(i, "evaluate")]
        t2.append([b.model, b.name, b.shape, num(med[(i, "evaluate")]), num(sc), f"{y:,.0f}x",
                   "yes" if y >= 100 else "NO", num(med[(i, "verify")]),
                   f"{statistics.mean(b.evals_per_verify):.1f}", f"{statistics.median(b.call_ms):.1f}",
                   f"{1e3 * N / sc / statistics.median(b.call_ms):.0%}", num(med[(i, "swap")]),
                   f"{b.g_ms:.1f}"])  # fmt: skip
    print(f"\n### 1. Screening, candidates/s per worker (1 thread), N = {N} (median of {rounds} rounds)\n")
    print(md_table(["model", "layer", "in->out", "screen (row 1)", "limit: products only (row 2)",
                    "screen / limit", ">= 50%", "generation ms/1024", "products ms/1024"], t1))  # fmt: skip
    print(f"\n### 2. Screening vs forward-loss evaluation (candidates/s per worker; swap N {N}, K {K})\n")
    print(md_table(["model", "layer", "in->out", f"evaluate ({EVAL_CALL}/call, no refit)", "screen",
                    "screen / evaluate", ">= 100x", "verify cand/s", "loss evals / verified", "swap call ms",
                    "screen share of call", "swap call considered/s", "G ms per snapshot"], t2))  # fmt: skip
    if drv:
        # the in-process reference: whole swap calls on digits r32's three layers in turn, no Ray, no table
        ref_ms = sum(statistics.median(benches[i].call_ms) for i in range(3))
        ref = sum(statistics.median(benches[i].considered) for i in range(3)) / (ref_ms / 1e3)
        t3 = []
        for n in (1, 2):
            rs = [rate for rate, _ in drv[n]]
            st = [s for _, s in drv[n]]
            secs_run = sum(s.seconds for s in st)
            swaps = sum(s.swaps for s in st)
            t3.append([str(n), num(statistics.median(rs)), f"{min(rs):,.0f} - {max(rs):,.0f}",
                       num(sum(s.screened for s in st) / secs_run), str(swaps), f"{swaps / secs_run:.2f}",
                       str(sum(s.stale for s in st)),
                       f"{statistics.median(rs) / ref:.0%}"])  # fmt: skip
        eff = statistics.median(r for r, _ in drv[2]) / (2 * statistics.median(r for r, _ in drv[1]))
        t3[1].append(f"{eff:.0%}")
        t3[0].append("")
        print(f"\n### 3. SearchDriver in swap mode, digits r32 (RayPool, Redis), {rounds} x {dsecs:g} s\n")
        head = ["workers", "considered/s", "range", "screened/s", "swaps accepted (all runs)", "swaps/s",
                "stale swaps (all runs)", "of in-process swap calls", "2-worker scaling"]  # fmt: skip
        print(md_table(head, t3))
        notes.insert(
            0,
            f"in-process reference: whole swap calls on digits r32's layers 0, 1, 2 in turn, "
            f"{num(ref)} considered/s (no Ray, no table; the snapshot and G never change)",
        )
    print()
    for n in notes:
        print(f"- {n}")
    took = time.monotonic() - t_start
    print(
        f"- {CORES} CPU cores ({os.uname().machine}); load average (1 min) {load0:.2f} at the start, "
        f"{load_mid:.2f} after the in-process rows, {load():.2f} at the end; torch {torch.__version__}, "
        f"{rounds} rounds, {secs:g} s per in-process row; {took:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

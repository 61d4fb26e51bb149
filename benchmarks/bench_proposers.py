"""Compare seed proposers on toy objectives: best loss found within a budget, and proposer overhead.

    python benchmarks/bench_proposers.py            # full table (about a minute, one core)
    python benchmarks/bench_proposers.py --quick    # smaller budgets, two rng seeds
    python benchmarks/bench_proposers.py --rank 32  # a rank-32 layer (36 seeds) instead of rank 4

A layer of rank r holds r + 4 seeds: components c0..c{r-1}, then mask, scale, shift, bias (docs/layout.md);
no candidate repeats a component seed. Objectives (germinator_dist.search.proposers.toy_objectives), all r + 4
slots searched, incumbent = components 0..r-1 and all-zero layer seeds:
  * hash8 / hash32: SeparableHashLandscape at 8 / 32-bit seeds -- one random term per slot plus a weak
    coupling of neighbouring slots; lower is better, the floor is about 0 (the start is printed).
  * hamming8: number of slots that differ from a hidden 8-bit target with distinct components (r + 4 at
    the start, 0 at the target).
Candidates are asked in batches of 16 (as a driver with work in flight would) and told in reverse order;
nevergrad gets num_workers=16, the evolutionary proposer its default population of 8.
The second table is the proposer's own cost per candidate (ask + tell, zero-cost objective) at rank 4
and rank 32, 32-bit seeds (8-bit for exhaustive).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

from germinator_dist.search.proposers import make_proposer
from germinator_dist.search.proposers.toy_objectives import HammingToTarget, SeparableHashLandscape

PROPOSERS = (
    "random",
    "evolutionary",
    "exhaustive",
    "DiscreteOnePlusOne",
    "PortfolioDiscreteOnePlusOne",
    "NGOpt",
    "TwoPointsDE",
)
BATCH = 16


def population_for(proposer: str) -> int:
    """Evolutionary: its default population (8); nevergrad: num_workers = the batch size."""
    return 8 if proposer == "evolutionary" else BATCH


def start_for(rank: int) -> tuple[int, ...]:
    """The incumbent: distinct components 0..rank-1, then mask, scale, shift, bias all 0."""
    return (*range(rank), 0, 0, 0, 0)


def objective_for(name: str, rng_seed: int, rank: int):
    if name == "hamming8":  # components (odd step mod 256: distinct for rank <= 256), then layer seeds
        target = [(rng_seed * 131 + 17 * k + 1) % 256 for k in range(rank + 4)]
        return 8, HammingToTarget(target)
    bits = 8 if name == "hash8" else 32
    return bits, SeparableHashLandscape(salt=1000 + rng_seed)


def run_once(proposer: str, objective: str, budget: int, rng_seed: int, rank: int) -> float | None:
    """Best loss found; None when the proposer does not apply (exhaustive over 2**32 values)."""
    bits, f = objective_for(objective, rng_seed, rank)
    if proposer == "exhaustive" and bits > 16:
        return None
    start = start_for(rank)
    p = make_proposer(
        proposer, seed_bits=bits, budget=budget, population=population_for(proposer), rng_seed=rng_seed,
        incumbent_seeds=start, incumbent_loss=f(start),
    )  # fmt: skip
    done = 0
    while done < budget:
        cands = p.ask(min(BATCH, budget - done))
        if not cands:
            break
        for c in reversed(cands):
            p.tell(c, f(c.seeds))
        done += len(cands)
    return p.best()[1]


def overhead_us(proposer: str, rank: int, n: int = 4000) -> float:
    p = make_proposer(proposer, seed_bits=32 if proposer != "exhaustive" else 8, budget=n,
                      population=population_for(proposer), incumbent_seeds=start_for(rank),
                      incumbent_loss=1.0)  # fmt: skip
    t = time.perf_counter()
    done = 0
    while done < n:
        cands = p.ask(BATCH)
        for c in cands:
            p.tell(c, float(c.tag % 7))
        done += len(cands)
    return (time.perf_counter() - t) / done * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="budgets 256 and 1024, two rng seeds")
    ap.add_argument("--seeds", type=int, default=None, help="rng seeds per cell (default 4, quick 2)")
    ap.add_argument("--rank", type=int, default=4, help="the layer's rank: rank + 4 seeds (default 4)")
    args = ap.parse_args()
    rank = args.rank
    if not 1 <= rank <= 256:
        ap.error(f"--rank {rank}: expected 1..256 (hamming8's components are distinct 8-bit seeds)")
    budgets = (256, 1024) if args.quick else (256, 1024, 4096)
    n_seeds = args.seeds or (2 if args.quick else 4)
    warnings.simplefilter("ignore")

    print(
        f"best loss found (rank {rank}: {rank + 4} seeds; mean +- sd over {n_seeds} rng seeds; "
        f"lower is better; batch {BATCH})"
    )
    header = f"{'proposer':<28} {'budget':>6}" + "".join(f" {o:>15}" for o in ("hash8", "hash32", "hamming8"))
    print(header)
    print("-" * len(header))
    starts = []
    for objective in ("hash8", "hash32", "hamming8"):
        losses = [objective_for(objective, s, rank)[1](start_for(rank)) for s in range(n_seeds)]
        starts.append(f"{statistics.mean(losses):>8.3f}       ")
    print(f"{'(start: the incumbent)':<28} {0:>6}" + "".join(f" {c}" for c in starts))
    for proposer in PROPOSERS:
        for budget in budgets:
            cells = []
            for objective in ("hash8", "hash32", "hamming8"):
                found = [run_once(proposer, objective, budget, s, rank) for s in range(n_seeds)]
                if found[0] is None:
                    cells.append(f"{'n/a':>15}")
                else:
                    sd = statistics.stdev(found) if len(found) > 1 else math.nan
                    cells.append(f"{statistics.mean(found):>8.3f} +-{sd:>5.2f}")
            print(f"{proposer:<28} {budget:>6}" + "".join(f" {c}" for c in cells))
    print()
    print("proposer overhead per candidate (ask + tell, zero-cost objective)")
    ranks = (4, 32)
    print(f"{'proposer':<28}" + "".join(f" {f'us r={r}':>8} {f'cand/s r={r}':>12}" for r in ranks))
    for proposer in PROPOSERS:
        cells = []
        for r in ranks:
            us = overhead_us(proposer, r)
            cells.append(f" {us:>8.1f} {1e6 / us:>12.0f}")
        print(f"{proposer:<28}" + "".join(cells))


if __name__ == "__main__":
    main()

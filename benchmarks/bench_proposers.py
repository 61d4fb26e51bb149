"""Compare seed proposers on toy objectives: best loss found within a budget, and proposer overhead.

    python benchmarks/bench_proposers.py            # full table (about a minute, one core)
    python benchmarks/bench_proposers.py --quick    # smaller budgets, two rng seeds

Objectives (germinator_dist.proposers.toy_objectives), all 8 slots searched, incumbent = all-zero seeds:
  * hash8 / hash32: SeparableHashLandscape at 8 / 32-bit seeds -- one random term per slot plus a weak
    coupling of neighbouring slots; lower is better, the floor is about 0 (the start is printed).
  * hamming8: number of slots that differ from a hidden 8-bit target (8 at the start, 0 at the target).
Candidates are asked in batches of 16 (as a driver with work in flight would) and told in reverse order;
nevergrad gets num_workers=16, the evolutionary proposer its default population of 8.
The second table is the proposer's own cost per candidate (ask + tell, zero-cost objective).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

from germinator_dist.proposers import make_proposer
from germinator_dist.proposers.toy_objectives import HammingToTarget, SeparableHashLandscape

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


def objective_for(name: str, rng_seed: int):
    if name == "hamming8":
        target = [(rng_seed * 131 + 17 * k + 1) % 256 for k in range(8)]
        return 8, HammingToTarget(target)
    bits = 8 if name == "hash8" else 32
    return bits, SeparableHashLandscape(salt=1000 + rng_seed)


def run_once(proposer: str, objective: str, budget: int, rng_seed: int) -> float | None:
    """Best loss found; None when the proposer does not apply (exhaustive over 2**32 values)."""
    bits, f = objective_for(objective, rng_seed)
    if proposer == "exhaustive" and bits > 16:
        return None
    start = (0,) * 8
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


def overhead_us(proposer: str, n: int = 4000) -> float:
    p = make_proposer(proposer, seed_bits=32 if proposer != "exhaustive" else 8, budget=n,
                      population=population_for(proposer), incumbent_seeds=(0,) * 8,
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
    args = ap.parse_args()
    budgets = (256, 1024) if args.quick else (256, 1024, 4096)
    n_seeds = args.seeds or (2 if args.quick else 4)
    warnings.simplefilter("ignore")

    print(f"best loss found (mean +- sd over {n_seeds} rng seeds; lower is better; batch {BATCH})")
    header = f"{'proposer':<28} {'budget':>6}" + "".join(f" {o:>15}" for o in ("hash8", "hash32", "hamming8"))
    print(header)
    print("-" * len(header))
    starts = []
    for objective in ("hash8", "hash32", "hamming8"):
        losses = [objective_for(objective, s)[1]((0,) * 8) for s in range(n_seeds)]
        starts.append(f"{statistics.mean(losses):>8.3f}       ")
    print(f"{'(start: the incumbent)':<28} {0:>6}" + "".join(f" {c}" for c in starts))
    for proposer in PROPOSERS:
        for budget in budgets:
            cells = []
            for objective in ("hash8", "hash32", "hamming8"):
                found = [run_once(proposer, objective, budget, s) for s in range(n_seeds)]
                if found[0] is None:
                    cells.append(f"{'n/a':>15}")
                else:
                    sd = statistics.stdev(found) if len(found) > 1 else math.nan
                    cells.append(f"{statistics.mean(found):>8.3f} +-{sd:>5.2f}")
            print(f"{proposer:<28} {budget:>6}" + "".join(f" {c}" for c in cells))
    print()
    print("proposer overhead per candidate (ask + tell, zero-cost objective)")
    print(f"{'proposer':<28} {'us/cand':>8} {'cand/s':>9}")
    for proposer in PROPOSERS:
        us = overhead_us(proposer)
        print(f"{proposer:<28} {us:>8.1f} {1e6 / us:>9.0f}")


if __name__ == "__main__":
    main()

"""Core benchmark: the generator, rank components, layer regeneration, streaming, checkpoint size.

    .venv/bin/python benchmarks/bench_core.py            # full run (1-2 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_core.py --quick    # smoke run (fewer sizes and repeats, ~20-30 s)
    options: --markdown (tables as Markdown), --threads N (layer/streaming tables; default 1), --reps N

Every row of every table is measured in this one run, with the baselines next to ours:

1. Generator throughput (GB/s of generated int8 bytes), 1 thread and all threads: ``prng.random_bytes``
   (compiled fast path and eager path) against ``torch.randint`` (CPU generator, mt19937) and numpy's
   ``Philox`` (``integers(int8)`` and ``bytes``).
2. Rank components (docs/layout.md): a layer's r components generated in one call
   (``layer.make_components`` and ``prng.components``: one seed per component, four vectors each) against
   the previous layout's two factor pairs (four ``int_tensor`` requests (out, r), (r, in), (out, r),
   (r, in) in one ``prng.int_tensors`` call), for the digits layers at rank 32 and 128.
3. Regeneration of one ``SeedLinear`` (``generate``) and building W from it (``weight``).
4. Streaming: bytes held by generated weights against depth (tracked tensor by tensor, freed tensors
   subtracted through ``weakref.finalize``), process peak RSS growth, and forward time against an equal
   MLP of ``nn.Linear`` layers with stored weights.
5. Checkpoint bytes (the whole JSON file) of the digits MLP at several ranks and of a byte LM.

Timings are medians over interleaved repeats (all methods of a table take turns), because the machine may
be shared; the spread is printed where it matters.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table
from torch import nn

from germinator_dist.config import ModelSpec
from germinator_dist.core import prng
from germinator_dist.core.checkpoint import checkpoint_bytes
from germinator_dist.core.layers import ROLE, SeedLinear
from germinator_dist.core.model import GerminatorMLP, build_model

MB = 1 << 20
KIB = 1 << 10
SEED = 0x5EED_1234_ABCD  # a 63-bit-range seed for the throughput runs


# ---- configuration ----------------------------------------------------------------------------------
class Config:
    def __init__(self, quick: bool, reps: int | None) -> None:
        self.quick = quick
        self.gen_sizes = [256 * KIB, 4 * MB] if quick else [256 * KIB, 16 * MB]
        self.gen_reps = reps or (5 if quick else 11)
        self.layer_sizes = [256, 1024] if quick else [256, 1024, 4096]
        self.layer_ranks = [16, 64]
        self.layer_reps = reps or (3 if quick else 7)
        self.comp_shapes = [(256, 64), (256, 256), (10, 256)]  # (out, in): the digits MLP's layers
        self.comp_ranks = [32, 128]
        self.comp_reps = reps or (5 if quick else 11)
        self.depths = [4, 64] if quick else [4, 8, 16, 32, 64]
        self.width = 512
        self.batch = 256
        self.rank = 16
        self.fwd_reps = reps or (3 if quick else 7)
        self.min_sample_s = 0.005 if quick else 0.02  # a timed sample loops a fast call up to this long


# ---- timing helpers -----------------------------------------------------------------------------------
def timed_samples(fns: dict[str, Callable[[], object]], reps: int, min_sample_s: float) -> dict[str, list]:
    """Seconds per call of each fn: ``reps`` samples each, the fns taking turns (round-robin).

    Each fn is called twice first (warm-up); a sample loops the call so that it lasts about
    ``min_sample_s`` (so sub-millisecond calls are not timer noise).
    """
    inner = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        inner[name] = max(1, math.ceil(min_sample_s / max(dt, 1e-7)))
    out: dict[str, list] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            k = inner[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            out[name].append((time.perf_counter() - t0) / k)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def eager_prng() -> Iterator[None]:
    """GERMINATOR_PRNG_COMPILE=0 semantics: prng.compile_enabled() reads the variable on every call."""
    old = os.environ.get("GERMINATOR_PRNG_COMPILE")
    os.environ["GERMINATOR_PRNG_COMPILE"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["GERMINATOR_PRNG_COMPILE"]
        else:
            os.environ["GERMINATOR_PRNG_COMPILE"] = old


def note(console: Console, text: str) -> None:
    """Print a line of prose as is (no rich markup, no highlighting)."""
    console.print(text, markup=False, highlight=False)


def make_table(title: str, box_style) -> Table:
    """A table with its title on the left; in Markdown mode the title is a heading."""
    if box_style is box.MARKDOWN:
        title = "### " + title
    return Table(title=title, box=box_style, title_justify="left")


def fmt_size(n: int) -> str:
    return f"{n // MB} MiB" if n >= MB else f"{n // KIB} KiB"


# ---- memory helpers -------------------------------------------------------------------------------
def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class LiveTracker:
    """Live bytes of generated tensors: each tensor registers its storage; weakref.finalize subtracts it.

    Storages are counted once however many tracked tensors share them; a tensor object registered twice
    (a cached tensor returned again) is counted once. Also records how many distinct layers had generated
    tensors alive at the same time.
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.max_layers = 0
        self._objs: set[int] = set()  # id() of tracked tensor objects still alive
        self._storages: dict[int, list] = {}  # storage ptr -> [tracked objects, nbytes, layer]
        self._layer_storages: dict[int, int] = {}  # layer -> live tracked storages

    def add(self, t: object, layer: int) -> None:
        if not isinstance(t, torch.Tensor) or id(t) in self._objs:
            return
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = [0, storage.nbytes(), layer]
            self.live += entry[1]
            self._layer_storages[layer] = self._layer_storages.get(layer, 0) + 1
        entry[0] += 1
        self._objs.add(id(t))
        weakref.finalize(t, self._release, id(t), ptr)
        self.peak = max(self.peak, self.live)
        self.max_layers = max(self.max_layers, sum(1 for v in self._layer_storages.values() if v))

    def _release(self, obj_id: int, ptr: int) -> None:
        self._objs.discard(obj_id)
        entry = self._storages[ptr]
        entry[0] -= 1
        if entry[0] == 0:
            del self._storages[ptr]
            self.live -= entry[1]
            self._layer_storages[entry[2]] -= 1


@contextlib.contextmanager
def tracking(tracker: LiveTracker) -> Iterator[LiveTracker]:
    """Patch SeedLinear._tensor, .generate and .weight so that every tensor they return is tracked."""
    orig_tensor, orig_generate, orig_weight = SeedLinear._tensor, SeedLinear.generate, SeedLinear.weight

    def _tensor(self, name, seed, device, dtype):
        t = orig_tensor(self, name, seed, device, dtype)
        tracker.add(t, self.stream)
        return t

    def generate(self, *args, **kwargs):
        fixed = orig_generate(self, *args, **kwargs)
        for t in vars(fixed).values():
            tracker.add(t, self.stream)
        return fixed

    def weight(self, fixed, lam):
        w = orig_weight(self, fixed, lam)
        tracker.add(w, self.stream)
        return w

    SeedLinear._tensor, SeedLinear.generate, SeedLinear.weight = _tensor, generate, weight
    try:
        yield tracker
    finally:
        SeedLinear._tensor, SeedLinear.generate, SeedLinear.weight = orig_tensor, orig_generate, orig_weight


# ---- 1. generator throughput ---------------------------------------------------------------------------
def bench_generator(cfg: Config, console: Console, all_threads: int, box_style) -> dict:
    rng = np.random.Generator(np.random.Philox(SEED))
    tgen = torch.Generator().manual_seed(SEED)

    def methods(n: int) -> dict[str, Callable[[], object]]:
        def ours_eager():
            with eager_prng():
                return prng.random_bytes(SEED, 1, 0, 0, n, signed=True)

        return {
            "germinator prng.random_bytes int8, compiled": lambda: prng.random_bytes(
                SEED, 1, 0, 0, n, signed=True
            ),
            "germinator prng.random_bytes int8, eager": ours_eager,
            "torch.randint int8 (CPU mt19937)": lambda: torch.randint(
                -128, 128, (n,), dtype=torch.int8, generator=tgen
            ),
            "numpy Philox .integers int8": lambda: rng.integers(-128, 128, size=n, dtype=np.int8),
            "numpy Philox .bytes": lambda: rng.bytes(n),
        }

    results: dict[tuple[str, int, int], list] = {}
    for threads in (1, all_threads):
        with num_threads(threads):
            for n in cfg.gen_sizes:
                for name, times in timed_samples(methods(n), cfg.gen_reps, cfg.min_sample_s).items():
                    results[(name, n, threads)] = [n / t / 1e9 for t in times]  # GB/s per sample

    table = make_table(
        f"1. Generator throughput, GB/s of int8 bytes (median \\[min-max] of {cfg.gen_reps})", box_style
    )
    table.add_column("generator")
    table.add_column("size", justify="right")
    table.add_column("1 thread", justify="right")
    table.add_column(f"{all_threads} threads", justify="right")
    table.add_column("vs numpy Philox int8 (1 thr)", justify="right")
    names = list(methods(1))
    for n in cfg.gen_sizes:
        ref = med(results[("numpy Philox .integers int8", n, 1)])
        for name in names:
            cells = []
            for threads in (1, all_threads):
                xs = results[(name, n, threads)]
                cells.append(f"{med(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]")
            ratio = med(results[(name, n, 1)]) / ref
            table.add_row(name, fmt_size(n), *cells, f"{ratio:.2f}x")
        if n != cfg.gen_sizes[-1]:
            table.add_section()
    console.print(table)
    big = cfg.gen_sizes[-1]
    ours = med(results[("germinator prng.random_bytes int8, compiled", big, 1)])
    ref = med(results[("numpy Philox .integers int8", big, 1)])
    verdict = "MET" if ours >= ref else "NOT MET"
    note(
        console,
        f"Target (issue 2): compiled int8 at least as fast as numpy's Philox, 1 thread, {fmt_size(big)}: "
        f"{ours:.2f} vs {ref:.2f} GB/s -> {verdict}. numpy's generators are single-threaded: its "
        f"'{all_threads} threads' column is the same generator measured again.",
    )
    return results


# ---- 2. rank components -------------------------------------------------------------------------------
def layer_seeds(rank: int, base: int = 11) -> tuple[int, ...]:
    """``rank`` distinct component seeds, then mask, scale, shift, bias."""
    return (*(base + 7 * k for k in range(rank)), 55, 66, 77, 88)


def component_bytes(out_f: int, in_f: int, r: int) -> int:
    """Random bytes r components draw: per seed a1, a2 (out) and b1, b2 (in), each rounded up to 16-byte
    Philox blocks."""
    return r * 16 * (2 * -(-out_f // 16) + 2 * -(-in_f // 16))


def bench_components(cfg: Config, console: Console, threads: int, box_style) -> dict:
    table = make_table(
        (
            f"2. A layer's r rank components in one call vs two factor pairs, int8 -> float32, {threads} "
            f"thread(s) (us, median \\[min-max] of {cfg.comp_reps})"
        ),
        box_style,
    )
    for col in (
        "layer out x in",
        "rank",
        "KB drawn: comps / pairs",
        "make_components",
        "prng.components",
        "pairs: int_tensors",
        "make / pairs",
        "prng / pairs",
    ):
        table.add_column(col, justify="right")
    ratios = {}

    def cell(xs: list[float]) -> str:
        return f"{med(xs) * 1e6:.0f} [{min(xs) * 1e6:.0f}-{max(xs) * 1e6:.0f}]"

    with num_threads(threads), torch.no_grad():
        for out_f, in_f in cfg.comp_shapes:
            for r in cfg.comp_ranks:
                layer = SeedLinear(in_f, out_f, r, seeds=layer_seeds(r), stream=1)
                comps = layer.component_seeds()
                st, dt = layer.stream, layer.int_dtype
                pairs = [
                    (101, ROLE["a1"], st, (out_f, r)),
                    (102, ROLE["b1"], st, (r, in_f)),
                    (103, ROLE["a2"], st, (out_f, r)),
                    (104, ROLE["b2"], st, (r, in_f)),
                ]
                t = timed_samples(
                    {
                        "make": functools.partial(layer.make_components, comps, "cpu"),
                        "prng": functools.partial(prng.components, comps, st, out_f, in_f, dt),
                        "pairs": functools.partial(prng.int_tensors, pairs, dt),
                    },
                    cfg.comp_reps,
                    cfg.min_sample_s,
                )
                make, comp, old = med(t["make"]), med(t["prng"]), med(t["pairs"])
                ratios[(out_f, in_f, r)] = (make / old, comp / old)
                pair_bytes = sum(16 * -(-math.prod(shape) // 16) for *_, shape in pairs)
                table.add_row(
                    f"{out_f}x{in_f}",
                    str(r),
                    f"{component_bytes(out_f, in_f, r) / KIB:.1f} / {pair_bytes / KIB:.1f}",
                    cell(t["make"]),
                    cell(t["prng"]),
                    cell(t["pairs"]),
                    f"{make / old:.2f}x",
                    f"{comp / old:.2f}x",
                )
    console.print(table)
    worst_make = max(v[0] for v in ratios.values())
    worst_prng = max(v[1] for v in ratios.values())
    verdict = lambda x: "MET" if x <= 1.3 else "NOT MET"  # noqa: E731
    note(
        console,
        "Target: the r components (one seed each, one call) cost at most 1.3x the two factor pairs of the "
        f"previous layout (four requests in one call). prng.components: worst {worst_prng:.2f}x -> "
        f"{verdict(worst_prng)}; layer.make_components: worst {worst_make:.2f}x -> {verdict(worst_make)}. "
        "Both draw the same bytes up to block padding (each component vector is padded to 16 bytes). "
        "make_components is prng.components plus a dedup of the seeds and a dict of per-seed views "
        "(4 r tensor views, about 1 us each): that, not the generator, is its extra cost.",
    )
    return ratios


# ---- 3. layer regeneration -----------------------------------------------------------------------------
def prng_bytes_of_layer(n: int, r: int) -> int:
    """Random bytes a square n x n layer of rank r draws: r components, 16-bit mask, scale, shift, bias."""
    return component_bytes(n, n, r) + 2 * n * n + 2 * n * n + n


def bench_layers(cfg: Config, console: Console, threads: int, box_style) -> None:
    table = make_table(
        (
            f"3. Regeneration of one SeedLinear (n x n), float32, {threads} thread(s), no_grad "
            f"(ms, median of {cfg.layer_reps})"
        ),
        box_style,
    )
    for col in ("layer", "rank", "generated MB", "PRNG MB drawn", "generate ms", "build W ms", "total ms"):
        table.add_column(col, justify="right")
    table.add_column("PRNG GB/s in generate", justify="right")
    with num_threads(threads), torch.no_grad():
        for n in cfg.layer_sizes:
            for r in cfg.layer_ranks:
                layer = SeedLinear(n, n, r, seeds=layer_seeds(r))
                fixed = layer.generate()
                lam = layer.g.unsqueeze(0)  # (1, r)
                reps = cfg.layer_reps if n < 4096 else max(3, cfg.layer_reps // 2)
                t = timed_samples(
                    {"gen": layer.generate, "w": lambda layer=layer, f=fixed, lam=lam: layer.weight(f, lam)},
                    reps,
                    cfg.min_sample_s,
                )
                gen_ms, w_ms = med(t["gen"]) * 1e3, med(t["w"]) * 1e3
                drawn = prng_bytes_of_layer(n, r)
                table.add_row(
                    f"{n}x{n}",
                    str(r),
                    f"{fixed.nbytes() / MB:.2f}",
                    f"{drawn / MB:.2f}",
                    f"{gen_ms:.2f}",
                    f"{w_ms:.2f}",
                    f"{gen_ms + w_ms:.2f}",
                    f"{drawn / (gen_ms / 1e3) / 1e9:.2f}",
                )
                del fixed
    console.print(table)
    note(
        console,
        "generated MB: the FixedTensors of the layer (A1, B1, A2, B2, F1, F2, T, bias). PRNG MB drawn: raw "
        "random bytes (int8 components, 16-bit mask draws, scale, shift, bias).",
    )


# ---- 4. streaming -----------------------------------------------------------------------------------------
def mlp_spec(cfg: Config, depth: int) -> ModelSpec:
    return ModelSpec(
        kind="mlp",
        input_dim=cfg.width,
        hidden=(cfg.width,) * (depth - 1),
        num_classes=cfg.width,
        rank=cfg.rank,
    )


def dense_mlp(cfg: Config, depth: int) -> nn.Module:
    mods: list[nn.Module] = []
    for i in range(depth):
        mods.append(nn.Linear(cfg.width, cfg.width))
        if i < depth - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def measure_memory(model: GerminatorMLP, x: torch.Tensor, mode: str) -> dict:
    """Memory of one pass; mode "stream": inference forward; "cache": the same with model.set_cache(True)
    (two forwards: fill, then use); "train": forward and backward with autograd on (caches off).

    Returns the tracked peak of live generated bytes, the most layers alive at once, tracked bytes still
    alive afterwards, and the growth of peak RSS over the RSS before the pass (None if it can't be reset).
    """
    model.set_cache(mode == "cache")
    tracker = LiveTracker()
    with torch.set_grad_enabled(mode == "train"), tracking(tracker):
        can_reset = reset_peak_rss()
        rss0 = proc_status_kib("VmRSS")
        if mode == "train":
            model(x).square().mean().backward()
        for _ in range({"stream": 1, "cache": 2, "train": 0}[mode]):
            model(x)
        hwm = proc_status_kib("VmHWM")
        peak, layers, live_after = tracker.peak, tracker.max_layers, tracker.live
    model.set_cache(False)
    model.zero_grad(set_to_none=True)
    return {
        "peak": peak,
        "layers": layers,
        "live_after": live_after,
        "rss_growth": (hwm - rss0) * KIB if can_reset else None,
    }


# glibc keeps freed blocks in its heap (and raises its mmap threshold after the first free), so the RSS of
# a process that has already run other work says little about what one forward allocates. The memory
# table is therefore measured in a fresh child process in which blocks of 64 KiB and more are mmapped and
# returned to the OS when freed.
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * KIB), "MALLOC_TRIM_THRESHOLD_": str(128 * KIB)}


def bench_streaming(cfg: Config, console: Console, threads: int, box_style) -> None:
    with num_threads(threads):
        times, dense_bytes = _time_streaming(cfg)
    argv = [sys.executable, os.path.abspath(__file__), "--memory-probe", "--threads", str(threads)]
    if cfg.quick:
        argv.append("--quick")
    proc = subprocess.run(argv, env={**os.environ, **PROBE_ENV}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    mem = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    _print_streaming(cfg, console, threads, box_style, mem, times, dense_bytes)


def memory_probe(cfg: Config, threads: int) -> None:
    """Child process: measure the memory table and print it as one JSON line."""
    with num_threads(threads):
        print(json.dumps(_measure_streaming(cfg)))


def _input(cfg: Config) -> torch.Tensor:
    return torch.randn(cfg.batch, cfg.width, generator=torch.Generator().manual_seed(0))  # (B, width)


def _time_streaming(cfg: Config) -> tuple[dict, dict]:
    x = _input(cfg)
    times, dense_bytes = {}, {}
    for depth in cfg.depths:
        model = GerminatorMLP(mlp_spec(cfg, depth)).eval()
        cached = GerminatorMLP(mlp_spec(cfg, depth)).eval()
        cached.set_cache(True)
        dense = dense_mlp(cfg, depth)
        dense_bytes[depth] = sum(p.numel() * p.element_size() for p in dense.parameters())
        with torch.no_grad():
            fns = {
                "dense": lambda d=dense: d(x),
                "stream": lambda m=model: m(x),
                "cache": lambda c=cached: c(x),
            }
            times[depth] = timed_samples(fns, cfg.fwd_reps, cfg.min_sample_s)
        cached.set_cache(False)
        del model, dense, cached
        gc.collect()
    return times, dense_bytes


def _measure_streaming(cfg: Config) -> dict:
    x = _input(cfg)
    mem = {}
    for depth in cfg.depths:
        model = GerminatorMLP(mlp_spec(cfg, depth)).eval()
        with torch.no_grad():
            model(x)  # warm-up
        mem[depth] = {mode: measure_memory(model, x, mode) for mode in ("stream", "cache", "train")}
        del model
        gc.collect()
    return mem


def _print_streaming(cfg: Config, console: Console, threads, box_style, mem, times, dense_bytes) -> None:
    t_mem = make_table(
        (
            f"4a. Memory held by generated weights vs depth: MLP of width {cfg.width}, rank {cfg.rank}, "
            f"batch {cfg.batch}; inference (no_grad) unless marked training"
        ),
        box_style,
    )
    for col in (
        "depth",
        "nn.Linear params MB",
        "streaming: peak live generated MB",
        "layers alive at once",
        "streaming: peak RSS growth MB",
        "cache on: peak live generated MB",
        "cache on: peak RSS growth MB",
        "training fwd+bwd: peak live generated MB",
        "training: layers alive at once",
    ):
        t_mem.add_column(col, justify="right")

    def rss(m: dict) -> str:
        return "n/a" if m["rss_growth"] is None else f"{m['rss_growth'] / MB:.2f}"

    for depth in cfg.depths:
        s, c, tr = mem[depth]["stream"], mem[depth]["cache"], mem[depth]["train"]
        t_mem.add_row(
            str(depth),
            f"{dense_bytes[depth] / MB:.2f}",
            f"{s['peak'] / MB:.2f}",
            str(s["layers"]),
            rss(s),
            f"{c['peak'] / MB:.2f}",
            rss(c),
            f"{tr['peak'] / MB:.2f}",
            str(tr["layers"]),
        )
    console.print(t_mem)
    lo, hi = cfg.depths[0], cfg.depths[-1]
    ratio = mem[hi]["stream"]["peak"] / mem[lo]["stream"]["peak"]
    max_layers = max(mem[d]["stream"]["layers"] for d in cfg.depths)
    flat = ratio <= 1.05 and max_layers <= 3
    leaked = max(mem[d]["stream"]["live_after"] for d in cfg.depths)
    rss_lo, rss_hi = mem[lo]["stream"]["rss_growth"], mem[hi]["stream"]["rss_growth"]
    rss_ratio = f"{rss_hi / rss_lo:.2f}" if rss_lo and rss_hi is not None else "n/a"
    note(
        console,
        f"Streaming, depth {hi} / depth {lo}: peak live generated bytes {ratio:.3f}, peak RSS growth "
        f"{rss_ratio}; at most {max_layers} layer(s) alive at once; {leaked} tracked bytes still alive after "
        f"a forward -> {'FLAT' if flat else 'NOT FLAT'}.\n"
        "Tracked: every tensor returned by SeedLinear._tensor / .generate / .weight (storages counted once), "
        "freed ones subtracted via weakref.finalize; temporaries inside those functions are not seen. "
        "Peak RSS growth: VmHWM (reset through /proc/self/clear_refs) minus VmRSS before the forward, "
        "measured in a fresh process with glibc's mmap threshold at 64 KiB (freed blocks go back to the "
        "OS); it includes those temporaries and the activations.",
    )
    console.print()

    t_time = make_table(
        (
            f"4b. Forward time per batch of {cfg.batch}, {threads} thread(s), no_grad "
            f"(ms, median of {cfg.fwd_reps})"
        ),
        box_style,
    )
    for col in (
        "depth",
        "nn.Linear (stored)",
        "Germinator streaming",
        "Germinator cache on",
        "streaming / nn.Linear",
        "cache on / nn.Linear",
    ):
        t_time.add_column(col, justify="right")
    for depth in cfg.depths:
        d, s, c = (med(times[depth][k]) * 1e3 for k in ("dense", "stream", "cache"))
        t_time.add_row(str(depth), f"{d:.2f}", f"{s:.2f}", f"{c:.2f}", f"{s / d:.1f}x", f"{c / d:.1f}x")
    console.print(t_time)
    note(
        console,
        "streaming: every forward regenerates each layer from its seeds; cache on: model.set_cache(True), "
        "the seeded tensors are generated once and kept (F1, F2, T and W are still recomputed per forward).",
    )


# ---- 5. checkpoint size ------------------------------------------------------------------------------------
CHECKPOINT_MODELS = [
    (
        f"digits MLP 64-256-256-10, rank {r}",
        ModelSpec(input_dim=64, hidden=(256, 256), num_classes=10, rank=r),
    )
    for r in (16, 32, 128)
] + [
    (
        "byte LM: vocab 256, d_model 64, d_ff 128, 2 blocks, rank 32",
        ModelSpec(kind="lm", vocab_size=256, d_model=64, d_ff=128, n_blocks=2, rank=32),
    )
]


def bench_checkpoint(console: Console, box_style) -> dict:
    table = make_table("5. Checkpoint bytes (the whole JSON file, seed_bits 16, empty meta)", box_style)
    for col in ("model", "layers", "seeds", "floats", "seeds + floats raw", "checkpoint bytes"):
        table.add_column(col, justify="right" if col != "model" else "left")
    sizes = {}
    for name, spec in CHECKPOINT_MODELS:
        model = build_model(spec)
        n_seeds = sum(layer.n_seeds for layer in model.layers)
        n_floats = model.num_floats()
        raw = n_seeds * 2 + n_floats * 4
        sizes[name] = len(checkpoint_bytes(model))
        row = (name, str(len(model.layers)), str(n_seeds), str(n_floats), str(raw), str(sizes[name]))
        table.add_row(*row)
    console.print(table)
    note(
        console,
        "Seeds are packed little-endian (2 bytes each at seed_bits 16) and floats stored as float32, both "
        "base64 in the JSON; the rest is the spec, the format and generator versions and a SHA-256.",
    )
    return sizes


# ---- main -------------------------------------------------------------------------------------------------
def machine_facts(console: Console, all_threads: int, warmup: dict, box_style) -> None:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    facts = [
        ("CPU", f"{cpu}; {os.cpu_count()} logical cores, {len(os.sched_getaffinity(0))} usable"),
        ("torch threads (all)", str(all_threads)),
        ("torch / numpy / python", f"{torch.__version__} / {np.__version__} / {platform.python_version()}"),
        ("torch CPU capability", torch.backends.cpu.get_cpu_capability()),
        ("prng.fast_path()", f"{prng.fast_path()} (generator version {prng.GENERATOR_VERSION})"),
        (
            "first compiled call (compile)",
            ", ".join(f"{k} thread(s): {v:.2f} s" for k, v in warmup.items()),
        ),
        ("load average at start", " ".join(f"{v:.2f}" for v in os.getloadavg())),
    ]
    table = make_table("Machine", box_style)
    table.add_column("fact")
    table.add_column("value")
    for k, v in facts:
        table.add_row(k, v)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer sizes, depths and repeats")
    ap.add_argument("--reps", type=int, default=None, help="override the number of timed repeats")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the layer and streaming tables (default 1, as one worker actor; 0: all)",
    )
    ap.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = Config(args.quick, args.reps)
    if args.memory_probe:
        memory_probe(cfg, args.threads or torch.get_num_threads())
        return 0
    console = Console(width=200 if args.markdown else max(Console().width, 130))
    box_style = box.MARKDOWN if args.markdown else box.SIMPLE_HEAD
    all_threads = torch.get_num_threads()
    t_start = time.perf_counter()

    # The compiled generator is specialized per thread count: compile both before timing anything.
    warmup = {}
    for threads in sorted({1, all_threads}):
        with num_threads(threads):
            t0 = time.perf_counter()
            prng.random_bytes(SEED, 1, 0, 0, 1 * MB, signed=True)
            warmup[threads] = time.perf_counter() - t0
    machine_facts(console, all_threads, warmup, box_style)
    spent = {"compile": sum(warmup.values())}
    work_threads = args.threads or all_threads
    for name, run in (
        ("generator", lambda: bench_generator(cfg, console, all_threads, box_style)),
        ("components", lambda: bench_components(cfg, console, work_threads, box_style)),
        ("layers", lambda: bench_layers(cfg, console, work_threads, box_style)),
        ("streaming", lambda: bench_streaming(cfg, console, work_threads, box_style)),
        ("checkpoint", lambda: bench_checkpoint(console, box_style)),
    ):
        t0 = time.perf_counter()
        run()
        spent[name] = time.perf_counter() - t0
        console.print()
    note(
        console,
        f"Total {time.perf_counter() - t_start:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in spent.items())
        + "); load average at end "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
        + f"; command: {' '.join([os.path.basename(sys.executable), *sys.argv])}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

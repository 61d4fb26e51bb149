"""Seed-table commit throughput next to what the same Redis server does for plain commands and Lua calls.

    .venv/bin/python benchmarks/bench_table.py [--aof everysec|always|no] [--commits N] [--pipelined N]
        [--rank R] [--experts E] [--only seeds,swaps,publish,concurrent]

Starts its own redis-server on a free loopback port (one machine, one server, one run) and prints a table:

* ``redis-benchmark`` (the C client shipped with Redis): SET, GET and EVALSHA of ``return 1``, with one
  connection, one connection pipelining 16 deep, and 4 connections;
* redis-py calling the same trivial script: one call at a time, pipelined ``--batch`` deep, and from 4
  processes -- what a Python client gets out of Redis Lua at all, the baseline the table is held to
  (issue 3: at least half of it);
* ``SeedTable.commit_seeds`` one call at a time, ``commit_seeds_many`` (``--batch`` commits per call), and
  4 processes committing at once; ``commit_swap`` one at a time and ``commit_swaps_many``; the trainer's
  ``publish_floats`` one at a time. Every write is *accepted* (the heaviest path: version or generation
  and loss checks, stream append, row write, epoch bump). Rows have rank ``--rank`` (default 32: 36 seeds)
  and ``--experts`` expert rows (default 1: 2 + 32 * 2 = 66 floats); every seed commit changes every seed
  (every generation goes up), every swap changes one slot, half of the publishes keep a swapped slot.

Baseline and table runs alternate for ``--repeat`` rounds and each figure is its best round, so that a busy
machine slows both sides alike. Besides calls/s the table shows CPU time per call, of the client
process(es) and of redis-server (from INFO cpu): unlike wall-clock rates, these barely move with the load
that other programs put on the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import redis
from local_redis import local_redis
from rich.console import Console
from rich.table import Table

from germinator_dist.records import CommitOutcome, LayerEntry, SeedCommit, SwapCommit
from germinator_dist.table import SeedTable

LAYERS = 8
SPEC = '{"bench": true}'


@dataclass
class Figure:
    rate: float  # calls per second, wall clock
    client_us: float  # client CPU per call (all client processes together)
    server_us: float  # redis-server CPU per call

    def best(self, other: Figure | None) -> Figure:
        if other is None:
            return self
        return Figure(
            max(self.rate, other.rate),
            min(self.client_us, other.client_us),
            min(self.server_us, other.server_us),
        )


def redis_benchmark(port: int, n: int, sha: str) -> list[tuple[str, str, float]]:
    """Requests/s from the C redis-benchmark: SET/GET/EVALSHA, sequential, -P 16, and 4 connections."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return []
    rows = []
    runs = (
        ("1 conn", ["-c", "1"], n),
        ("1 conn, -P 16", ["-c", "1", "-P", "16"], 10 * n),
        ("4 conns", ["-c", "4"], 2 * n),
    )
    for label, extra, count in runs:
        base = [exe, "-p", str(port), "--csv", "-n", str(count), *extra]
        out = subprocess.run([*base, "-t", "set,get"], capture_output=True, text=True, check=True).stdout
        out += subprocess.run([*base, "evalsha", sha, "0"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            cells = [c.strip('"') for c in line.split('","')]
            if cells[0] != "test":
                test = "EVALSHA return 1" if cells[0].startswith("evalsha") else cells[0]
                rows.append((f"redis-benchmark {test}", label, float(cells[1])))
    return rows


def _server_cpu(port: int) -> float:
    info = redis.Redis(port=port).info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def measure(port: int, n: int, run) -> Figure:
    """Run ``run()`` (n calls in this process) and time it: wall, this process's CPU, the server's CPU."""
    c0, s0, w0 = time.process_time(), _server_cpu(port), time.perf_counter()
    run()
    w1, c1, s1 = time.perf_counter(), time.process_time(), _server_cpu(port)
    return Figure(n / (w1 - w0), (c1 - c0) / n * 1e6, (s1 - s0) / n * 1e6)


def _trivial(port: int):
    script = redis.Redis(port=port).register_script("return 1")
    script()
    return script


def lua_sequential(port: int, n: int) -> Figure:
    script = _trivial(port)

    def run() -> None:
        for _ in range(n):
            script()

    return measure(port, n, run)


def lua_pipelined(port: int, n: int, batch: int) -> Figure:
    script = _trivial(port)

    def run() -> None:
        for k in range(0, n, batch):
            pipe = script.registered_client.pipeline(transaction=False)
            for _ in range(min(batch, n - k)):
                script(client=pipe)
            pipe.execute()

    return measure(port, n, run)


@dataclass(frozen=True)
class Shape:
    """The benchmark's layer shape: rank ``rank`` (rank + 4 seeds), ``experts`` expert rows of floats."""

    rank: int
    experts: int

    @property
    def n_floats(self) -> int:
        return 2 + self.rank * (1 + self.experts)

    def floats(self, i: int = 0) -> tuple[float, ...]:
        return tuple(0.25 + i + k for k in range(self.n_floats))

    def seeds(self, i: int) -> tuple[int, ...]:
        """Commit i's seeds (i >= -LAYERS): all differ from commit i - LAYERS's (the same layer's before),
        components distinct."""
        base = (i + LAYERS) * (self.rank + 4)
        return tuple(range(base, base + self.rank + 4))


def _job(table: SeedTable, name: str, shape: Shape) -> str:
    table.delete_job(name)
    rows = [LayerEntry(layer=i, seeds=shape.seeds(i - LAYERS), floats=shape.floats()) for i in range(LAYERS)]
    table.create_job(name, SPEC, rows)
    return name


def _timed(port: int, name: str, shape: Shape, n: int, calls, setup=None, writes: int = 0) -> Figure:
    """Time ``calls(table, job)`` (n calls) on a fresh job, after ``setup(table, job)``; check that every
    write was accepted (``writes``: the job's epoch afterwards, n by default)."""
    with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
        job = _job(table, name, shape)
        if setup is not None:
            setup(table, job)
        fig = measure(port, n, lambda: calls(table, job))
        assert table.snapshot(job).epoch == (writes or n), "every write should have been accepted"
        table.delete_job(job)
    return fig


def table_sequential(port: int, n: int, shape: Shape) -> Figure:
    fl, seeds = shape.floats(), [shape.seeds(i) for i in range(n)]

    def calls(table: SeedTable, job: str) -> None:
        for i in range(n):
            out = table.commit_seeds(job, i % LAYERS, i // LAYERS, seeds[i], fl, -i, "b")
            assert out is CommitOutcome.ACCEPTED

    return _timed(port, "bench-seq", shape, n, calls)


def table_pipelined(port: int, n: int, batch: int, shape: Shape) -> Figure:
    fl = shape.floats()
    commits = [
        SeedCommit(
            layer=i % LAYERS,
            expected_version=i // LAYERS,
            seeds=shape.seeds(i),
            floats=fl,
            loss=-i,
            evaluator_id="b",
        )
        for i in range(n)
    ]  # built before the clock starts: a driver holds its results as records already

    def calls(table: SeedTable, job: str) -> None:
        for k in range(0, n, batch):
            assert set(table.commit_seeds_many(job, commits[k : k + batch])) == {CommitOutcome.ACCEPTED}

    return _timed(port, "bench-pipe", shape, n, calls)


def _swaps(shape: Shape, n: int) -> list[SwapCommit]:
    """n accepted swaps, round-robin over the layers and their component slots, each with a fresh seed."""
    out = []
    for i in range(n):
        layer, j = i % LAYERS, i // LAYERS
        slot, gen = j % shape.rank, j // shape.rank
        out.append(
            SwapCommit(
                layer=layer,
                slot=slot,
                expected_gen=gen,
                seed=10**9 + i,
                slot_floats=(0.5 + i,) * (1 + shape.experts),
                loss=1.0,
                incumbent_loss=2.0,
                evaluator_id="b",
            )
        )
    return out


def table_swap_sequential(port: int, n: int, shape: Shape) -> Figure:
    swaps = _swaps(shape, n)

    def calls(table: SeedTable, job: str) -> None:
        for s in swaps:
            assert table.commit_swap(job, s) is CommitOutcome.ACCEPTED

    return _timed(port, "bench-swap", shape, n, calls)


def table_swap_pipelined(port: int, n: int, batch: int, shape: Shape) -> Figure:
    swaps = _swaps(shape, n)

    def calls(table: SeedTable, job: str) -> None:
        for k in range(0, n, batch):
            assert set(table.commit_swaps_many(job, swaps[k : k + batch])) == {CommitOutcome.ACCEPTED}

    return _timed(port, "bench-swap-pipe", shape, n, calls)


def table_publish(port: int, n: int, shape: Shape) -> Figure:
    """n publishes; every other one trained against generations one swap old, so it keeps that slot."""
    fl = shape.floats(1)
    old = (0,) * (shape.rank + 4)
    new = (1,) + old[1:]

    def setup(table: SeedTable, job: str) -> None:  # slot 0 of every layer moves to generation 1
        assert table.commit_swaps_many(job, _swaps(shape, LAYERS)) == [CommitOutcome.ACCEPTED] * LAYERS

    def calls(table: SeedTable, job: str) -> None:
        for i in range(n):
            out = table.publish_floats(job, i % LAYERS, fl, 1.0, old if i % 2 else new)
            assert out.outcome is CommitOutcome.ACCEPTED and out.kept == ((0,) if i % 2 else ())

    return _timed(port, "bench-publish", shape, n, calls, setup, writes=n + LAYERS)


def _client(port: int, job: str | None, layers: list[int], n: int, shape: Shape, barrier, conn) -> None:
    """One process of the concurrent run: ``n`` accepted commits to its own layers, or with no job, ``n``
    trivial EVALSHA calls (the baseline). Sends back (start, end, CPU seconds)."""
    if job is None:
        script = _trivial(port)
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        for _ in range(n):
            script()
        conn.send((start, time.time(), time.process_time() - cpu))
        return
    with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
        fl, seeds = shape.floats(), [shape.seeds(i) for i in range(n)]
        versions = dict.fromkeys(layers, 0)
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        for i in range(n):
            layer = layers[i % len(layers)]
            out = table.commit_seeds(job, layer, versions[layer], seeds[i], fl, -i, "b")
            assert out is CommitOutcome.ACCEPTED
            versions[layer] += 1
        conn.send((start, time.time(), time.process_time() - cpu))


def concurrent(port: int, clients: int, n: int, shape: Shape, *, baseline: bool = False) -> Figure:
    """``clients`` processes at once, each making ``n`` calls; calls/s from first start to last end."""
    job = None
    if not baseline:
        with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
            job = _job(table, "bench-conc", shape)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients)
    pipes, procs = [], []
    for c in range(clients):
        here, there = ctx.Pipe(duplex=False)
        layers = [layer for layer in range(LAYERS) if layer % clients == c]
        procs.append(ctx.Process(target=_client, args=(port, job, layers, n, shape, barrier, there)))
        procs[-1].start()
        pipes.append(here)
    s0 = _server_cpu(port)  # includes the children's connection set-up: negligible next to n calls
    spans = [p.recv() for p in pipes]
    s1 = _server_cpu(port)
    for p in procs:
        p.join()
    if job is not None:
        with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
            assert table.snapshot(job).epoch == clients * n, "every write should have been accepted"
            table.delete_job(job)
    total = clients * n
    wall = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
    return Figure(total / wall, sum(c for *_, c in spans) / total * 1e6, (s1 - s0) / total * 1e6)


SECTIONS = ("seeds", "swaps", "publish", "concurrent")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--aof",
        choices=["no", "everysec", "always"],
        default="everysec",
        help="the server's AOF policy: appendonly no, or appendonly yes with this appendfsync",
    )
    ap.add_argument("--commits", type=int, default=4000, help="sequential calls (and per process)")
    ap.add_argument("--pipelined", type=int, default=50_000, help="pipelined calls")
    ap.add_argument("--batch", type=int, default=1000, help="calls per round trip when pipelined")
    ap.add_argument("--rank", type=int, default=32, help="rank of every layer (rank + 4 seeds)")
    ap.add_argument("--experts", type=int, default=1, help="expert rows of rank scalars per layer")
    ap.add_argument("--clients", type=int, default=4, help="processes in the concurrent run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each figure is its best round")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        ap.error(f"--only: unknown sections {sorted(only - set(SECTIONS))}")
    shape = Shape(args.rank, args.experts)
    n, pipe, batch = args.commits, args.pipelined, args.batch

    best: dict[str, Figure] = {}

    def keep(name: str, fig: Figure) -> None:
        best[name] = fig.best(best.get(name))

    load0 = os.getloadavg()[0]
    with local_redis(args.aof) as port:
        rows = redis_benchmark(port, n, _trivial(port).sha)
        for _ in range(args.repeat):
            keep("lua_seq", lua_sequential(port, n))
            keep("lua_pipe", lua_pipelined(port, pipe, batch))
            if "seeds" in only:
                keep("seq", table_sequential(port, n, shape))
                keep("pipe", table_pipelined(port, pipe, batch, shape))
            if "swaps" in only:
                keep("swap", table_swap_sequential(port, n, shape))
                keep("swap_pipe", table_swap_pipelined(port, pipe, batch, shape))
            if "publish" in only:
                keep("publish", table_publish(port, n, shape))
            if "concurrent" in only:
                keep("lua_conc", concurrent(port, args.clients, n, shape, baseline=True))
                keep("conc", concurrent(port, args.clients, n, shape))
    load1 = os.getloadavg()[0]

    out = Table(
        title=f"seed table vs. Redis on one server: appendfsync={args.aof}, {os.cpu_count()} CPUs, "
        f"rank {shape.rank} ({shape.rank + 4} seeds, {shape.n_floats} floats), best of {args.repeat} rounds"
    )
    for col, just in (
        ("operation", "left"),
        ("clients", "left"),
        ("calls/s", "right"),
        ("vs Lua", "right"),
        ("client CPU µs/call", "right"),
        ("server CPU µs/call", "right"),
    ):
        out.add_column(col, justify=just)
    for what, how, rps in rows:
        out.add_row(what, how, f"{rps:,.0f}", "", "", "")
    pipelined = f"1 client, {batch} per round trip"
    lines = [
        ("redis-py EVALSHA return 1", "1 client", "lua_seq", None),
        ("redis-py EVALSHA return 1", pipelined, "lua_pipe", None),
        ("redis-py EVALSHA return 1", f"{args.clients} processes", "lua_conc", None),
        ("SeedTable.commit_seeds", "1 client", "seq", "lua_seq"),
        ("SeedTable.commit_seeds_many", pipelined, "pipe", "lua_pipe"),
        ("SeedTable.commit_seeds", f"{args.clients} processes", "conc", "lua_conc"),
        ("SeedTable.commit_swap", "1 client", "swap", "lua_seq"),
        ("SeedTable.commit_swaps_many", pipelined, "swap_pipe", "lua_pipe"),
        ("SeedTable.publish_floats", "1 client", "publish", "lua_seq"),
    ]
    verdicts = []
    for what, how, key, base in lines:
        if key not in best:
            continue
        f = best[key]
        ratio = f"{f.rate / best[base].rate:.0%}" if base else ""
        bold = "[bold]{}[/bold]" if base else "{}"
        out.add_row(
            bold.format(what),
            how,
            bold.format(f"{f.rate:,.0f}"),
            ratio,
            f"{f.client_us:.1f}",
            f"{f.server_us:.1f}",
        )
        if base:
            verdicts.append(
                f"{what} ({how}): {f.rate:,.0f}/s = {f.rate / best[base].rate:.0%} of redis-py "
                f"Lua calls here ({'meets' if f.rate >= best[base].rate / 2 else 'MISSES'} "
                "the 50% target)"
            )
    console = Console(width=140)
    console.print(out)
    for v in verdicts:
        console.print(v)
    console.print(
        f"load average (1 min): {load0:.1f} before, {load1:.1f} after "
        f"({'a busy machine: rates are low and noisy' if max(load0, load1) > 1.5 else 'quiet'})"
    )


if __name__ == "__main__":
    main()

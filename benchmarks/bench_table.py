"""Seed-table commit throughput next to what the same Redis server does for plain commands and Lua calls.

    .venv/bin/python benchmarks/bench_table.py [--aof everysec|always|no] [--commits N] [--pipelined N]

Starts its own redis-server on a free loopback port (one machine, one server, one run) and prints a table:

* ``redis-benchmark`` (the C client shipped with Redis): SET, GET and EVALSHA of ``return 1``, with one
  connection, one connection pipelining 16 deep, and 4 connections;
* redis-py calling the same trivial script: one call at a time, pipelined ``--batch`` deep, and from 4
  processes -- what a Python client gets out of Redis Lua at all, the baseline the table is held to
  (issue 3: at least half of it);
* ``SeedTable.commit_seeds`` one call at a time, ``commit_seeds_many`` (``--batch`` commits per call), and
  4 processes committing at once. Every commit is *accepted* (the heaviest path: version and loss check,
  stream append, row write, epoch bump), with ``--floats`` float scalars per layer.

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

from germinator_dist.records import CommitOutcome, LayerEntry, SeedCommit
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


def _job(table: SeedTable, name: str, floats: int) -> str:
    table.delete_job(name)
    rows = [LayerEntry(layer=i, seeds=(i,) * 8, floats=(0.5,) * floats) for i in range(LAYERS)]
    table.create_job(name, SPEC, rows)
    return name


def table_sequential(port: int, n: int, floats: int) -> Figure:
    with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
        job = _job(table, "bench-seq", floats)
        fl = tuple(0.25 + i for i in range(floats))

        def run() -> None:
            for i in range(n):
                out = table.commit_seeds(job, i % LAYERS, i // LAYERS, (i, 1, 2, 3, 4, 5, 6, 7), fl, -i, "b")
                assert out is CommitOutcome.ACCEPTED

        fig = measure(port, n, run)
        assert table.snapshot(job).epoch == n
        table.delete_job(job)
    return fig


def table_pipelined(port: int, n: int, batch: int, floats: int) -> Figure:
    with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
        job = _job(table, "bench-pipe", floats)
        fl = tuple(0.25 + i for i in range(floats))
        commits = [
            SeedCommit(
                layer=i % LAYERS,
                expected_version=i // LAYERS,
                seeds=(i, 1, 2, 3, 4, 5, 6, 7),
                floats=fl,
                loss=-i,
                evaluator_id="b",
            )
            for i in range(n)
        ]  # built before the clock starts: a driver holds its results as records already

        def run() -> None:
            for k in range(0, n, batch):
                assert set(table.commit_seeds_many(job, commits[k : k + batch])) == {CommitOutcome.ACCEPTED}

        fig = measure(port, n, run)
        assert table.snapshot(job).epoch == n
        table.delete_job(job)
    return fig


def _client(port: int, job: str | None, layers: list[int], n: int, floats: int, barrier, conn) -> None:
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
        fl = tuple(0.25 + i for i in range(floats))
        versions = dict.fromkeys(layers, 0)
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        for i in range(n):
            layer = layers[i % len(layers)]
            out = table.commit_seeds(job, layer, versions[layer], (i, 1, 2, 3, 4, 5, 6, 7), fl, -i, "b")
            assert out is CommitOutcome.ACCEPTED
            versions[layer] += 1
        conn.send((start, time.time(), time.process_time() - cpu))


def concurrent(port: int, clients: int, n: int, floats: int, *, baseline: bool = False) -> Figure:
    """``clients`` processes at once, each making ``n`` calls; calls/s from first start to last end."""
    job = None
    if not baseline:
        with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
            job = _job(table, "bench-conc", floats)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients)
    pipes, procs = [], []
    for c in range(clients):
        here, there = ctx.Pipe(duplex=False)
        layers = [layer for layer in range(LAYERS) if layer % clients == c]
        procs.append(ctx.Process(target=_client, args=(port, job, layers, n, floats, barrier, there)))
        procs[-1].start()
        pipes.append(here)
    s0 = _server_cpu(port)  # includes the children's connection set-up: negligible next to n calls
    spans = [p.recv() for p in pipes]
    s1 = _server_cpu(port)
    for p in procs:
        p.join()
    if job is not None:
        with SeedTable(f"redis://127.0.0.1:{port}/0") as table:
            assert table.snapshot(job).epoch == clients * n
            table.delete_job(job)
    total = clients * n
    wall = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
    return Figure(total / wall, sum(c for *_, c in spans) / total * 1e6, (s1 - s0) / total * 1e6)


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
    ap.add_argument("--floats", type=int, default=64, help="float scalars per layer")
    ap.add_argument("--clients", type=int, default=4, help="processes in the concurrent run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each figure is its best round")
    args = ap.parse_args(argv)

    best: dict[str, Figure] = {}

    def keep(name: str, fig: Figure) -> None:
        best[name] = fig.best(best.get(name))

    load0 = os.getloadavg()[0]
    with local_redis(args.aof) as port:
        rows = redis_benchmark(port, args.commits, _trivial(port).sha)
        for _ in range(args.repeat):
            keep("lua_seq", lua_sequential(port, args.commits))
            keep("seq", table_sequential(port, args.commits, args.floats))
            keep("lua_pipe", lua_pipelined(port, args.pipelined, args.batch))
            keep("pipe", table_pipelined(port, args.pipelined, args.batch, args.floats))
            keep("lua_conc", concurrent(port, args.clients, args.commits, args.floats, baseline=True))
            keep("conc", concurrent(port, args.clients, args.commits, args.floats))
    load1 = os.getloadavg()[0]

    out = Table(
        title=f"seed table vs. Redis on one server: appendfsync={args.aof}, {os.cpu_count()} CPUs, "
        f"{args.floats} floats/layer, best of {args.repeat} rounds"
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
    pipelined = f"1 client, {args.batch} per round trip"
    lines = [
        ("redis-py EVALSHA return 1", "1 client", "lua_seq", None),
        ("redis-py EVALSHA return 1", pipelined, "lua_pipe", None),
        ("redis-py EVALSHA return 1", f"{args.clients} processes", "lua_conc", None),
        ("SeedTable.commit_seeds", "1 client", "seq", "lua_seq"),
        ("SeedTable.commit_seeds_many", pipelined, "pipe", "lua_pipe"),
        ("SeedTable.commit_seeds", f"{args.clients} processes", "conc", "lua_conc"),
    ]
    verdicts = []
    for what, how, key, base in lines:
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

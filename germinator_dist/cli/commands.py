"""``germinator-dist``: a thin CLI. Each command parses, validates, and calls one function.

User errors (bad spec, unknown job, unreachable address, bad file) print one line and exit non-zero,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from germinator_dist.errors import GerminatorError

CONN_HELP = "connection: flags, then RAY_ADDRESS / GERMINATOR_REDIS_URL, then the local stack from `up`"


def _conn(p: argparse.ArgumentParser, ray: bool = True) -> None:
    p.add_argument("--redis", help="seed table Redis URL (redis:// or rediss://)")
    if ray:
        p.add_argument("--address", help="Ray dashboard / job submission address, e.g. http://HEAD:8265")


def _table(args, need_ray=False):
    from germinator_dist.service import operations as service

    ep = service.resolve(args.redis, getattr(args, "address", None), need_ray=need_ray)
    return service.open_table(ep), ep


def cmd_validate(args) -> int:
    from germinator_dist.config import load_job_spec
    from germinator_dist.search.job_setup import check_job_spec

    spec = check_job_spec(load_job_spec(args.spec))
    if not args.no_data:  # the data as the runner will load it (here: its path must exist on this machine)
        from germinator_dist.search.job_setup import resolve_job

        spec, _ = resolve_job(spec)
    print(json.dumps(spec.model_dump(mode="json"), indent=2))
    return 0


def cmd_up(args) -> int:
    from germinator_dist.service import local_stack

    st = local_stack.up(num_cpus=args.num_cpus)
    print(
        f"redis: {st['redis_url']}\nray:   {st['dashboard_url']} (GCS {st['ray_address']})\n"
        f"data:  {st['home']}"
    )
    return 0


def cmd_down(args) -> int:
    from germinator_dist.service import local_stack

    stopped = local_stack.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_submit(args) -> int:
    from germinator_dist.config import load_job_spec
    from germinator_dist.service import operations as service

    spec = load_job_spec(args.spec)
    if args.job is not None:  # "" too: refused by the job id check, never replaced by a generated id
        spec = spec.model_copy(update={"job": args.job})
        from germinator_dist.config import parse_job_spec

        spec = parse_job_spec(spec.model_dump(mode="json"))
    ep = service.resolve(args.redis, args.address, need_ray=True)
    print(service.submit(spec, ep, wait_s=args.wait_s))
    return 0


def _print_status(doc: dict) -> None:
    best = "-" if doc["best_loss"] is None else f"{doc['best_loss']:.4f}"
    print(
        f"job {doc['job_id']}: {doc['state']}  evaluations {doc['evaluations']}  "
        f"({doc['evals_per_s']:.1f}/s)  accepted {doc['accepted']}  stale {doc['stale']}  "
        f"workers {doc['workers_live']}/{doc['workers_desired']}  "
        f"per call {doc.get('candidates_per_call') or '-'}  best loss {best}"
    )
    if doc.get("error"):
        print(f"  error: {doc['error']}")
    if not doc["layers"] and doc["state"] in ("PENDING", "RUNNING"):
        print("  rows: not written yet (the runner loads the data and measures the initial model)")
    if doc.get("workers_waiting"):
        print(f"  workers: {doc['workers_waiting']}")
    if doc.get("driver") in ("gone", "starting"):
        print(f"  driver: {_driver_text(doc)}")
    if doc.get("swaps") is not None:
        print(
            f"  swaps {doc['swaps']}  screened {doc['screened_per_s']:.0f}/s  "
            f"fitness loss gained by swaps {doc['swap_gain']:.4f}"
        )
    for layer in doc["layers"]:
        loss = "-" if layer["loss"] is None else f"{layer['loss']:.4f}"
        print(f"  layer {layer['layer']}: loss {loss}  version {layer['version']}  by {layer['writer']}")


def _driver_text(doc: dict) -> str:
    """One phrase on the job's driver: gone (since when, why, what to do) or starting."""
    if doc.get("driver") != "gone":
        return f"{doc.get('driver')} ({doc.get('driver_owner')})"
    since = doc.get("driver_gone_since")
    when = "" if since is None else f" since {time.strftime('%H:%M:%S', time.localtime(since))}"
    when += "" if since is None else f" ({max(0.0, time.time() - since):.0f}s ago)"
    why = f": {doc['driver_note']}" if doc.get("driver_note") else ""
    return f"gone{when}{why}; `germinator-dist resume {doc['job_id']}` continues it"


def cmd_status(args) -> int:
    from germinator_dist.records import JobInfo
    from germinator_dist.service import operations as service

    table, ep = _table(args)
    if args.job is None:
        jobs = [j for j in table.list_jobs(each=True) if isinstance(j, JobInfo)]
        if not jobs:
            print("no jobs")
            return 0
        args.job = max(jobs, key=lambda j: j.created).job
    service.ensure_job(table, args.job)
    if args.watch:
        from germinator_dist.cli.watch import watch

        doc = watch(table, args.job)
    else:
        doc = service.status(table, args.job, ep)
    if args.json:
        print(json.dumps(doc))
    elif not args.watch:
        _print_status(doc)
    return 1 if args.watch and doc["state"] == "FAILED" else 0


def cmd_jobs(args) -> int:
    """Every job, one line each; a job that cannot be read is listed as MALFORMED (with its error) and the
    command then exits 1 with one line on stderr naming it."""
    from germinator_dist.errors import TableError
    from germinator_dist.records import BrokenJob
    from germinator_dist.service import operations as service

    table, ep = _table(args)
    rows, bad = [], []
    listed = table.list_jobs(each=True)
    for j in sorted(listed, key=lambda j: (isinstance(j, BrokenJob), getattr(j, "created", 0))):
        try:
            if isinstance(j, BrokenJob):
                raise TableError(j.error)
            doc = service.status(table, j.job, ep)
        except GerminatorError as exc:
            bad.append(j.job)
            rows.append({"job_id": j.job, "state": "MALFORMED", "error": str(exc)})
            continue
        keep = ("best_loss", "evaluations", "driver", "driver_gone_since", "driver_note")
        rows.append({"job_id": j.job, "state": j.state.value} | {k: doc[k] for k in keep})
    if args.json:
        print(json.dumps(rows))
    for r in [] if args.json else rows:
        if r["state"] == "MALFORMED":
            print(f"{r['job_id']:<40} {r['state']:<10} {r['error']}")
            continue
        best = "-" if r["best_loss"] is None else f"{r['best_loss']:.4f}"
        gone = f"  driver {_driver_text(r)}" if r["driver"] == "gone" else ""
        print(f"{r['job_id']:<40} {r['state']:<10} best loss {best:<8} evaluations {r['evaluations']}{gone}")
    if bad:
        raise TableError(f"jobs: {len(bad)} job(s) could not be read: {', '.join(bad)} (listed as MALFORMED)")
    return 0


def cmd_resume(args) -> int:
    from germinator_dist.service import operations as service

    table, ep = _table(args, need_ray=True)
    service.ensure_job(table, args.job)
    service.resume(table, ep, args.job)
    print(args.job)
    return 0


def cmd_scale(args) -> int:
    from germinator_dist.service import operations as service

    table, _ = _table(args)
    service.ensure_job(table, args.job)
    service.scale(table, args.job, args.workers)
    print(f"job {args.job}: desired workers {args.workers}")
    return 0


def cmd_cancel(args) -> int:
    from germinator_dist.service import operations as service

    table, ep = _table(args)
    service.ensure_job(table, args.job)
    service.cancel(table, ep, args.job)
    print(f"job {args.job}: {table.get_state(args.job).value}")
    return 0


def _check_output(value: str) -> Path:
    """The ``-o`` path of a file to write: not empty, not a directory, in a directory that exists."""
    from germinator_dist.errors import SpecError

    path = Path(value)
    if not value:
        raise SpecError("-o: an empty path (value '')")
    if path.is_dir():
        raise SpecError(f"-o: {value!r} is a directory; name a file in it")
    if not path.parent.is_dir():
        raise SpecError(f"-o: no such directory {str(path.parent)!r} (value {value!r})")
    return path


def cmd_export(args) -> int:
    from germinator_dist.service import operations as service

    _check_output(args.output)  # before anything is read
    table, _ = _table(args)
    service.ensure_job(table, args.job)
    size = service.export(table, args.job, Path(args.output))
    print(f"{args.output}: {size} bytes")
    return 0


def cmd_plot(args) -> int:
    from germinator_dist.cli.plot import job_series, plot_series
    from germinator_dist.errors import SpecError
    from germinator_dist.service import operations as service

    if not args.output and not args.json:
        raise SpecError("plot: give -o FILE.png (the picture) and/or --json (the series)")
    table, _ = _table(args)
    service.ensure_job(table, args.job)
    series = job_series(table, args.job)
    if args.output:
        plot_series(series, Path(args.output))
    if args.json:
        print(json.dumps(series))
    elif args.output:
        print(args.output)
    return 0


def cmd_evaluate(args) -> int:
    from germinator_dist.core.metrics import evaluate_checkpoint

    doc = evaluate_checkpoint(Path(args.model), args.data)
    if args.json:
        print(json.dumps(doc))
    else:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in doc.items()))
    return 0


def cmd_generate(args) -> int:
    from germinator_dist.core.metrics import generate_text

    print(generate_text(Path(args.model), args.prompt, args.bytes, args.temperature, args.seed))
    return 0


def cmd_sweep(args) -> int:
    from germinator_dist.distributed.sweep import connect_ray, load_sweep, run_sweep
    from germinator_dist.service import operations as service

    load_sweep(args.sweep)  # validate before anything starts
    ep = service.resolve(args.redis, args.address, need_ray=True)
    service.open_table(ep)
    connect_ray(ep.ray_init)
    result = run_sweep(args.sweep, ep.redis_url)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'trial job':<44}{'best loss':>10}{'evals':>8}{'reports':>8}  config")
    for t in sorted(result["trials"], key=lambda t: (t["best_loss"] is None, t["best_loss"] or 0)):
        loss = "-" if t["best_loss"] is None else f"{t['best_loss']:.4f}"
        print(
            f"{str(t['job']):<44}{loss:>10}{str(t['evaluations']):>8}{str(t['iterations']):>8}  {t['config']}"
        )
    if result["best_spec"] is not None:
        import yaml

        print("best spec:")
        print(yaml.safe_dump(result["best_spec"], sort_keys=False))
    return 0


def cmd_demo(args) -> int:
    from germinator_dist.cli.demo import run_demo

    doc = run_demo(args)
    if args.json:
        print(json.dumps(doc))
    return 0


def cmd_demo_local(args) -> int:
    from germinator_dist.cli.local_demo import run_local_demo

    result = run_local_demo(rank=args.rank, steps=args.steps)
    if args.json:
        print(json.dumps(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="germinator-dist",
        epilog=CONN_HELP,
        description="Distributed gradient-free seed search for GERMINATOR networks.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "validate", help="check a job spec against its data; print the resolved spec or every error"
    )
    c.add_argument("spec")
    c.add_argument(
        "--no-data",
        action="store_true",
        help="check the spec alone (what submit checks; for data that only the cluster's nodes have)",
    )
    c.set_defaults(func=cmd_validate)

    c = sub.add_parser("up", help="start the local default: a Ray head and a redis-server on 127.0.0.1")
    c.add_argument("--num-cpus", type=int, default=None, help="CPUs the local Ray head offers")
    c.set_defaults(func=cmd_up)
    c = sub.add_parser("down", help="stop what `up` started (only that)")
    c.set_defaults(func=cmd_down)

    c = sub.add_parser(
        "submit", help="write a job to the seed table and start it on the cluster; prints its id"
    )
    c.add_argument("spec")
    c.add_argument("--job", help="job id (overrides the spec's)")
    c.add_argument(
        "--wait-s",
        type=float,
        default=120.0,
        help="wait this long for the runner to load the data and measure the initial model, so a data "
        "error is reported here (0: return at once; the job then fails on the cluster, `status` says why)",
    )
    _conn(c)
    c.set_defaults(func=cmd_submit)

    c = sub.add_parser("status", help="a job's state, progress, workers and best loss per layer")
    c.add_argument("job", nargs="?", help="job id (default: the newest job)")
    c.add_argument("--json", action="store_true", help="one machine-readable JSON document")
    c.add_argument("--watch", action="store_true", help="live progress display until the job ends")
    _conn(c)  # with a Ray address, a dead driver is seen at once
    c.set_defaults(func=cmd_status)

    c = sub.add_parser("jobs", help="every job in the seed table with its state and best loss")
    c.add_argument("--json", action="store_true")
    _conn(c)
    c.set_defaults(func=cmd_jobs)

    c = sub.add_parser("resume", help="start a new driver for a job whose driver died or was cancelled")
    c.add_argument("job")
    _conn(c)
    c.set_defaults(func=cmd_resume)

    c = sub.add_parser("scale", help="change the desired worker count of a running job")
    c.add_argument("job")
    c.add_argument("--workers", type=int, required=True)
    _conn(c, ray=False)
    c.set_defaults(func=cmd_scale)

    c = sub.add_parser("cancel", help="stop a job's driver, trainer and workers (the table keeps its state)")
    c.add_argument("job")
    _conn(c)
    c.set_defaults(func=cmd_cancel)

    c = sub.add_parser("export", help="write the job's model as a tiny checkpoint (JSON)")
    c.add_argument("job")
    c.add_argument("-o", "--output", required=True)
    _conn(c, ray=False)
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("plot", help="the job's loss per layer against time, swaps and publishes (PNG, JSON)")
    c.add_argument("job")
    c.add_argument("-o", "--output", help="the PNG to write (e.g. job.png)")
    c.add_argument("--json", action="store_true", help="print the plotted series as one JSON document")
    _conn(c, ray=False)
    c.set_defaults(func=cmd_plot)

    c = sub.add_parser("evaluate", help="metrics of a checkpoint on its job's test split or --data")
    c.add_argument("model")
    c.add_argument("--data", help="a .npz (X, y) or a text file to evaluate on instead")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("generate", help="sample bytes from a language-model checkpoint")
    c.add_argument("model")
    c.add_argument("--prompt", default="def ")
    c.add_argument("--bytes", type=int, default=200)
    c.add_argument("--temperature", type=float, default=0.8)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_generate)

    c = sub.add_parser(
        "demo", help="the main demo: local stack, submit examples/digits.yaml, watch, export, evaluate"
    )
    c.add_argument("--spec", default=None, help="job spec to run (default: examples/digits.yaml)")
    c.add_argument("--json", action="store_true", help="print one JSON document at the end")
    _conn(c)
    c.set_defaults(func=cmd_demo)

    c = sub.add_parser("demo-local", help="the core demo on one process (no Ray, no Redis)")
    c.add_argument("--rank", type=int, default=64)
    c.add_argument("--steps", type=int, default=600)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_demo_local)
    return p


def _secrets(args) -> list[str]:
    """The secrets this command was given (the --redis and --address credentials, those in the
    environment's addresses, GERMINATOR_REDIS_PASSWORD): what no message of it may show."""
    from germinator_dist.redaction import url_secrets

    env = (os.environ.get(k) for k in ("GERMINATOR_REDIS_URL", "RAY_ADDRESS"))
    return url_secrets(getattr(args, "redis", None), getattr(args, "address", None), *env)


def _hide_from_process_listing(secrets: list[str]) -> None:
    """Overwrite each secret in this process's own command line (what ``ps`` and /proc/PID/cmdline show)
    with ``*``. Linux only (the kernel names the command line's memory in /proc/self/stat); a no-op
    elsewhere. The interpreter's start-up, before this runs, still shows it: prefer the environment."""
    try:
        import ctypes

        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49 of stat
        shown = ctypes.string_at(start, end - start)
        if shown != Path("/proc/self/cmdline").read_bytes():
            return  # not the memory the kernel shows: leave it alone
        for secret in (s.encode() for s in secrets):
            at = shown.find(secret)
            while at >= 0:
                ctypes.memset(start + at, ord("*"), len(secret))
                at = shown.find(secret, at + len(secret))
    except (OSError, ValueError, IndexError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command. A GerminatorError is one line on stderr and exit 1; anything else (a bug) prints its
    traceback, and either way no secret the command was given appears in what is printed."""
    args = build_parser().parse_args(argv)
    secrets = _secrets(args)
    if secrets and argv is None:  # the command line is this process's own
        _hide_from_process_listing(secrets)
    from germinator_dist.redaction import scrub

    try:
        return args.func(args)
    except GerminatorError as exc:
        print(f"error: {scrub(str(exc), secrets)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug: its traceback, with the secrets scrubbed
        import traceback

        print(scrub(traceback.format_exc(), secrets), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":
    sys.exit(main())

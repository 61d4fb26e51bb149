"""``germinator-dist``: a thin CLI. Parses, validates, calls one function; user errors print one line."""

from __future__ import annotations

import argparse
import json
import sys

from germinator_dist.errors import GerminatorError


def _cmd_demo_local(args) -> int:
    from germinator_dist.local_demo import run_local_demo

    result = run_local_demo(rank=args.rank, steps=args.steps)
    if args.json:
        print(json.dumps(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="germinator-dist",
        description="Distributed gradient-free seed search for GERMINATOR networks.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo-local", help="the core demo on one process: digits, seed picking, float training"
    )
    d.add_argument("--rank", type=int, default=64, help="rank of every layer (default 64)")
    d.add_argument("--steps", type=int, default=600, help="float training steps (default 600)")
    d.add_argument("--json", action="store_true", help="also print the figures as one JSON document")
    d.set_defaults(func=_cmd_demo_local)
    # Until the distributed service lands, `demo` runs the local core demo.
    d2 = sub.add_parser("demo", help="the main demo job (currently: the local core demo)")
    d2.add_argument("--rank", type=int, default=64, help="rank of every layer (default 64)")
    d2.add_argument("--steps", type=int, default=600, help="float training steps (default 600)")
    d2.add_argument("--json", action="store_true", help="also print the figures as one JSON document")
    d2.set_defaults(func=_cmd_demo_local)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GerminatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The shared best-seed table in Redis: one namespace per job, atomic versioned commits, an event stream.

The only package that imports redis (tests/unit/test_import_guard.py). ``seed_table.SeedTable`` is its
entry point; ``registry`` (jobs, specs, state), ``lease`` (the driver lease), ``commits`` (swaps, seed
commits, float publishes), ``stream``, ``export``, ``codec``, ``conn`` and the Lua ``scripts*`` are its
parts. Schema and guarantees: docs/table.md.
"""

from germinator_dist.table.commits import BATCH
from germinator_dist.table.seed_table import SeedTable
from germinator_dist.table.stream import StreamEvent

__all__ = ["BATCH", "SeedTable", "StreamEvent"]

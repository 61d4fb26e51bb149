"""The writing half of ``SeedTable``: whole-vector seed commits, slot swaps and the trainer's float publish.

A mixin: ``germinator_dist.table.SeedTable`` provides ``_run``, ``_conn`` and the registered scripts ``_s``.
The rules are docs/layout.md's slot-level commits; every accepted change bumps the row's version and the
job's epoch by one and is appended to the stream in the same Lua script.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from ..errors import SpecError
from ..records import CommitOutcome, PublishOutcome, SeedCommit, SwapCommit
from .codec import (
    MAX_GEN,
    Keys,
    bits_needed,
    check_gens,
    check_int,
    check_seed,
    check_seeds,
    check_writer,
    encode_floats,
    encode_gens,
    encode_loss,
    encode_wire_seeds,
)
from .conn import Connection, map_error, stream_script
from .export import MAX_LAYERS

BATCH = 256  # commits per batch script: bounds how long one script holds Redis
OUTCOMES = {
    1: CommitOutcome.ACCEPTED,
    2: CommitOutcome.STALE,
    3: CommitOutcome.NOT_BETTER,
    4: CommitOutcome.ACCEPTED,  # a retry of a commit that was applied (its reply was lost)
    5: CommitOutcome.DUPLICATE,
}


class CommitMixin:
    """Commit operations of the seed table (mixed into SeedTable)."""

    _conn: Connection
    _s: dict[str, Any]

    def _run(self, name: str, keys: list[str], args: list, what: str) -> Any:
        raise NotImplementedError

    def commit_seeds(
        self,
        job: str,
        layer: int,
        expected_version: int,
        seeds: Sequence[int],
        floats: Sequence[float],
        loss: float,
        evaluator_id: str = "",
    ) -> CommitOutcome:
        """Atomically replace the layer's whole seed vector and floats if the row is still at
        ``expected_version`` and ``loss`` is strictly lower than the stored loss; then the generation of every
        slot whose seed changed, the row's version and the epoch go up by one and the commit is appended to
        the stream. A retry after a lost reply is answered, not applied twice.

        Raises SpecError (bad or repeated component seed, wrong seed or float count for the layer, bad float,
        NaN/inf loss, layer out of range), JobNotFound, TableError (malformed row, or the job is not
        PENDING/RUNNING), ConnectionFailed.
        """
        keys = Keys(job)
        fields = _seed_fields(layer, expected_version, seeds, floats, loss, evaluator_id)
        args = ["one", os.urandom(8).hex(), 1, *fields]
        res = self._run("COMMIT_SEEDS", [keys.meta, keys.events, keys.layer(fields[0])], args, "commit_seeds")
        return OUTCOMES[res[0]]

    def commit_seeds_many(self, job: str, commits: Sequence[SeedCommit]) -> list[CommitOutcome]:
        """``commit_seeds`` for many commits in one round trip, applied in order with the same rules.

        Commits go to Redis in scripts of up to ``BATCH`` commits; each script is one atomic step (all its
        rows are checked before any is written). Every commit is checked before anything is sent
        (SpecError naming ``commits[i]``). A batch that Redis refuses (TableError: a malformed row, a finished
        job; SpecError: a wrong count for the layer) is not applied; the call's other batches are, and the
        error names the first refused one. A batch retried after a lost reply is answered from the reply
        Redis kept, not applied twice.
        """
        rows = []
        for i, c in enumerate(commits):
            if not isinstance(c, SeedCommit):
                raise SpecError(f"commits[{i}]: expected a SeedCommit, got {type(c).__name__}")
            try:
                rows.append(
                    _seed_fields(c.layer, c.expected_version, c.seeds, c.floats, c.loss, c.evaluator_id)
                )
            except SpecError as exc:
                raise SpecError(f"commits[{i}].{exc}") from None
        return self._batches(job, "COMMIT_SEEDS", rows, "commit_seeds_many")

    def commit_swap(self, job: str, swap: SwapCommit) -> CommitOutcome:
        """Swap one component slot (docs/layout.md): accepted iff ``swap.slot`` is still at generation
        ``swap.expected_gen``, ``swap.loss < swap.incumbent_loss`` and no other component slot of the layer
        holds ``swap.seed``. Then the slot's seed and floats (``slot_floats``: g[slot], then the slot's entry
        of every expert row) are written, its generation, the row's version and the epoch go up by one, the
        row's loss becomes ``swap.loss``; the other slots, alpha and beta stay as the table holds them.
        Else ``rejected-stale`` (checked first), ``rejected-not-better`` (also when a loss is NaN or
        infinite) or ``rejected-duplicate``.

        Raises SpecError (slot not below the layer's rank, wrong slot float count, bad slot float, seed
        wider than the job's seed_bits, layer out of range), JobNotFound, TableError, ConnectionFailed.
        """
        keys = Keys(job)
        fields = _swap_fields(swap)
        args = ["one", os.urandom(8).hex(), 1, *fields]
        res = self._run("SWAP", [keys.meta, keys.events, keys.layer(fields[0])], args, "commit_swap")
        return OUTCOMES[res[0]]

    def commit_swaps_many(self, job: str, swaps: Sequence[SwapCommit]) -> list[CommitOutcome]:
        """``commit_swap`` for many swaps in one round trip, applied in order with the same rules (a later
        swap sees the generations and seeds the earlier ones left). Batching, errors and retries as in
        ``commit_seeds_many`` (SpecError names ``swaps[i]``)."""
        rows = []
        for i, s in enumerate(swaps):
            if not isinstance(s, SwapCommit):
                raise SpecError(f"swaps[{i}]: expected a SwapCommit, got {type(s).__name__}")
            try:
                rows.append(_swap_fields(s))
            except SpecError as exc:
                raise SpecError(f"swaps[{i}].{exc}") from None
        return self._batches(job, "SWAP", rows, "commit_swaps_many")

    def publish_floats(
        self,
        job: str,
        layer: int,
        floats: Sequence[float],
        loss: float,
        gens: Sequence[int],
        *,
        writer: str = "trainer",
        expected_version: int | None = None,
    ) -> PublishOutcome:
        """The trainer's slot-merging publish (docs/layout.md). ``gens`` are the layer's slot generations the
        floats were trained against. Every component slot still at its generation takes the publisher's
        floats; a slot swapped meanwhile keeps the table's and is listed in ``kept``; alpha and beta are the
        publisher's; the loss becomes ``loss`` (a new measurement, not compared). If a layer seed's
        generation moved (mask, scale, shift, bias), or ``expected_version`` is given and the row is not at
        it, the publish is ``rejected-stale`` and nothing is written. An accepted publish bumps the version
        and the epoch and appends a ``floats`` entry with the resulting floats. A retry after a lost reply
        is answered, not applied twice.

        Raises SpecError (wrong float or generation count for the layer, bad float, NaN/inf loss, layer out
        of range), JobNotFound, TableError, ConnectionFailed.
        """
        keys = Keys(job)
        layer = check_int(layer, "layer", 0, MAX_LAYERS)
        if isinstance(gens, str | bytes) or not isinstance(gens, Sequence):
            raise SpecError(f"gens: expected a sequence of generations, got {gens!r}"[:300])
        version = "" if expected_version is None else check_int(expected_version, "expected_version")
        args = [
            layer,
            encode_floats(floats),
            encode_loss(loss),
            encode_gens(check_gens(gens, len(gens))),
            check_writer(writer, "writer"),
            os.urandom(8).hex(),
            version,
        ]
        res = self._run("PUBLISH", [keys.meta, keys.layer(layer), keys.events], args, "publish_floats")
        return PublishOutcome(outcome=OUTCOMES[res[0]], kept=tuple(res[3:]), version=res[1])

    def _batches(self, job: str, script_name: str, rows: list[list], what: str) -> list[CommitOutcome]:
        """Send checked commit rows in pipelined batch scripts; the outcomes in order."""
        keys = Keys(job)
        calls = []
        for k in range(0, len(rows), BATCH):
            chunk = rows[k : k + BATCH]
            args = ["many", k, len(chunk), *(v for row in chunk for v in row)]
            calls.append(([keys.meta, keys.events, keys.batch(os.urandom(8).hex())], args))
        script = self._s[script_name]
        results = self._conn.call(what, lambda c: stream_script(c, script, calls)) if calls else []
        out: list[CommitOutcome] = []
        for k, res in enumerate(results):
            if isinstance(res, Exception):
                raise map_error(res, f"{what} (the batch from index {k * BATCH})")
            out += [OUTCOMES[code] for code in res[:-1:2]]
        return out


def _seed_fields(layer, expected_version, seeds, floats, loss, writer) -> list:
    """Checked and encoded: layer, expected_version, wire seeds, seed bits needed, floats, loss, writer."""
    seeds = check_seeds(seeds)
    return [
        check_int(layer, "layer", 0, MAX_LAYERS),
        check_int(expected_version, "expected_version"),
        encode_wire_seeds(seeds),
        bits_needed(seeds),
        encode_floats(floats),
        encode_loss(loss),
        check_writer(writer),
    ]


def _swap_fields(swap: object) -> list:
    """Checked and encoded: layer, slot, expected_gen, wire seed, bits needed, slot floats, loss (b"" when
    the swap is not better: ``loss < incumbent_loss`` fails or either is not finite), writer."""
    if not isinstance(swap, SwapCommit):
        raise SpecError(f"swap: expected a SwapCommit, got {type(swap).__name__}")
    seed = check_seed(swap.seed)
    better = (
        math.isfinite(swap.loss) and math.isfinite(swap.incumbent_loss) and swap.loss < swap.incumbent_loss
    )
    return [
        check_int(swap.layer, "layer", 0, MAX_LAYERS),
        check_int(swap.slot, "slot", 0, 10**6),
        check_int(swap.expected_gen, "expected_gen", 0, MAX_GEN),
        encode_wire_seeds((seed,)),
        seed.bit_length(),
        encode_floats(swap.slot_floats, "slot_floats"),
        encode_loss(swap.loss) if better else b"",
        check_writer(swap.evaluator_id),
    ]

"""The job registry half of ``SeedTable``: jobs, states, desired workers, heartbeats, progress counters.

A mixin: ``germinator_dist.table.SeedTable`` provides ``_run`` (run a named Lua script with retries) and
``_conn``; raises as documented there (SpecError, JobNotFound, TableError, ConnectionFailed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, overload

from ..errors import SpecError, TableError
from ..records import BrokenJob, Heartbeat, JobInfo, JobState, LayerEntry, Progress, Snapshot
from .codec import (
    REGISTRY_KEY,
    Keys,
    check_doc,
    check_float_count,
    check_int,
    check_member_id,
    check_seed_bits,
    check_seeds,
    check_spec_json,
    check_writer,
    decode_float,
    decode_state,
    decode_text,
    decode_uint,
    encode_floats,
    encode_gens,
    encode_loss,
    encode_payload,
    encode_seeds,
    seed_width,
)
from .conn import Connection
from .export import MAX_LAYERS
from .lease import lease_ttl_ms

_COUNTERS = ("evaluations", "accepted", "stale", "not_better")


class JobRegistryMixin:
    """Job registry operations of the seed table (mixed into SeedTable)."""

    _conn: Connection

    def _run(self, name: str, keys: list[str], args: list, what: str) -> Any:
        raise NotImplementedError

    def snapshot(self, job: str) -> Snapshot:
        raise NotImplementedError

    # --- job registry -------------------------------------------------------------------------------------

    def create_job(
        self,
        job: str,
        spec_json: str,
        layers: Sequence[LayerEntry] = (),
        desired_workers: int = 1,
        *,
        resume: bool = False,
        seed_bits: int = 63,
        lease: tuple[str, float] | None = None,
    ) -> JobInfo:
        """Create a job (PENDING), with its initial layer rows logged to the stream as ``init``, or without
        rows (``layers`` empty: registered only; the holder of its driver lease writes them later with
        ``init_rows``). Versions and slot generations start at 0 (those of the given rows are not used).

        An existing job id raises TableError, unless ``resume``: then the stored table is kept (after checking
        that the spec and every layer's rank and float count match, TableError otherwise) and only
        desired_workers is set. Raises SpecError for a bad id or spec, a seed wider than ``seed_bits``, a
        repeated component seed, floats that do not fit the layer's rank, a NaN loss.

        ``lease`` = (owner, ttl seconds): a new job is created with its driver lease held by ``owner``, in the
        same script, so no other driver can claim it between its creation and its runner's start (not used
        when the job exists).
        """
        keys = Keys(job)
        check_spec_json(spec_json)
        bits = check_seed_bits(seed_bits)
        desired = check_int(desired_workers, "desired_workers", 0, 100_000)
        rows = _encode_rows(layers, bits, with_time=True)
        args = [job, keys.prefix, "create", spec_json, len(layers), bits, desired, JobState.PENDING.value, 0]
        if lease is not None:
            rows += [check_member_id(lease[0]), lease_ttl_ms(lease[1])]
        made = self._run("CREATE", [keys.meta, keys.events, REGISTRY_KEY], args + rows, "create_job")
        if made == -1:
            if not resume:
                raise TableError(f"job {job} already exists (pass resume=True to continue it)")
            self._check_resume(job, spec_json, layers)
            self.set_desired_workers(job, desired)
        return self.job_info(job)

    def init_rows(self, job: str, owner: str, spec_json: str, layers: Sequence[LayerEntry]) -> bool:
        """Write the initial layer rows of a job registered without them, with its spec (now carrying the
        dimensions the data determined), in one script, as the holder ``owner`` of its driver lease.

        Returns False, changing nothing, when the job has rows already (a resumed job). Raises SpecError
        (bad rows or spec), JobNotFound, TableError (``owner`` does not hold the lease; the job is finished).
        """
        keys = Keys(job)
        check_spec_json(spec_json)
        if not layers:
            raise SpecError(f"layers: expected 1..{MAX_LAYERS} initial LayerEntry rows, got none")
        rows = _encode_rows(layers, self.job_info(job).seed_bits, with_time=False)
        args = [keys.prefix, check_member_id(owner), spec_json, len(layers)]
        lease_key = keys.prefix + "lease"
        made = self._run("INIT_ROWS", [keys.meta, keys.events, lease_key], args + rows, "init_rows")
        return made != -1

    def _check_resume(self, job: str, spec_json: str, layers: Sequence[LayerEntry]) -> None:
        if json.loads(self.get_spec(job)) != json.loads(spec_json):
            raise TableError(f"job {job}: resume with a different spec than the stored one")
        snap = self.snapshot(job)
        if len(snap.layers) != len(layers):
            raise TableError(f"job {job}: resume with {len(layers)} layers, the table has {len(snap.layers)}")
        for stored, given in zip(snap.layers, layers, strict=True):
            if (stored.rank, len(stored.floats)) != (given.rank, len(given.floats)):
                raise TableError(
                    f"job {job}: resume with layer {given.layer} of rank {given.rank} and "
                    f"{len(given.floats)} floats, the table has rank {stored.rank} and {len(stored.floats)}"
                )

    def job_info(self, job: str) -> JobInfo:
        """The job's registry row. Raises JobNotFound, TableError (malformed meta)."""
        keys = Keys(job)
        return decode_info(job, self._run("INFO", [keys.meta], ["0"], "job_info"))

    @overload
    def list_jobs(self) -> list[JobInfo]: ...
    @overload
    def list_jobs(self, *, each: bool) -> list[JobInfo | BrokenJob]: ...

    def list_jobs(self, *, each: bool = False) -> list:
        """Every registered job, sorted by id. Raises TableError if the registry holds junk; with ``each``, a
        job whose registry row cannot be read is listed as a BrokenJob (naming the error) instead."""
        rows = self._run("LIST_JOBS", [REGISTRY_KEY], ["each"] if each else [], "list_jobs")
        out: list[JobInfo | BrokenJob] = []
        for r in rows:
            job = r[0].decode("utf-8", "replace")
            if r[1] == b"!":
                out.append(BrokenJob(job=job, error=r[2].decode("utf-8", "replace")))
                continue
            try:
                out.append(decode_info(job, r[1:]))
            except (TableError, SpecError, ValueError) as exc:
                if not each:
                    raise
                out.append(BrokenJob(job=job, error=str(exc)))
        return sorted(out, key=lambda i: i.job)

    def get_spec(self, job: str) -> str:
        """The job's spec JSON, as stored. Raises JobNotFound, TableError."""
        keys = Keys(job)
        res = self._run("INFO", [keys.meta], ["1"], "get_spec")
        return decode_spec(keys.meta, res[6])

    def delete_job(self, job: str, *, owner: str | None = None, unheld: bool = False) -> bool:
        """Delete every key of the job (and junk under its prefix); True if it existed (no JobNotFound).

        With ``owner``, only while the job's driver lease is ``owner``'s (or nobody's, when ``unheld``),
        checked in the same script: False, nothing deleted, otherwise."""
        keys = Keys(job)
        guard = [] if owner is None else [check_member_id(owner), "1" if unheld else "0"]
        existed = self._run(
            "DELETE",
            [keys.meta, keys.events, keys.progress, REGISTRY_KEY],
            [job, keys.prefix, *guard],
            "delete_job",
        )
        if existed == -1:
            return False

        def sweep(c) -> None:
            batch = list(c.scan_iter(match=keys.prefix + "*", count=1000))
            if batch:
                c.unlink(*batch)

        self._conn.call("delete_job", sweep)
        return bool(existed)

    def get_state(self, job: str) -> JobState:
        return self.job_info(job).state

    def set_state(
        self, job: str, state: JobState | str, *, expected: JobState | str | None = None
    ) -> JobState:
        """Move the job to ``state`` and return the previous state; setting the current state is a no-op.

        Legal: PENDING -> RUNNING | FAILED | CANCELLED, RUNNING -> SUCCEEDED | FAILED | CANCELLED,
        FAILED | CANCELLED -> RUNNING (resume). Raises TableError for an illegal transition or when the state
        is not ``expected`` (a compare-and-set), SpecError for an unknown state, JobNotFound.
        """
        keys = Keys(job)
        new, exp = (
            state_arg(state, "state"),
            state_arg(expected, "expected") if expected is not None else "",
        )
        return JobState(self._run("SET_STATE", [keys.meta], [new, exp], "set_state").decode())

    def desired_workers(self, job: str) -> int:
        return self.job_info(job).desired_workers

    def set_desired_workers(self, job: str, n: int) -> None:
        """Raises SpecError unless 0 <= n <= 100000, JobNotFound."""
        keys = Keys(job)
        self._run("SET_DESIRED", [keys.meta], [check_int(n, "desired_workers", 0, 100_000)], "set_desired")

    def scale_workers(self, job: str, n: int, lo: int, hi: int) -> None:
        """Set the desired worker count of a PENDING or RUNNING job (checked in the same script as the write).

        Raises SpecError unless lo <= n <= hi (the spec's ``workers.min``/``max``), TableError for a finished
        job, JobNotFound.
        """
        keys = Keys(job)
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
            raise SpecError(
                f"--workers: {n!r} is outside the job's [workers.min, workers.max] = [{lo}, {hi}]"
            )
        self._run("SET_DESIRED", [keys.meta], [check_int(n, "desired_workers", 0, 100_000), job], "scale")

    # --- heartbeats and progress ----------------------------------------------------------------------------

    def heartbeat(
        self, job: str, role: str, member: str, *, ttl: float = 10.0, payload: dict | None = None
    ) -> None:
        """Mark ``member`` (a worker/driver/trainer id) live for ``ttl`` seconds of the Redis server's clock.

        ``payload`` is a small flat JSON object (e.g. pid, host). Raises SpecError, JobNotFound.
        """
        keys = Keys(job)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0.001 <= ttl <= 86400:
            raise SpecError(f"ttl: {ttl!r} is not a number of seconds in [0.001, 86400]")
        args = [check_member_id(member), int(ttl * 1000), encode_payload(payload)]
        self._run("HEARTBEAT", [keys.meta, keys.hb(role), keys.hbdata(role)], args, "heartbeat")

    def live(self, job: str, role: str) -> list[Heartbeat]:
        """The members of ``role`` whose heartbeat has not expired, by id. Raises JobNotFound, TableError."""
        keys = Keys(job)
        res = self._run("LIVE", [keys.meta, keys.hb(role), keys.hbdata(role)], [], "live")
        now_ms = int(res[0])
        out = []
        for member, expiry, payload in res[1:]:
            where = keys.hbdata(role)
            mid = decode_text(member, keys.hb(role), "member")
            try:
                data = json.loads(decode_text(payload, where, mid))
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise TableError(
                    f"malformed seed table entry {where} field {member!r}: {payload!r} (not a JSON object)"
                )
            exp = decode_float(expiry, keys.hb(role), mid)
            out.append(
                Heartbeat(
                    role=role,
                    id=mid,
                    expires_at=exp / 1000,
                    expires_in=(exp - now_ms) / 1000,
                    payload=data,
                )
            )
        return sorted(out, key=lambda h: h.id)

    def drop_heartbeat(self, job: str, role: str, member: str) -> None:
        """Forget ``member`` at once (a clean shutdown). Raises SpecError, TableError."""
        keys = Keys(job)
        member = check_member_id(member)

        def drop(c) -> None:
            with c.pipeline(transaction=True) as p:
                p.zrem(keys.hb(role), member).hdel(keys.hbdata(role), member).execute()

        self._conn.call("drop_heartbeat", drop)

    def update_progress(
        self,
        job: str,
        *,
        evaluations: int = 0,
        accepted: int = 0,
        stale: int = 0,
        not_better: int = 0,
        evals_per_s: float | None = None,
        workers_live: int | None = None,
    ) -> None:
        """Add to the driver's counters (HINCRBY) and set its gauges (HSET), atomically.

        Raises SpecError (a negative delta, NaN rate), JobNotFound, TableError (malformed counters).
        """
        keys = Keys(job)
        incr = {"evaluations": evaluations, "accepted": accepted, "stale": stale, "not_better": not_better}
        args: list = [len(incr)]
        for name, delta in incr.items():
            args += [name, check_int(delta, name, 0)]
        if evals_per_s is not None:
            args += ["evals_per_s", encode_loss(evals_per_s, what="evals_per_s")]
        if workers_live is not None:
            args += ["workers_live", check_int(workers_live, "workers_live", 0)]
        self._run("PROGRESS", [keys.meta, keys.progress], args, "update_progress")

    def put_doc(self, job: str, name: str, text: str) -> None:
        """Store a small named JSON document with the job (a proposer's state, a submission record).

        Documents are not part of the table: export/import and the stream leave them out. Raises SpecError
        (bad name, not JSON, over 8 MiB), JobNotFound.
        """
        keys = Keys(job)
        self._run("PUT_DOC", [keys.meta, keys.docs], list(check_doc(name, text)), "put_doc")

    def get_doc(self, job: str, name: str) -> str | None:
        """The named document's JSON text, or None. Raises SpecError, JobNotFound, TableError (not JSON)."""
        keys = Keys(job)
        raw = self._run("GET_DOC", [keys.meta, keys.docs], [check_doc(name, "null")[0]], "get_doc")
        if raw is None:
            return None
        text = decode_text(raw, keys.docs, name)
        try:
            json.loads(text)
        except ValueError:
            raise TableError(
                f"malformed seed table entry {keys.docs} field {name!r}: {raw[:80]!r} (not JSON)"
            ) from None
        return text

    def progress(self, job: str) -> Progress:
        """The driver's progress counters. Raises JobNotFound, TableError."""
        keys = Keys(job)
        flat = self._run("READ_PROGRESS", [keys.meta, keys.progress], [], "progress")
        got = dict(zip(flat[::2], flat[1::2], strict=True))
        vals: dict = {
            n: decode_uint(got[n.encode()], keys.progress, n)
            for n in (*_COUNTERS, "workers_live")
            if n.encode() in got
        }
        for n in ("evals_per_s", "updated"):
            if n.encode() in got:
                vals[n] = decode_float(got[n.encode()], keys.progress, n)
        return Progress(**vals)


def state_arg(state: object, what: str) -> str:
    try:
        return JobState(state).value
    except ValueError:
        raise SpecError(f"{what}: {state!r} is not one of {[s.value for s in JobState]}") from None


def decode_spec(key: str, raw: object) -> str:
    spec = decode_text(raw, key, "spec")
    try:
        ok = isinstance(json.loads(spec), dict)
    except ValueError:
        ok = False
    if not ok:
        raise TableError(f"malformed seed table entry {key} field 'spec': {spec[:80]!r} (not a JSON object)")
    return spec


def decode_info(job: str, r: list) -> JobInfo:
    meta = Keys(job).meta
    return JobInfo(
        job=job,
        state=decode_state(r[0], meta),
        n_layers=int(r[1]),
        seed_bits=int(r[2]),
        epoch=int(r[3]),
        desired_workers=int(r[4]),
        created=decode_float(r[5], meta, "created"),
    )


def _encode_rows(layers: Sequence[LayerEntry], bits: int, *, with_time: bool) -> list[bytes | str]:
    """The CREATE / INIT_ROWS script arguments of initial rows (7 per layer with the time field, else 6).
    Raises SpecError naming the layer and field."""
    if not isinstance(layers, Sequence) or len(layers) > MAX_LAYERS:
        raise SpecError(f"layers: expected at most {MAX_LAYERS} LayerEntry rows, got {layers!r}"[:200])
    rows: list[bytes | str] = []
    width = seed_width(bits)
    for i, e in enumerate(layers):
        if not isinstance(e, LayerEntry) or e.layer != i:
            raise SpecError(f"layers[{i}]: expected a LayerEntry with layer={i}, got {e!r}"[:200])
        seeds = check_seeds(e.seeds, bits, f"layers[{i}].seeds")
        check_float_count(len(e.floats), e.rank, f"layers[{i}].floats")
        rows += [
            encode_seeds(seeds, width),
            encode_gens((0,) * len(seeds)),
            encode_floats(e.floats, f"layers[{i}].floats"),
            encode_loss(e.loss, allow_inf=True, what=f"layers[{i}].loss"),
            b"0",
            check_writer(e.writer or "create", f"layers[{i}].writer"),
        ]
        if with_time:
            rows.append(b"")
    return rows

"""``SeedTable``: the shared best-seed table of every job on one Redis server.

``SeedTable("redis://127.0.0.1:6379/0")`` is the only way the rest of the project touches Redis
(only the ``table`` package imports redis). Schema and guarantees: ``docs/table.md``.
Every method raises ``SpecError`` for a bad argument, ``JobNotFound`` for an unknown job,
``TableError`` for malformed content in Redis or a refused operation (the table is then unchanged), and
``ConnectionFailed`` once the retries against an unreachable server are spent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..errors import TableError
from ..records import JobInfo, JobState, LayerEntry, Snapshot
from . import scripts as table_scripts
from . import scripts_commit as table_scripts_commit
from . import scripts_jobs as table_scripts_jobs
from .codec import (
    REGISTRY_KEY,
    Keys,
    check_int,
    decode_float,
    decode_floats,
    decode_format,
    decode_gens,
    decode_seeds,
    decode_state,
    decode_text,
    decode_uint,
    encode_floats,
    encode_gens,
    encode_loss,
    encode_seeds,
    seed_width,
)
from .commits import CommitMixin
from .conn import Connection, map_error, stream_script
from .export import MAX_LAYERS, export_doc, parse_export
from .lease import LeaseMixin
from .registry import JobRegistryMixin, decode_spec, state_arg
from .stream import StreamEvent, decode_event, first_difference, replay

_SCRIPTS = (
    "COMMIT_SEEDS",
    "SWAP",
    "PUBLISH",
    "SNAPSHOT",
    "CREATE",
    "INIT_ROWS",
    "REPAIR",
    "DELETE",
    "SET_STATE",
    "SET_DESIRED",
    "PROGRESS",
    "HEARTBEAT",
    "LIVE",
    "LIST_JOBS",
    "ENTRY",
    "INFO",
    "READ_PROGRESS",
    "PUT_DOC",
    "GET_DOC",
    "LEASE_CLAIM",
    "LEASE_RENEW",
    "LEASE_RELEASE",
    "LEASE_READ",
)


class SeedTable(JobRegistryMixin, LeaseMixin, CommitMixin):
    """The seed table of every job on one Redis server. Thread-safe (redis-py pools connections).

    The job registry methods (create_job, list_jobs, set_state, heartbeat, progress, ...) are in
    ``table.registry.JobRegistryMixin``, the writes (commit_seeds, commit_swap, publish_floats, ...) in
    ``table.commits.CommitMixin``, the driver lease in ``table.lease.LeaseMixin``; the reads, the stream,
    export and import are here.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        password: str | None = None,
        retries: int = 6,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        socket_timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        """Connect lazily (nothing is sent yet). Raises SpecError for a malformed URL or retry settings."""
        self._conn = Connection(
            url,
            password=password,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
        )
        client = self._conn.client
        sources = {**vars(table_scripts), **vars(table_scripts_commit), **vars(table_scripts_jobs)}
        self._s = {name: client.register_script(sources[name]) for name in _SCRIPTS}

    @property
    def url(self) -> str:
        """The server address with the password redacted."""
        return self._conn.redacted

    def __repr__(self) -> str:
        return f"SeedTable({self.url!r})"

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SeedTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, name: str, keys: list[str], args: list, what: str) -> Any:
        """Run the named Lua script with the connection's retries; errors mapped as in ``Connection.call``."""
        script, calls = self._s[name], [(keys, args)]
        (reply,) = self._conn.call(what, lambda c: stream_script(c, script, calls))
        if isinstance(reply, Exception):
            raise map_error(reply, what)
        return reply

    # --- server -------------------------------------------------------------------------------------------

    def ping(self) -> float:
        """Round-trip seconds of one PING. Raises ConnectionFailed."""
        start = time.perf_counter()
        self._conn.call("PING", lambda c: c.ping())
        return time.perf_counter() - start

    def durability(self) -> dict[str, str] | None:
        """The server's ``appendonly`` and ``appendfsync`` settings, or None where CONFIG is disabled."""
        try:
            got = self._conn.call("CONFIG GET", lambda c: c.config_get("append*"))
        except TableError:
            return None
        text = {_str(k): _str(v) for k, v in got.items()}
        return {k: text[k] for k in ("appendonly", "appendfsync") if k in text}

    # --- the table ------------------------------------------------------------------------------------------

    def snapshot(self, job: str) -> Snapshot:
        """Every layer's entry and the epoch, in one consistent read. Raises JobNotFound, TableError."""
        keys = Keys(job)
        res = self._run("SNAPSHOT", [keys.meta], [keys.prefix, "0"], "snapshot")
        return _snapshot(job, res)

    def entry(self, job: str, layer: int) -> LayerEntry:
        """One layer's entry (a cheaper read than snapshot). Raises SpecError, JobNotFound, TableError."""
        keys = Keys(job)
        layer = check_int(layer, "layer", 0, MAX_LAYERS)
        res = self._run("ENTRY", [keys.meta, keys.layer(layer)], [layer], "entry")
        return _row(layer, keys.layer(layer), res[1:], int(res[0]))

    # --- stream, export, import -----------------------------------------------------------------------------

    def events(self, job: str, *, after: str | None = None, count: int | None = None) -> list[StreamEvent]:
        """The stream's entries in order (after stream id ``after``, at most ``count``), as ``StreamEvent``s
        (``TableEvent`` plus gens, slot, seed, gen, kept). Raises JobNotFound, TableError (a malformed
        entry, or one of another table format)."""
        keys = Keys(job)
        bits = self.job_info(job).seed_bits
        out: list[StreamEvent] = []
        start = "-" if after is None else f"({after}"
        while count is None or len(out) < count:
            n = 1000 if count is None else min(1000, count - len(out))
            chunk = self._conn.call("events", lambda c, s=start, n=n: c.xrange(keys.events, s, "+", count=n))
            out += [decode_event(keys.events, eid, fields, bits) for eid, fields in chunk]
            if len(chunk) < n:
                break
            start = "(" + chunk[-1][0].decode()
        return out

    def export(self, job: str) -> dict:
        """The whole table as one JSON-ready document (``table.export``). Raises JobNotFound, TableError."""
        keys = Keys(job)
        res = self._run("SNAPSHOT", [keys.meta], [keys.prefix, "1"], "export")
        snap = _snapshot(job, res)
        return export_doc(
            job,
            decode_spec(keys.meta, res[6]),
            snap,
            int(res[3]),
            decode_state(res[0], keys.meta),
            int(res[4]),
        )

    def import_(
        self, job: str, data: dict, *, replace: bool = False, state: JobState | str | None = None
    ) -> JobInfo:
        """Write an export document as job ``job`` (versions, epoch and state as exported unless ``state``).

        The document is checked completely first (SpecError) and written in one script. An existing job raises
        TableError unless ``replace`` (then its keys and stream are replaced at once).
        """
        keys = Keys(job)
        doc = parse_export(data)
        st = state_arg(state, "state") if state is not None else doc.state.value
        args = [
            job,
            keys.prefix,
            "replace" if replace else "import",
            doc.spec_json,
            len(doc.rows),
            doc.seed_bits,
            doc.desired_workers,
            st,
            doc.epoch,
        ]
        args += [v for row in doc.rows for v in row]
        if self._run("CREATE", [keys.meta, keys.events, REGISTRY_KEY], args, "import_") == -1:
            raise TableError(f"job {job} already exists (pass replace=True to overwrite it)")
        return self.job_info(job)

    def rebuild_from_stream(self, job: str, *, repair: bool = False) -> Snapshot:
        """Rebuild every layer row from the event stream alone and return it.

        Without ``repair``: raises TableError naming the first difference if the rebuilt table is not the
        stored one. With ``repair``: writes the rebuilt rows and epoch over the stored ones (fixing damaged
        rows), refusing (TableError) if a commit lands meanwhile. Raises JobNotFound, TableError.
        """
        keys = Keys(job)
        if not repair:
            snap = self.snapshot(job)
            rebuilt = replay(job, keys.events, self.events(job), up_to_epoch=snap.epoch)
            diff = first_difference(rebuilt, snap)
            if diff:
                raise TableError(f"job {job}: the table differs from its stream {keys.events}: {diff}")
            return rebuilt
        evs = self.events(job)
        rebuilt = replay(job, keys.events, evs)
        args: list = [keys.prefix, evs[-1].id if evs else "", rebuilt.epoch]
        width = seed_width(self.job_info(job).seed_bits)
        for e in rebuilt.layers:
            args += [
                encode_seeds(e.seeds, width),
                encode_gens(e.generations),
                encode_floats(e.floats),
                encode_loss(e.loss, allow_inf=True),
                e.version,
                e.writer,
                repr(e.time),
            ]
        self._run("REPAIR", [keys.meta, keys.events], args, "rebuild_from_stream")
        return rebuilt


# --- helpers ------------------------------------------------------------------------------------------------


def _str(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _row(layer: int, key: str, vals: Sequence, seed_bits: int) -> LayerEntry:
    """One row as read by SNAPSHOT / ENTRY (format, seeds, gens, floats, loss, version, writer, time),
    decoded strictly: TableError naming the key, the field and the value."""
    fmt, seeds, gens, floats, loss, version, writer, when = vals
    decode_format(fmt, key)
    v = decode_uint(version, key, "version")
    g = decode_gens(gens, key)
    return LayerEntry(
        layer=layer,
        seeds=decode_seeds(seeds, key, "seeds", seed_bits, len(g)),
        gens=g,
        floats=decode_floats(floats, key, "floats", len(g) - 4),
        loss=decode_float(loss, key, "loss", allow_inf=v == 0),
        version=v,
        writer=decode_text(writer, key, "writer"),
        time=decode_float(when, key, "time"),
    )


def _snapshot(job: str, res: list) -> Snapshot:
    bits = int(res[3])
    layers = tuple(_row(i, r[0].decode(), r[1:], bits) for i, r in enumerate(res[7:]))
    return Snapshot(job=job, epoch=int(res[1]), layers=layers)

"""Export / import (the tiny checkpoint) and rebuilding the table from its event stream."""

from __future__ import annotations

import copy
import json
import random

import pytest
from table_helpers import SPEC, dump_job, initial_rows

from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration


def _busy_job(table: SeedTable, job: str, n: int = 60) -> None:
    """A job with a history: seed commits (some rejected) and float publishes on 3 layers."""
    rng = random.Random(5)
    table.create_job(job, SPEC, initial_rows(3, 4), desired_workers=2, seed_bits=32)
    table.set_state(job, "RUNNING")
    for i in range(n):
        layer = rng.randrange(3)
        v = table.entry(job, layer).version
        floats = [rng.uniform(-1, 1) for _ in range(4)]
        if i % 7 == 3:
            table.publish_floats(job, layer, v, floats, 50.0 - i * 0.3)
        else:
            seeds = [rng.getrandbits(32) for _ in range(8)]
            table.commit_seeds(job, layer, v, seeds, floats, 60.0 - i * 0.5 + rng.uniform(0, 3), f"w{i % 3}")


def test_export_is_strict_json_and_import_round_trips(table: SeedTable, job_id: str) -> None:
    _busy_job(table, job_id)
    doc = table.export(job_id)
    text = json.dumps(doc, allow_nan=False)  # no NaN/Infinity: an unmeasured loss is null
    assert doc["format"] == "germinator-table/1" and doc["spec"] == json.loads(SPEC)
    assert doc["state"] == "RUNNING" and doc["seed_bits"] == 32
    assert doc["epoch"] == sum(row["version"] for row in doc["layers"]) > 0
    copy_id = job_id + "-copy"
    try:
        info = table.import_(copy_id, json.loads(text))
        assert (info.epoch, info.state, info.seed_bits, info.desired_workers) == (
            doc["epoch"],
            JobState.RUNNING,
            32,
            2,
        )
        assert table.export(copy_id) == {**doc, "job": copy_id}
        assert table.snapshot(copy_id).layers == table.snapshot(job_id).layers
        # the imported table is a live table: versions continue, its stream rebuilds it
        v = table.entry(copy_id, 1).version
        assert table.commit_seeds(copy_id, 1, v, [1] * 8, [0] * 4, -1.0) is CommitOutcome.ACCEPTED
        kinds = [ev.kind for ev in table.events(copy_id)]
        assert kinds == ["import"] * 3 + ["seeds"]
        assert table.rebuild_from_stream(copy_id) == table.snapshot(copy_id)
    finally:
        table.delete_job(copy_id)


def test_unmeasured_rows_export_as_null(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2, 1))
    assert [row["loss"] for row in table.export(job_id)["layers"]] == [None, None]


def test_import_refuses_an_existing_job_unless_replace(table: SeedTable, job_id: str) -> None:
    _busy_job(table, job_id, 10)
    doc = table.export(job_id)
    with pytest.raises(TableError, match="already exists"):
        table.import_(job_id, doc)
    table.commit_seeds(job_id, 0, table.entry(job_id, 0).version, [2] * 8, [0] * 4, -5.0)
    info = table.import_(job_id, doc, replace=True, state="PENDING")
    assert info.state is JobState.PENDING and table.export(job_id) == {**doc, "state": "PENDING"}
    assert [ev.kind for ev in table.events(job_id)] == ["import"] * 3  # a replaced job starts a new log


def _mutations():
    def m(path, value):
        def apply(doc):
            node = doc
            for p in path[:-1]:
                node = node[p]
            if value is KeyError:
                del node[path[-1]]
            else:
                node[path[-1]] = value

        return path, value, apply

    return [
        m(("format",), "germinator-table/0"),
        m(("spec",), "not an object"),
        m(("seed_bits",), 64),
        m(("state",), "DONE"),
        m(("epoch",), 999),
        m(("desired_workers",), -1),
        m(("extra",), 1),
        m(("layers",), []),
        m(("layers", 1, "layer"), 0),
        m(("layers", 0, "seeds"), [1, 2, 3]),
        m(("layers", 0, "seeds", 3), -1),
        m(("layers", 0, "seeds", 3), 2**32),  # seed_bits is 32
        m(("layers", 0, "seeds", 3), "7"),
        m(("layers", 0, "floats", 0), float("nan")),
        m(("layers", 0, "floats", 0), 1e39),  # beyond float32
        m(("layers", 0, "loss"), float("nan")),
        m(("layers", 0, "loss"), None),  # null only at version 0
        m(("layers", 0, "version"), -1),
        m(("layers", 0, "writer"), "bad\nwriter"),
        m(("layers", 0, "time"), KeyError),
    ]


MUTATIONS = _mutations()


@pytest.mark.parametrize(
    "path,value,apply", MUTATIONS, ids=[".".join(map(str, p)) + "=" + repr(v)[:24] for p, v, _ in MUTATIONS]
)
def test_import_checks_the_whole_document_before_writing(
    table: SeedTable, job_id: str, redis_server, path, value, apply
) -> None:
    _busy_job(table, job_id, 12)
    doc = table.export(job_id)
    assert doc["layers"][0]["version"] > 0, "the test needs a measured row 0"
    bad = copy.deepcopy(doc)
    apply(bad)
    target = job_id + "-imp"
    raw = redis_server.client()
    before = dump_job(raw, target)
    with pytest.raises(SpecError, match="export"):
        table.import_(target, bad)
    assert dump_job(raw, target) == before == {"registered": 0}


def test_rebuild_from_stream_equals_the_table_and_repairs_damage(
    table: SeedTable, job_id: str, redis_server
) -> None:
    _busy_job(table, job_id)
    snap = table.snapshot(job_id)
    assert table.rebuild_from_stream(job_id) == snap
    raw = redis_server.client()
    # someone rewrites a row with well-formed but false values: the stream disagrees
    raw.hset(f"germ:{{{job_id}}}:layer:2", mapping={"loss": "0.001"})
    with pytest.raises(TableError, match="layer 2 loss"):
        table.rebuild_from_stream(job_id)
    # and a row deleted outright
    raw.delete(f"germ:{{{job_id}}}:layer:1")
    with pytest.raises(TableError, match="layer:1 is missing"):
        table.snapshot(job_id)
    assert table.rebuild_from_stream(job_id, repair=True) == snap
    assert table.snapshot(job_id) == snap
    assert table.rebuild_from_stream(job_id) == snap
    v = snap.layers[0].version
    assert table.commit_seeds(job_id, 0, v, [1] * 8, [0] * 4, -1.0) is CommitOutcome.ACCEPTED


def test_rebuild_detects_a_stream_that_is_not_a_history(table: SeedTable, job_id: str, redis_server) -> None:
    _busy_job(table, job_id, 10)
    raw = redis_server.client()
    raw.xadd(
        f"germ:{{{job_id}}}:events",
        {
            "kind": "seeds",
            "layer": "0",
            "version": "99",
            "epoch": "99",
            "seeds": "[1,1,1,1,1,1,1,1]",
            "floats": b"\0" * 16,
            "loss": "0.1",
            "writer": "forger",
            "time": "1.0",
        },
    )
    with pytest.raises(TableError, match="does not follow the history"):
        table.rebuild_from_stream(job_id, repair=True)
    raw.xadd(f"germ:{{{job_id}}}:events", {"kind": "pickle", "layer": "0"})
    with pytest.raises(TableError, match="'kind'"):
        table.events(job_id)

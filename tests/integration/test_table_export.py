"""Export / import (the tiny checkpoint) and rebuilding the table from its event stream: seed commits,
swaps and merged publishes all replay to the table exactly; documents and entries of table format 1 are
refused with both formats named."""

from __future__ import annotations

import copy
import json
import random
import struct

import pytest
from table_helpers import SPEC, dump_job, initial_rows

from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState, SwapCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration


RANK = 4
F = 2 + RANK * 2  # one expert row


def _busy_job(table: SeedTable, job: str, n: int = 60) -> None:
    """A job with a history on 3 layers: seed commits, swaps (some rejected) and publishes, some of which
    keep a slot that was swapped after the trainer read its generations."""
    rng = random.Random(5)
    table.create_job(job, SPEC, initial_rows(3, RANK, experts=1), desired_workers=2, seed_bits=32)
    table.set_state(job, "RUNNING")
    stale_gens = {}
    for i in range(n):
        layer = rng.randrange(3)
        e = table.entry(job, layer)
        floats = [rng.uniform(-1, 1) for _ in range(F)]
        if i % 5 == 3:
            gens = stale_gens.get(layer, e.gens)
            table.publish_floats(job, layer, floats, 50.0 - i * 0.3, gens, writer=f"t{i}")
        elif i % 5 in (0, 4):
            seeds = [rng.getrandbits(32) for _ in range(RANK + 4)]
            table.commit_seeds(
                job, layer, e.version, seeds, floats, 60.0 - i * 0.5 + rng.uniform(0, 3), f"w{i}"
            )
        else:
            stale_gens[layer] = e.gens
            slot = rng.randrange(RANK)
            swap = SwapCommit(
                layer=layer,
                slot=slot,
                expected_gen=e.gens[slot],
                seed=rng.choice([e.seeds[0], rng.getrandbits(32)]),
                slot_floats=floats[:2],
                loss=rng.uniform(0, 2),
                incumbent_loss=1.0,
                evaluator_id=f"s{i}",
            )
            table.commit_swap(job, swap)
    kinds = {ev.kind for ev in table.events(job)}
    assert kinds == {"init", "seeds", "swap", "floats"}, kinds


def test_export_is_strict_json_and_import_round_trips(table: SeedTable, job_id: str) -> None:
    _busy_job(table, job_id)
    doc = table.export(job_id)
    text = json.dumps(doc, allow_nan=False)  # no NaN/Infinity: an unmeasured loss is null
    assert doc["format"] == "germinator-table/2" and doc["spec"] == json.loads(SPEC)
    assert all(len(row["gens"]) == len(row["seeds"]) == RANK + 4 for row in doc["layers"])
    assert any(any(row["gens"]) for row in doc["layers"])
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
        seeds = [1, 2, 3, 4, 1, 1, 1, 1]
        assert table.commit_seeds(copy_id, 1, v, seeds, [0] * F, -1.0) is CommitOutcome.ACCEPTED
        kinds = [ev.kind for ev in table.events(copy_id)]
        assert kinds == ["import"] * 3 + ["seeds"]
        assert table.rebuild_from_stream(copy_id) == table.snapshot(copy_id)
    finally:
        table.delete_job(copy_id)


def test_unmeasured_rows_export_as_null(table: SeedTable, job_id: str) -> None:
    table.create_job(job_id, SPEC, initial_rows(2))
    assert [row["loss"] for row in table.export(job_id)["layers"]] == [None, None]


def test_import_refuses_an_existing_job_unless_replace(table: SeedTable, job_id: str) -> None:
    _busy_job(table, job_id, 10)
    doc = table.export(job_id)
    with pytest.raises(TableError, match="already exists"):
        table.import_(job_id, doc)
    table.commit_seeds(job_id, 0, table.entry(job_id, 0).version, [2, 3, 4, 5, 2, 2, 2, 2], [0] * F, -5.0)
    info = table.import_(job_id, doc, replace=True, state="PENDING")
    assert info.state is JobState.PENDING and table.export(job_id) == {**doc, "state": "PENDING"}
    assert [ev.kind for ev in table.events(job_id)] == ["import"] * 3  # a replaced job starts a new log


def _repeat_c0(doc: dict) -> None:
    seeds = doc["layers"][0]["seeds"]
    seeds[1] = seeds[0]


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
        m(("format",), KeyError),
        m(("spec",), "not an object"),
        m(("seed_bits",), 64),
        m(("state",), "DONE"),
        m(("epoch",), 999),
        m(("desired_workers",), -1),
        m(("extra",), 1),
        m(("layers",), []),
        m(("layers", 1, "layer"), 0),
        m(("layers", 0, "seeds"), [1, 2, 3]),
        m(("layers", 0, "seeds"), list(range(9))),  # 9 seeds, 8 gens
        (("layers", 0, "seeds", 1), "c0", _repeat_c0),  # c1 repeats c0
        m(("layers", 0, "gens"), [0] * 7),
        m(("layers", 0, "gens", 2), -1),
        m(("layers", 0, "gens", 2), 10**6),  # more than the row's version
        m(("layers", 0, "gens"), "00000000"),
        m(("layers", 0, "gens"), KeyError),
        m(("layers", 0, "floats"), [0.5] * (F - 1)),  # does not fit rank 4
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
    seeds = [1, 2, 3, 4, 1, 1, 1, 1]
    assert table.commit_seeds(job_id, 0, v, seeds, [0] * F, -1.0) is CommitOutcome.ACCEPTED


def _forge(table: SeedTable, job: str, kind: str, **fields) -> dict:
    """A well-formed ``kind`` entry of layer 0 at the next version and epoch, ``fields`` replaced."""
    snap = table.snapshot(job)
    e = snap.layers[0]
    base = {
        "format": "2",
        "kind": kind,
        "layer": "0",
        "version": str(e.version + 1),
        "epoch": str(snap.epoch + 1),
    }
    base |= {"loss": "0.1", "writer": "forger"}
    if kind == "swap":
        base |= {"slot": "1", "gen": str(e.gens[1] + 1), "seed": struct.pack("<I", 4242)}
        base["floats"] = struct.pack("<2f", 0.5, 0.25)
    elif kind == "floats":
        base |= {"floats": struct.pack(f"<{F}f", *e.floats), "kept": "2"}
    else:
        seeds = (4242,) + e.seeds[1:]
        gens = (e.gens[0] + 1,) + e.gens[1:]
        base |= {"seeds": struct.pack("<8I", *seeds), "gens": struct.pack("<8I", *gens)}
        base["floats"] = struct.pack(f"<{F}f", *e.floats)
    return base | fields


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("swap", {"gen": "99"}),  # the slot's generation does not go up by one
        ("swap", {"slot": "4"}),  # not a component slot
        ("swap", {"floats": struct.pack("<3f", 1, 2, 3)}),  # a slot has 2 floats here
        ("floats", {"floats": struct.pack(f"<{F}f", *[7.0] * F)}),  # changes slot 2, which it says it kept
        ("floats", {"kept": "9"}),
        ("seeds", {"gens": struct.pack("<8I", *[0] * 8)}),  # a changed seed without its generation bump
        ("seeds", {"version": "99"}),
        ("swap", {"epoch": "99"}),
    ],
    ids=lambda x: str(x)[:30],
)
def test_rebuild_detects_a_stream_that_is_not_a_history(
    table: SeedTable, job_id: str, redis_server, kind: str, fields: dict
) -> None:
    _busy_job(table, job_id, 10)
    raw = redis_server.client()
    key = f"germ:{{{job_id}}}:events"
    version = table.entry(job_id, 0).version
    raw.xadd(key, _forge(table, job_id, kind))  # the control: it follows, so a repair applies it
    assert table.rebuild_from_stream(job_id, repair=True).layers[0].version == version + 1
    before = dump_job(raw, job_id)
    raw.xadd(key, _forge(table, job_id, kind, **fields))
    with pytest.raises(TableError, match="does not follow the history"):
        table.rebuild_from_stream(job_id, repair=True)
    raw.xadd(key, {"format": "2", "kind": "pickle", "layer": "0"})
    with pytest.raises(TableError, match="'kind'"):
        table.events(job_id)
    assert {k: v for k, v in dump_job(raw, job_id).items() if k != key.encode()} == {
        k: v for k, v in before.items() if k != key.encode()
    }


def test_an_export_of_the_old_format_is_refused_naming_both_formats(table: SeedTable, job_id: str) -> None:
    _busy_job(table, job_id, 10)
    doc = table.export(job_id)
    old = {**doc, "format": "germinator-table/1"}
    for row in old["layers"]:  # what format 1 exported: 8 seeds, no gens
        del row["gens"]
    with pytest.raises(
        SpecError, match="export.format: found 'germinator-table/1', expected 'germinator-table/2'"
    ):
        table.import_(job_id + "-old", old)

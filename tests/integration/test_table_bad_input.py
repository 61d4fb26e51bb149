"""Bad input never gets in and never goes unnoticed: a bad argument is a SpecError, junk that someone else
wrote into the namespace is a TableError naming the key and the value, and either way nothing changes."""

from __future__ import annotations

import math

import pytest
from table_helpers import SPEC, dump_job, initial_rows

from germinator_dist.errors import JobNotFound, SpecError, TableError
from germinator_dist.records import CommitOutcome, LayerEntry, SeedCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
ESCAPING_IDS = [
    "a:b",
    "a}b",
    "{a}",
    "a{",
    "a*",
    "a?",
    "a[1]",
    "",
    "-a",
    ".a",
    "a b",
    "a\nb",
    "../x",
    "é",
    "x" * 65,
    "a\\b",
    5,
    None,
]


@pytest.fixture
def job(table: SeedTable, job_id: str) -> str:
    table.create_job(job_id, SPEC, initial_rows(3, 4), seed_bits=16)
    assert table.commit_seeds(job_id, 0, 0, SEEDS, [1, 2, 3, 4], 0.5, "w") is CommitOutcome.ACCEPTED
    return job_id


@pytest.mark.parametrize("bad_id", ESCAPING_IDS, ids=repr)
def test_job_ids_that_could_leave_the_namespace_are_refused(table: SeedTable, redis_server, bad_id) -> None:
    raw = redis_server.client()
    before = sorted(raw.scan_iter(count=1000))
    calls = [
        lambda: table.create_job(bad_id, SPEC, initial_rows(1, 1)),
        lambda: table.snapshot(bad_id),
        lambda: table.commit_seeds(bad_id, 0, 0, SEEDS, [1.0], 1.0),
        lambda: table.import_(bad_id, {}),
        lambda: table.delete_job(bad_id),
        lambda: table.heartbeat(bad_id, "worker", "w"),
    ]
    for call in calls:
        with pytest.raises(SpecError, match="job id"):
            call()
    assert sorted(raw.scan_iter(count=1000)) == before


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"seeds": [1, 2, 3, 4, 5, 6, 7, -1]}, "bias"),
        ({"seeds": [2**63] + SEEDS[1:]}, "a1"),
        ({"seeds": [2**16] + SEEDS[1:]}, "needs 17 bits.*seed_bits=16"),  # wider than the job's seed_bits
        ({"seeds": SEEDS[:7]}, "expected 8"),
        ({"seeds": [1.5] + SEEDS[1:]}, "a1"),
        ({"seeds": [True] + SEEDS[1:]}, "a1"),
        ({"loss": math.nan}, "loss"),
        ({"loss": math.inf}, "loss"),
        ({"loss": -math.inf}, "loss"),
        ({"loss": "0.1"}, "loss"),
        ({"floats": [1, 2, 3, math.nan]}, "floats"),
        ({"floats": [1, 2, 3, math.inf]}, "floats"),
        ({"floats": [1, 2, 3, 1e39]}, "float32"),
        ({"floats": [1, 2, 3]}, "floats: got 3 values, layer 1 has 4"),
        ({"floats": "1234"}, "floats"),
        ({"layer": 3}, "out of range"),
        ({"layer": -1}, "layer"),
        ({"expected_version": -1}, "expected_version"),
        ({"evaluator_id": "a\x00b"}, "evaluator_id"),
    ],
    ids=lambda x: str(x)[:40] if isinstance(x, dict) else "",
)
def test_bad_commit_arguments(table: SeedTable, job: str, redis_server, kwargs: dict, match: str) -> None:
    raw = redis_server.client()
    before = dump_job(raw, job)
    args = {
        "layer": 1,
        "expected_version": 0,
        "seeds": SEEDS,
        "floats": [1, 2, 3, 4],
        "loss": 0.1,
        "evaluator_id": "w",
    } | kwargs
    with pytest.raises(SpecError, match=match):
        table.commit_seeds(job, **args)
    assert dump_job(raw, job) == before


def test_bad_rows_at_creation(table: SeedTable, job_id: str, redis_server) -> None:
    raw = redis_server.client()
    nan_row = [LayerEntry(layer=0, seeds=SEEDS, floats=(1.0,), loss=math.nan)]
    with pytest.raises(SpecError, match=r"layers\[0\].loss"):
        table.create_job(job_id, SPEC, nan_row)
    with pytest.raises(SpecError, match=r"layers\[0\].seeds.a1"):
        table.create_job(
            job_id, SPEC, [LayerEntry(layer=0, seeds=[2**8] + SEEDS[1:], floats=())], seed_bits=8
        )
    with pytest.raises(SpecError, match=r"layers\[1\]"):
        table.create_job(job_id, SPEC, [initial_rows(2, 1)[0], initial_rows(2, 1)[0]])
    with pytest.raises(SpecError, match="spec_json"):
        table.create_job(job_id, "[1, 2]", initial_rows(1, 1))
    with pytest.raises(SpecError, match="seed_bits"):
        table.create_job(job_id, SPEC, initial_rows(1, 1), seed_bits=64)
    assert dump_job(raw, job_id) == {"registered": 0}


def test_a_bad_commit_in_a_batch_stops_the_whole_batch_before_sending(table: SeedTable, job: str) -> None:
    before = table.snapshot(job)
    good = SeedCommit(layer=1, expected_version=0, seeds=SEEDS, floats=(1, 2, 3, 4), loss=0.1)
    bad = SeedCommit(layer=1, expected_version=0, seeds=SEEDS, floats=(1, 2, 3, 4), loss=math.nan)
    with pytest.raises(SpecError, match=r"commits\[1\].loss"):
        table.commit_seeds_many(job, [good, bad])
    assert table.snapshot(job) == before


# --- junk that someone else wrote into the namespace ------------------------------------------------


def _key(job: str, suffix: str) -> str:
    return f"germ:{{{job}}}:{suffix}"


JUNK_ROWS = [
    ("version", "abc"),
    ("version", "-1"),
    ("loss", "NaN"),
    ("loss", "0x10"),
    ("loss", "inf!"),
    ("seeds", "[1,2]"),
    ("seeds", "gASVBQAAAAAAAACMAWGULg=="),  # a pickle would simply be junk
    ("floats", "abc"),
]


@pytest.mark.parametrize("field,junk", JUNK_ROWS)
def test_malformed_row_is_reported_with_key_and_value(
    table: SeedTable, job: str, redis_server, field: str, junk: str
) -> None:
    raw = redis_server.client()
    raw.hset(_key(job, "layer:1"), field, junk)
    before = dump_job(raw, job)
    for call in (
        lambda: table.commit_seeds(job, 1, 0, SEEDS, [1, 2, 3, 4], 0.1),
        lambda: table.publish_floats(job, 1, 0, [1, 2, 3, 4], 0.1),
        lambda: table.snapshot(job),
        lambda: table.entry(job, 1),
        lambda: table.export(job),
    ):
        with pytest.raises(TableError) as err:
            call()
        said = str(err.value)
        assert _key(job, "layer:1") in said and field in said and junk[:8] in said
    assert dump_job(raw, job) == before
    assert table.commit_seeds(job, 2, 0, SEEDS, [1, 2, 3, 4], 0.1) is CommitOutcome.ACCEPTED  # others work


@pytest.mark.parametrize("suffix,expected", [("layer:1", "hash"), ("events", "stream"), ("meta", "hash")])
def test_wrong_typed_key(table: SeedTable, job: str, redis_server, suffix: str, expected: str) -> None:
    raw = redis_server.client()
    raw.delete(_key(job, suffix))
    raw.set(_key(job, suffix), "junk")
    before = dump_job(raw, job)
    with pytest.raises(TableError, match=f"{_key(job, suffix)} holds a string, expected a {expected}"):
        table.commit_seeds(job, 1, 0, SEEDS, [1, 2, 3, 4], 0.1)
    assert dump_job(raw, job) == before  # in particular layer 1 was not written before the stream failed


@pytest.mark.parametrize(
    "field,junk",
    [
        ("state", "DONE"),
        ("n_layers", "three"),
        ("epoch", "1.5"),
        ("seed_bits", "99"),
        ("format", "0"),
        ("spec", "{not json"),
    ],
)
def test_malformed_meta(table: SeedTable, job: str, redis_server, field: str, junk: str) -> None:
    raw = redis_server.client()
    raw.hset(_key(job, "meta"), field, junk)
    before = dump_job(raw, job)
    with pytest.raises(TableError, match=f"{_key(job, 'meta')}.*{field}"):
        table.export(job)
    if field != "spec":
        with pytest.raises(TableError, match=f"{_key(job, 'meta')}.*{field}"):
            table.commit_seeds(job, 1, 0, SEEDS, [1, 2, 3, 4], 0.1)
        with pytest.raises(TableError, match=field):
            table.set_state(job, "RUNNING")
    assert dump_job(raw, job) == before


def test_junk_heartbeat_progress_and_stream(table: SeedTable, job: str, redis_server) -> None:
    raw = redis_server.client()
    raw.zadd(_key(job, "hb:worker"), {"w1": 9e15})
    raw.hset(_key(job, "hbdata:worker"), "w1", "[1, 2]")
    with pytest.raises(TableError, match=r"hbdata:worker.*w1"):
        table.live(job, "worker")
    raw.hset(_key(job, "progress"), "evaluations", "many")
    before = dump_job(raw, job)
    with pytest.raises(TableError, match=r"progress.*evaluations.*many"):
        table.update_progress(job, evaluations=1, accepted=1)
    with pytest.raises(TableError, match=r"progress.*evaluations"):
        table.progress(job)
    assert dump_job(raw, job) == before
    entry = raw.xadd(
        _key(job, "events"),
        {
            "kind": "seeds",
            "layer": "0",
            "version": "2",
            "epoch": "2",
            "seeds": "[1,2]",
            "floats": "",
            "loss": "1",
            "writer": "",
            "time": "1",
        },
    )
    with pytest.raises(TableError, match=f"events entry {entry.decode()}.*seeds"):
        table.rebuild_from_stream(job)


def test_junk_in_the_registry(redis_factory) -> None:
    server = redis_factory()
    with SeedTable(server.url) as table:
        table.create_job("good", SPEC, initial_rows(1, 1))
        raw = server.client()
        raw.sadd("germ:jobs", "bad}id")
        with pytest.raises(TableError, match="germ:jobs holds an invalid job id"):
            table.list_jobs()
        raw.srem("germ:jobs", "bad}id")
        raw.sadd("germ:jobs", "ghost")
        with pytest.raises(TableError, match="ghost"):
            table.list_jobs()
        assert table.delete_job("ghost") is False  # cleans up the registry entry
        assert [i.job for i in table.list_jobs()] == ["good"]
        with pytest.raises(JobNotFound):
            table.get_spec("ghost")

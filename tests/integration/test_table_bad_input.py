"""Bad input never gets in and never goes unnoticed: a bad argument is a SpecError, junk that someone else
wrote into the namespace is a TableError naming the key and the value, and either way nothing changes."""

from __future__ import annotations

import math
import re
import struct

import pytest
from table_helpers import SPEC, dump_job, initial_rows

from germinator_dist.errors import JobNotFound, SpecError, TableError
from germinator_dist.records import CommitOutcome, LayerEntry, SeedCommit, SwapCommit
from germinator_dist.table import SeedTable

pytestmark = pytest.mark.integration

SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]  # rank 4
FL = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # alpha, beta, g (4)
SWAP = SwapCommit(layer=1, slot=0, expected_gen=0, seed=9, slot_floats=(0.5,), loss=0.1, incumbent_loss=1.0)
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
    table.create_job(job_id, SPEC, initial_rows(3), seed_bits=16)
    assert table.commit_seeds(job_id, 0, 0, SEEDS, FL, 0.5, "w") is CommitOutcome.ACCEPTED
    return job_id


@pytest.mark.parametrize("bad_id", ESCAPING_IDS, ids=repr)
def test_job_ids_that_could_leave_the_namespace_are_refused(table: SeedTable, redis_server, bad_id) -> None:
    raw = redis_server.client()
    before = sorted(raw.scan_iter(count=1000))
    calls = [
        lambda: table.create_job(bad_id, SPEC, initial_rows(1)),
        lambda: table.snapshot(bad_id),
        lambda: table.commit_seeds(bad_id, 0, 0, SEEDS, FL, 1.0),
        lambda: table.commit_swap(bad_id, SWAP),
        lambda: table.publish_floats(bad_id, 0, FL, 1.0, [0] * 8),
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
        ({"seeds": [1, 2, 3, 4, 5, 6, 7, -1]}, "seeds.bias"),
        ({"seeds": [2**63] + SEEDS[1:]}, "seeds.c0"),
        ({"seeds": [2**16] + SEEDS[1:]}, "needs 17 bits.*seed_bits=16"),  # wider than the job's seed_bits
        ({"seeds": SEEDS[:4]}, r"rank \+ 4 seeds .*got 4"),
        ({"seeds": SEEDS + [9]}, r"seeds: got 9 seeds, layer 1 has 8 \(rank 4 \+ 4\)"),
        ({"seeds": [1.5] + SEEDS[1:]}, "seeds.c0"),
        ({"seeds": [True] + SEEDS[1:]}, "seeds.c0"),
        ({"seeds": [1, 2, 1] + SEEDS[3:]}, "seeds.c2: 1 repeats component c0's seed"),
        ({"seeds": "12345678"}, "seeds"),
        ({"loss": math.nan}, "loss"),
        ({"loss": math.inf}, "loss"),
        ({"loss": -math.inf}, "loss"),
        ({"loss": "0.1"}, "loss"),
        ({"floats": FL[:5] + [math.nan]}, "floats"),
        ({"floats": FL[:5] + [math.inf]}, "floats"),
        ({"floats": FL[:5] + [1e39]}, "float32"),
        ({"floats": FL[:5]}, "floats: got 5 values, layer 1 has 6"),
        ({"floats": "123456"}, "floats"),
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
        "floats": FL,
        "loss": 0.1,
        "evaluator_id": "w",
    } | kwargs
    with pytest.raises(SpecError, match=match):
        table.commit_seeds(job, **args)
    assert dump_job(raw, job) == before


def test_bad_rows_at_creation(table: SeedTable, job_id: str, redis_server) -> None:
    raw = redis_server.client()
    nan_row = [LayerEntry(layer=0, seeds=SEEDS, floats=FL, loss=math.nan)]
    with pytest.raises(SpecError, match=r"layers\[0\].loss"):
        table.create_job(job_id, SPEC, nan_row)
    with pytest.raises(SpecError, match=r"layers\[0\].seeds.c0"):
        table.create_job(
            job_id, SPEC, [LayerEntry(layer=0, seeds=[2**8] + SEEDS[1:], floats=FL)], seed_bits=8
        )
    with pytest.raises(SpecError, match=r"layers\[0\].seeds.c3: 1 repeats"):
        table.create_job(job_id, SPEC, [LayerEntry(layer=0, seeds=[1, 2, 3, 1, 5, 5, 5, 5], floats=FL)])
    for n in (5, 7, 4):  # rank 4: 2 + 4 * (1 + experts) floats
        with pytest.raises(SpecError, match=rf"layers\[0\].floats: {n} values do not fit rank 4"):
            table.create_job(job_id, SPEC, [LayerEntry(layer=0, seeds=SEEDS, floats=(1.0,) * n)])
    with pytest.raises(SpecError, match=r"layers\[1\]"):
        table.create_job(job_id, SPEC, [initial_rows(2)[0], initial_rows(2)[0]])
    with pytest.raises(SpecError, match="spec_json"):
        table.create_job(job_id, "[1, 2]", initial_rows(1))
    with pytest.raises(SpecError, match="seed_bits"):
        table.create_job(job_id, SPEC, initial_rows(1), seed_bits=64)
    assert dump_job(raw, job_id) == {"registered": 0}


def test_a_bad_commit_in_a_batch_stops_the_whole_batch_before_sending(table: SeedTable, job: str) -> None:
    before = table.snapshot(job)
    good = SeedCommit(layer=1, expected_version=0, seeds=SEEDS, floats=FL, loss=0.1)
    bad = SeedCommit(layer=1, expected_version=0, seeds=SEEDS, floats=FL, loss=math.nan)
    with pytest.raises(SpecError, match=r"commits\[1\].loss"):
        table.commit_seeds_many(job, [good, bad])
    assert table.snapshot(job) == before


# --- junk that someone else wrote into the namespace ------------------------------------------------


def _key(job: str, suffix: str) -> str:
    return f"germ:{{{job}}}:{suffix}"


def _writes(table: SeedTable, job: str, layer: int):
    """Every call that writes a row of ``layer`` (all are refused by junk in that row)."""
    swap = SwapCommit(**{**SWAP.model_dump(), "layer": layer})
    return (
        lambda: table.commit_seeds(job, layer, 0, SEEDS, FL, 0.1),
        lambda: table.commit_seeds_many(
            job, [SeedCommit(layer=layer, expected_version=0, seeds=SEEDS, floats=FL, loss=0.1)]
        ),
        lambda: table.commit_swap(job, swap),
        lambda: table.commit_swaps_many(job, [swap]),
        lambda: table.publish_floats(job, layer, FL, 0.1, [0] * 8),
    )


JUNK_ROWS = [
    ("version", b"abc"),
    ("version", b"-1"),
    ("loss", b"NaN"),
    ("loss", b"0x10"),
    ("loss", b"inf!"),
    ("seeds", b"[1,2]"),
    ("seeds", b"[1,2,3,4,5,6,7,8]"),  # JSON, as table format 1 stored them
    ("seeds", b"gASVBQAAAAAAAACMAWGULg=="),  # a pickle would simply be junk
    ("seeds", b"\x01\x00" * 9),  # one seed more than gens has generations
    ("gens", b"abc"),
    ("gens", b"\x00" * 16),  # 4 generations: rank 0
    ("gens", b""),
    ("floats", b"abc"),
    ("floats", b"\x00\x00\x80?" * 5),  # 5 floats do not fit rank 4
]
READ_ONLY_JUNK = [
    ("seeds", struct.pack("<8H", 1, 2, 1, 4, 5, 6, 7, 8)),  # a component seed twice
    ("floats", struct.pack("<6f", 1, 2, 3, 4, 5, math.nan)),
]


@pytest.mark.parametrize("field,junk", JUNK_ROWS + READ_ONLY_JUNK)
def test_malformed_row_is_reported_with_key_field_and_value(
    table: SeedTable, job: str, redis_server, field: str, junk: bytes
) -> None:
    raw = redis_server.client()
    raw.hset(_key(job, "layer:1"), field, junk)
    before = dump_job(raw, job)
    reads = (lambda: table.snapshot(job), lambda: table.entry(job, 1), lambda: table.export(job))
    writes = _writes(table, job, 1) if (field, junk) in JUNK_ROWS else ()
    for call in (*writes, *reads):
        with pytest.raises(TableError) as err:
            call()
        said = str(err.value)
        assert _key(job, "layer:1") in said and field in said and repr(junk)[2:8] in said, said
    assert dump_job(raw, job) == before
    assert table.commit_seeds(job, 2, 0, SEEDS, FL, 0.1) is CommitOutcome.ACCEPTED  # others work


@pytest.mark.parametrize("found", [None, b"1", b"3"])
def test_a_row_of_another_table_format_is_refused_naming_both_formats(
    table: SeedTable, job: str, redis_server, found: bytes | None
) -> None:
    raw = redis_server.client()
    key = _key(job, "layer:1")
    if found is None:  # what table format 1 wrote: JSON seeds, no gens, no format field
        raw.hdel(key, "format", "gens")
        raw.hset(key, "seeds", "[1,2,3,4,5,6,7,8]")
    else:
        raw.hset(key, "format", found)
    before = dump_job(raw, job)
    name = "1" if found is None else found.decode()
    for call in (*_writes(table, job, 1), lambda: table.snapshot(job), lambda: table.entry(job, 1)):
        with pytest.raises(
            TableError,
            match=re.escape(key)
            + f" field '?format'?: .*found table format '?{name}'?.*expected table format 2",
        ):
            call()
    assert dump_job(raw, job) == before


def test_a_job_of_the_old_format_is_refused_naming_both_formats(
    table: SeedTable, job: str, redis_server
) -> None:
    raw = redis_server.client()
    raw.hset(_key(job, "meta"), "format", "1")
    before = dump_job(raw, job)
    for call in (
        *_writes(table, job, 1),
        lambda: table.snapshot(job),
        lambda: table.export(job),
        lambda: table.events(job),
    ):
        with pytest.raises(
            TableError, match=r"meta field '?format'?: .*found table format '?1'?, expected table format 2"
        ):
            call()
    assert dump_job(raw, job) == before


@pytest.mark.parametrize("suffix,expected", [("layer:1", "hash"), ("events", "stream"), ("meta", "hash")])
def test_wrong_typed_key(table: SeedTable, job: str, redis_server, suffix: str, expected: str) -> None:
    raw = redis_server.client()
    raw.delete(_key(job, suffix))
    raw.set(_key(job, suffix), "junk")
    before = dump_job(raw, job)
    for call in _writes(table, job, 1):
        with pytest.raises(TableError, match=f"{_key(job, suffix)} holds a string, expected a {expected}"):
            call()
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
            table.commit_seeds(job, 1, 0, SEEDS, FL, 0.1)
        with pytest.raises(TableError, match=field):
            table.set_state(job, "RUNNING")
    assert dump_job(raw, job) == before


def _entry(**fields) -> dict:
    """A well-formed ``seeds`` stream entry of layer 0 (version/epoch 2) with ``fields`` replaced."""
    base = {
        "format": "2",
        "kind": "seeds",
        "layer": "0",
        "version": "2",
        "epoch": "2",
        "seeds": struct.pack("<8H", *SEEDS),
        "gens": struct.pack("<8I", *[1] * 8),
        "floats": struct.pack("<6f", *FL),
        "loss": "0.25",
        "writer": "w",
    }
    return {k: v for k, v in (base | fields).items() if v is not None}


@pytest.mark.parametrize(
    "fields,match",
    [
        (
            {"format": None},
            r"'format': None \(found table format 1 \(it has no format field\), expected table format 2",
        ),
        (
            {"format": "1", "seeds": "[1,2,3,4,5,6,7,8]", "gens": None},
            r"'format': b'1' \(found table format '1', expected table format 2",
        ),
        ({"seeds": "[1,2]"}, "'seeds': b'\\[1,2\\]'"),
        ({"seeds": struct.pack("<8H", 1, 1, *SEEDS[2:])}, "'seeds'.*component c1 repeats"),
        ({"gens": b"\x01\x00\x00"}, r"'gens': b'\\x01\\x00\\x00'"),
        ({"gens": None}, r"'gens': None"),
        ({"floats": b"\x00" * 20}, "'floats'.*5 values do not fit rank 4"),
        ({"kind": "swap", "slot": "x", "gen": "1", "seed": b"\x01\x00"}, r"'slot': b'x'"),
        ({"kind": "swap", "slot": "1", "gen": "1", "seed": b"\x01"}, r"'seed': b'\\x01'"),
        ({"kind": "floats", "kept": "1,a"}, r"'kept': b'1,a'"),
        ({"kind": "pickle"}, "'kind': 'pickle'"),
    ],
    ids=lambda x: str(x)[:40] if isinstance(x, dict) else "",
)
def test_junk_in_the_stream_names_entry_field_and_value(
    table: SeedTable, job: str, redis_server, fields: dict, match: str
) -> None:
    entry = redis_server.client().xadd(_key(job, "events"), _entry(**fields)).decode()
    for call in (lambda: table.events(job), lambda: table.rebuild_from_stream(job)):
        with pytest.raises(
            TableError, match=re.escape(f"{_key(job, 'events')} entry {entry} field ") + match
        ):
            call()


def test_junk_heartbeat_and_progress(table: SeedTable, job: str, redis_server) -> None:
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


def test_junk_in_the_registry(redis_factory) -> None:
    server = redis_factory()
    with SeedTable(server.url) as table:
        table.create_job("good", SPEC, initial_rows(1))
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

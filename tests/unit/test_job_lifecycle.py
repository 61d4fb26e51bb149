"""One job's lifecycle without Ray or Redis (search/job_setup.py, against tests/unit/memory_table.py):
the client registers the spec and loads no data; the runner, holding the lease, loads the data once,
measures the initial rows and writes them with the resolved spec; a resumed job keeps its rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from germinator_dist.config import parse_job_spec
from germinator_dist.core import data as data_module
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import JobState
from germinator_dist.search import job_errors, job_setup
from germinator_dist.search.evaluator import LayerEvaluator
from tests.unit.memory_table import MemoryTable


def arrays_spec(path, **extra) -> dict:
    return {
        "job": "life",
        "mode": "search",
        "data": {"kind": "arrays", "path": str(path)},
        "model": {"hidden": [16], "rank": 4, "seed_bits": 16},
        "fitness": {"batch_size": 64},
        **extra,
    }


def write_npz(path, n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, X=rng.normal(size=(n, d)).astype(np.float32), y=rng.integers(0, classes, n))
    return path


@pytest.fixture
def loads(monkeypatch):
    """Counts every data load (through the one loader the lifecycle uses)."""
    calls = []
    real = data_module.load_dataset

    def counting(spec):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(job_setup, "load_dataset", counting)
    return calls


def test_register_loads_no_data_and_writes_no_rows(tmp_path, loads):
    spec = parse_job_spec(arrays_spec(tmp_path / "only-on-the-cluster.npz"))  # no such file here
    table = MemoryTable()
    registered = job_setup.register_job(table, spec, lease=("runner-1", 60.0))
    assert loads == []
    info = table.job_info(registered.job)
    assert (info.state, info.n_layers) == (JobState.PENDING, 0)
    stored = parse_job_spec(json.loads(table.get_spec("life")))
    assert stored.model.input_dim is None  # the data's dimensions are the runner's to fill in
    assert table.leases["life"] == "runner-1"


def test_prepare_loads_once_measures_and_writes_rows_with_the_resolved_spec(tmp_path, loads):
    path = write_npz(tmp_path / "d.npz")
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(path)), lease=("runner-1", 60.0))
    spec, dataset = job_setup.prepare_job(table, "life", "runner-1")
    assert len(loads) == 1
    assert (spec.model.input_dim, spec.model.num_classes) == (6, 3)
    assert parse_job_spec(json.loads(table.get_spec("life"))) == spec
    rows = table.snapshot("life").layers
    assert len(rows) == 2 and all(r.writer == "init" and r.version == 0 for r in rows)
    # the rows' loss is the initial model's loss on the fitness batch
    model = build_model(spec.model)
    ev = LayerEvaluator(spec.model, job_setup.fitness_batch(spec, dataset))
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(0, 0))
    assert rows[0].seeds == model.get_seeds()[0]
    assert math.isclose(rows[0].loss, ev.full_loss(), rel_tol=1e-6)
    assert table.events["life"] == [("init", 0), ("init", 1)]


def test_a_resumed_job_keeps_its_rows(tmp_path, loads):
    path = write_npz(tmp_path / "d.npz")
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(path)), lease=("runner-1", 60.0))
    job_setup.prepare_job(table, "life", "runner-1")
    table.commit_seeds(
        "life", 0, 0, table.snapshot("life").layers[0].seeds, table.snapshot("life").layers[0].floats, 0.1
    )
    before = table.snapshot("life").layers
    table.release_lease("life", "runner-1")
    table.claim_lease("life", "runner-2")
    spec, _ = job_setup.prepare_job(table, "life", "runner-2")  # the resume's runner
    assert table.snapshot("life").layers == before
    assert table.calls["init_rows"] == 1 and len(loads) == 2  # one load per runner process


def test_data_that_changed_its_dimensions_is_refused_on_resume(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(path)), lease=("runner-1", 60.0))
    job_setup.prepare_job(table, "life", "runner-1")
    write_npz(path, d=7)  # the file was replaced meanwhile
    with pytest.raises(SpecError, match=r"model.input_dim: spec says 6 but the data has 7"):
        job_setup.prepare_job(table, "life", "runner-1")


def test_bad_data_and_bad_layers_fail_at_prepare_and_write_no_rows(tmp_path):
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(tmp_path / "missing.npz")), lease=("r", 60.0))
    with pytest.raises(SpecError, match="data.path"):
        job_setup.prepare_job(table, "life", "r")
    assert table.job_info("life").n_layers == 0
    path = write_npz(tmp_path / "d.npz")
    bad = parse_job_spec({**arrays_spec(path), "job": "layers", "search": {"layers": [5]}})
    job_setup.register_job(table, bad, lease=("r", 60.0))
    with pytest.raises(SpecError, match=r"search.layers: the model has layers 0..1, there is no layer 5"):
        job_setup.prepare_job(table, "layers", "r")
    assert table.job_info("layers").n_layers == 0


def test_only_the_lease_holder_writes_the_initial_rows(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(path)), lease=("runner-1", 60.0))
    with pytest.raises(TableError, match="lease"):
        job_setup.prepare_job(table, "life", "someone-else")
    assert table.job_info("life").n_layers == 0


def test_create_job_is_register_then_prepare_and_gives_its_lease_back(tmp_path, loads):
    path = write_npz(tmp_path / "d.npz")
    table = MemoryTable()
    spec, _ = job_setup.create_job(table, parse_job_spec(arrays_spec(path)))
    assert len(loads) == 1 and table.job_info("life").n_layers == 2
    assert "life" not in table.leases and spec.model.input_dim == 6


def test_create_job_leaves_nothing_when_the_data_fails(tmp_path):
    table = MemoryTable()
    with pytest.raises(SpecError, match="data.path"):
        job_setup.create_job(table, parse_job_spec(arrays_spec(tmp_path / "missing.npz")))
    assert "life" not in table.rows and "life" not in table.leases
    write_npz(tmp_path / "missing.npz")
    job_setup.create_job(table, parse_job_spec(arrays_spec(tmp_path / "missing.npz")))  # the id is free


def test_the_runner_error_is_kept_as_one_line(tmp_path):
    table = MemoryTable()
    job_setup.register_job(table, parse_job_spec(arrays_spec(tmp_path / "x.npz")))
    job_errors.record_error(table, "life", "data.path: no such file\nsecond line", "r", "SpecError")
    assert job_errors.recorded_error(table, "life") == ("data.path: no such file", "SpecError")
    job_errors.clear_error(table, "life")  # a resumed runner clears it
    assert job_errors.recorded_error(table, "life") is None

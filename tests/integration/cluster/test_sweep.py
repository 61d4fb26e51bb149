"""`germinator-dist sweep`: Ray Tune over job-spec fields, each trial a seed-search job of its own."""

from __future__ import annotations

import pytest
import yaml

from germinator_dist.distributed.sweep import load_sweep, run_sweep
from germinator_dist.errors import SpecError
from germinator_dist.table import SeedTable


def test_tiny_sweep_on_real_ray(ray_cluster, redis_server, tmp_path):
    base = {
        "mode": "search",
        "model": {"hidden": [32], "rank": 4, "seed_bits": 8},
        "fitness": {"batch_size": 256},
        "search": {"budget_evals": 160, "candidates_per_call": 8, "swap": None},
        "workers": {"count": 1},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "base": "base.yaml",
        "name": "tiny",
        "space": {"search.population": {"choice": [4, 8]}, "model.rank": {"choice": [4, 8]}},
        "num_samples": 2,
        "max_concurrent": 2,
        "report_every_s": 1.0,
        "asha": {"max_t": 60, "grace_period": 2},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = run_sweep(path, redis_server.url, storage=str(tmp_path / "tune"))
    trials = result["trials"]
    assert len(trials) == 2
    with SeedTable(redis_server.url) as table:
        jobs = {j.job for j in table.list_jobs()}
        for t in trials:
            assert t["error"] is None and t["best_loss"] is not None
            assert t["job"] in jobs  # each trial had its own table namespace
            # the table's best only improves after the last report
            assert min(e.loss for e in table.snapshot(t["job"]).layers) <= t["best_loss"] + 1e-9
        assert len({t["job"] for t in trials}) == 2
        for t in trials:
            table.delete_job(t["job"])
    assert result["best"]["best_loss"] == min(t["best_loss"] for t in trials)
    assert result["best_spec"]["model"]["rank"] == result["best"]["config"]["model.rank"]


def test_bad_sweep_files(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"mode": "search"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "base.yaml", "space": {"model.rank": {"normal": [1, 2]}}}))
    with pytest.raises(SpecError, match="space.model.rank: unknown distribution 'normal'"):
        load_sweep(bad)
    bad.write_text(yaml.safe_dump({"base": "base.yaml", "space": {"model.rank": {"choice": [-1]}}}))
    with pytest.raises(SpecError, match="model.rank"):
        load_sweep(bad)
    bad.write_text(yaml.safe_dump({"base": "base.yaml", "spcae": {}}))
    with pytest.raises(SpecError, match="sweep.spcae"):
        load_sweep(bad)

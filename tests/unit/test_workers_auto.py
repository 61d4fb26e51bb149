"""``workers.count: auto``: the spec field and the placement count (distributed.capacity.placeable, pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from germinator_dist.config import load_job_spec, parse_job_spec
from germinator_dist.distributed.capacity import bundle, placeable
from germinator_dist.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_auto_places_workers_beside_the_trainer():
    cpu1 = bundle(1, 0)
    assert placeable([{"CPU": 2.0}], cpu1, [cpu1]) == 1  # the demo machine: trainer + one worker
    assert placeable([{"CPU": 2.0}], cpu1, []) == 2  # search only: no trainer
    assert placeable([{"CPU": 0.0}, {"CPU": 2.0}], cpu1, [cpu1]) == 1  # a head without CPUs places nothing
    assert placeable([{"CPU": 4.0}, {"CPU": 3.0}], bundle(2, 0), [bundle(2, 0)]) == 2  # 2 + 1 left
    gpu = bundle(1, 1)
    assert placeable([{"CPU": 8.0}], gpu, []) == 0  # no GPU anywhere
    assert placeable([{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0}], gpu, [gpu]) == 1
    assert placeable([{"CPU": 1.0}], bundle(4, 0), [bundle(4, 0)]) == 0  # the trainer fits nowhere either


def test_workers_count_takes_auto_or_a_number():
    spec = parse_job_spec({"workers": {"count": "auto", "min": 2, "max": 8}})
    assert spec.workers.count == "auto" and spec.workers.initial_count == 2
    assert parse_job_spec({"workers": {"count": "auto"}}).workers.initial_count == 1
    assert parse_job_spec({"workers": {"count": 3}}).workers.initial_count == 3
    for bad in ("Auto", -1, True, 1.5):
        with pytest.raises(SpecError, match="workers.count"):
            parse_job_spec({"workers": {"count": bad}})
    with pytest.raises(SpecError, match="workers: min: must be <= max"):
        parse_job_spec({"workers": {"count": "auto", "min": 5, "max": 4}})


def test_the_examples_fit_the_machine_by_default():
    for name in ("digits.yaml", "lm.yaml"):
        assert load_job_spec(ROOT / "examples" / name).workers.count == "auto", name

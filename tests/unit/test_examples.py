"""The example specs a newcomer meets: the demo's default is the checkout's examples/digits.yaml, and each
example passes what `submit` checks (the spec and the search's settings) and `validate` (its data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from germinator_dist.cli.demo import DEFAULT_SPEC
from germinator_dist.config import load_job_spec
from germinator_dist.search.job_setup import check_job_spec, resolve_job

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_the_checkouts_digits_example():
    assert DEFAULT_SPEC == ROOT / "examples" / "digits.yaml"
    assert DEFAULT_SPEC.is_file()


@pytest.mark.parametrize("name", ["digits.yaml", "lm.yaml"])
def test_each_example_spec_passes_submit_and_validate(name):
    spec = check_job_spec(load_job_spec(ROOT / "examples" / name))
    resolved, dataset = resolve_job(spec)
    resolved.model.require_resolved()
    assert len(dataset.x_train) > 0

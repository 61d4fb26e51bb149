"""Splits: the validation split is carved from the training data (fixed, seeded, disjoint from train and
test), the fitness batch comes from train or validation and never from test."""

import pytest
import torch

from germinator_dist.core.data import load_digits_dataset, load_text_dataset
from germinator_dist.errors import SpecError


def rows(x: torch.Tensor) -> set:
    return {tuple(r.tolist()) for r in x}


def test_digits_validation_is_carved_from_training_and_fixed():
    a, b = load_digits_dataset(), load_digits_dataset()
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)  # fixed
    n = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert n == 1797 and len(a.x_test) == 359 and len(a.x_val) == round(0.2 * 1438)
    train, val, test = rows(a.x_train), rows(a.x_val), rows(a.x_test)
    # digits has a few duplicate images; the index sets are disjoint, so the overlap stays tiny
    assert len(val & test) <= 3 and len(val & train) <= 5
    fit = a.fitness_batch(10_000, split="validation")
    assert len(fit) == len(a.x_val) and rows(fit.inputs) == val
    assert rows(a.fitness_batch(64).inputs) <= train
    with pytest.raises(SpecError, match="fitness.split: the test split"):
        a.fitness_batch(64, split="test")


def test_text_validation_precedes_each_files_test_part():
    data = load_text_dataset()
    assert data.x_val is not None and 0.2 < data.x_val.numel() / data.x_test.numel() < 5
    fit = data.fitness_batch(4, 16, split="validation")
    assert fit.inputs.shape == (4, 16)
    v = list(data.test_batches(8, 16, limit=3, split="validation"))
    assert sum(len(b) for b in v) == 3

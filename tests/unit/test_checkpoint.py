"""The tiny checkpoint: JSON, bit-identical round trip, clear errors, nothing half-loaded."""

import json

import pytest
import torch

from germinator_dist.checkpoint import checkpoint_dict, load_checkpoint, save_checkpoint
from germinator_dist.errors import CheckpointError
from germinator_dist.model import build_model
from germinator_dist.spec import ModelSpec

SPEC = ModelSpec(input_dim=64, hidden=(256, 256), num_classes=10, rank=16)


def trained_model():
    m = build_model(SPEC)
    for k, layer in enumerate(m.layers):
        layer.set_floats(torch.randn(layer.num_floats, generator=torch.Generator().manual_seed(k)).tolist())
        layer.set_seeds([(k * 1000 + i * 7) % 65536 for i in range(8)])
    return m


def test_round_trip_is_bit_identical_and_small(tmp_path):
    m = trained_model()
    path = tmp_path / "model.json"
    size = save_checkpoint(m, path, meta={"job": "t"})
    assert size == path.stat().st_size and size < 4096
    loaded = load_checkpoint(path)
    assert loaded.get_seeds() == m.get_seeds() and loaded.get_floats() == m.get_floats()
    for a, b in zip(m.layers, loaded.layers):
        fa, fb = a.generate(), b.generate()
        seeded = [n for n, v in vars(fa).items() if v is not None]  # every tensor but the optional built W
        assert len(seeded) == 8 and all(torch.equal(getattr(fa, n), getattr(fb, n)) for n in seeded)
    x = torch.randn(8, 64)
    assert torch.equal(m(x), loaded(x))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def write(tmp_path, data):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_truncated_file(tmp_path):
    good = json.dumps(checkpoint_dict(trained_model()))
    with pytest.raises(CheckpointError, match="truncated or not JSON"):
        load_checkpoint(write(tmp_path, good[: len(good) // 2]))


def test_wrong_version_and_generator(tmp_path):
    d = checkpoint_dict(trained_model())
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(write(tmp_path, {**d, "format_version": 99}))
    with pytest.raises(CheckpointError, match="generator"):
        load_checkpoint(write(tmp_path, {**d, "generator_version": 2}))


def test_edited_content_fails_checksum(tmp_path):
    d = checkpoint_dict(trained_model())
    d["layers"][0]["seeds"][0] += 1
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(write(tmp_path, d))


def unsigned(d):
    return {k: v for k, v in d.items() if k != "sha256"}


def test_mismatched_shapes(tmp_path):
    d = unsigned(checkpoint_dict(trained_model()))
    d["layers"][1]["floats"] = d["layers"][0]["floats"][:8]
    with pytest.raises(CheckpointError, match=r"layers\[1\].floats"):
        load_checkpoint(write(tmp_path, d))
    d = unsigned(checkpoint_dict(trained_model()))
    d["layers"] = d["layers"][:2]
    with pytest.raises(CheckpointError, match="spec has 3 layers, file has 2"):
        load_checkpoint(write(tmp_path, d))


def test_out_of_range_seed(tmp_path):
    d = unsigned(checkpoint_dict(trained_model()))
    d["layers"][2]["seeds"][4] = 2**16
    with pytest.raises(CheckpointError, match=r"layers\[2\].seeds.mask: seed 65536 is outside"):
        load_checkpoint(write(tmp_path, d))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.json")

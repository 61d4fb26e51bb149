"""The tiny checkpoint (format 2, rank-stacked seeds packed): JSON, bit-identical round trip at any rank,
one-line errors that name the field and the value, old checkpoints refused, nothing half-loaded or
half-written."""

import base64
import json
import os
import random

import pytest
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core import prng
from germinator_dist.core.checkpoint import (
    FORMAT_VERSION,
    _digest,
    checkpoint_bytes,
    checkpoint_dict,
    encode_seeds,
    load_checkpoint,
    pack_seeds,
    save_checkpoint,
    seed_width,
)
from germinator_dist.core.model import build_model
from germinator_dist.errors import CheckpointError

SPEC = ModelSpec(input_dim=64, hidden=(256, 256), num_classes=10, rank=16)
LM = ModelSpec(kind="lm", vocab_size=40, d_model=8, d_ff=12, n_blocks=1, context=6, rank=5, splits=(2, 3))


def trained_model(spec=SPEC, seed=0):
    """A model with random floats and random seeds (distinct components) in the spec's seed range."""
    m = build_model(spec)
    rng = random.Random(seed)
    space = 1 << spec.seed_bits
    for k, layer in enumerate(m.layers):
        g = torch.Generator().manual_seed(seed * 100 + k)
        layer.set_floats(torch.randn(layer.num_floats, generator=g).tolist())
        comps: list[int] = []
        while len(comps) < layer.rank:  # distinct components (the range may be too big for rng.sample)
            s = rng.randrange(space)
            comps += [s] if s not in comps else []
        layer.set_seeds([*comps, *(rng.randrange(space) for _ in range(4))])
    return m


def assert_same_model(a, b):
    assert b.spec == a.spec
    assert b.get_seeds() == a.get_seeds() and b.get_floats() == a.get_floats()
    for la, lb in zip(a.layers, b.layers):
        fa, fb = la.generate(), lb.generate()
        seeded = [n for n, v in vars(fa).items() if v is not None]  # every tensor but the optional built W
        assert len(seeded) == 8 and all(torch.equal(getattr(fa, n), getattr(fb, n)) for n in seeded)


@pytest.mark.parametrize(
    "rank,seed_bits", [(1, 16), (16, 16), (32, 16), (128, 16), (32, 8), (200, 8), (7, 32), (9, 63)]
)
def test_round_trip_is_bit_identical_at_several_ranks(tmp_path, rank, seed_bits):
    spec = SPEC.model_copy(update={"rank": rank, "seed_bits": seed_bits})
    m = trained_model(spec, seed=rank)
    path = tmp_path / "model.json"
    size = save_checkpoint(m, path, meta={"job": "t"})
    assert size == path.stat().st_size == len(checkpoint_bytes(m, meta={"job": "t"}))
    doc = json.loads(path.read_text())
    assert doc["format_version"] == FORMAT_VERSION == 2
    assert doc["generator_version"] == prng.GENERATOR_VERSION == 2
    for entry, layer in zip(doc["layers"], m.layers):
        # random seeds: packed, little-endian, the narrowest width seed_bits allows
        assert isinstance(entry["seeds"], str)
        raw = base64.b64decode(entry["seeds"])
        width = {8: 1, 16: 2, 32: 4, 63: 8}[seed_bits]
        assert len(raw) == (rank + 4) * width
        assert int.from_bytes(raw[:width], "little") == layer.get_seeds()[0]
        assert int.from_bytes(raw[-width:], "little") == layer.get_seeds()[-1]
    loaded = load_checkpoint(path)
    assert_same_model(m, loaded)
    x = torch.randn(8, 64)
    assert torch.equal(m(x), loaded(x))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_lm_with_experts_round_trip(tmp_path):
    m = trained_model(LM, seed=3)
    save_checkpoint(m, tmp_path / "lm.json")
    loaded = load_checkpoint(tmp_path / "lm.json")
    assert_same_model(m, loaded)
    tok = torch.randint(0, 40, (2, 6))
    assert torch.equal(m(tok), loaded(tok))


def test_checkpoint_is_small():
    """The README's figures: digits MLP 64-256-256-10 at seed_bits 16 (JSON overhead included)."""
    sizes = {
        r: len(checkpoint_bytes(trained_model(SPEC.model_copy(update={"rank": r})))) for r in (16, 32, 128)
    }
    assert sizes[32] < 4096 and sizes[128] < 4096
    # every extra component costs its packed seed (2 bytes) and its g (4 bytes) per layer, base64'd
    per_rank = (sizes[128] - sizes[32]) / 96
    assert 3 * 6 * 4 / 3 - 1 <= per_rank <= 3 * 6 * 4 / 3 + 1


def test_seed_widths_and_list_form():
    assert [seed_width(b) for b in (8, 16, 32, 63)] == [1, 2, 4, 8]
    assert base64.b64decode(pack_seeds([1, 258], 16)) == bytes([1, 0, 2, 1])  # little-endian
    assert base64.b64decode(pack_seeds([2**63 - 1], 63)) == b"\xff" * 7 + b"\x7f"
    # small values at a wide width: a JSON list is shorter, and is what gets stored
    assert encode_seeds([0, 1, 2, 3, 4], 63) == [0, 1, 2, 3, 4]
    assert isinstance(encode_seeds([40000, 50000, 60000, 1, 2], 16), str)


def test_list_form_loads(tmp_path):
    spec = SPEC.model_copy(update={"rank": 2, "seed_bits": 63})
    m = build_model(spec)
    for k, layer in enumerate(m.layers):
        layer.set_seeds([k, k + 1, 7, 7, 7, 7])  # layer seeds may repeat
    d = checkpoint_dict(m)
    assert all(isinstance(e["seeds"], list) for e in d["layers"])
    path = tmp_path / "m.json"
    save_checkpoint(m, path)
    assert load_checkpoint(path).get_seeds() == m.get_seeds()


def write(tmp_path, data):
    """Write ``data``; a dict without a digest is signed first (an edit whose digest was recomputed:
    the digest catches corruption, it is no signature), so the check under test is the one that fires."""
    if isinstance(data, dict) and "sha256" not in data:
        data = {**data, "sha256": _digest(data)}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def unsigned(d):
    return {k: v for k, v in d.items() if k != "sha256"}


def refused(tmp_path, data, pattern):
    """Loading ``data`` raises a one-line CheckpointError matching ``pattern``; returns its message."""
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(write(tmp_path, data))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_truncated_file(tmp_path):
    good = json.dumps(checkpoint_dict(trained_model()))
    refused(tmp_path, good[: len(good) // 2], "truncated or not JSON")


def old_checkpoint():
    """A format-1 checkpoint as the previous build wrote it: eight seeds per layer, generator v1."""
    m = trained_model()
    d = checkpoint_dict(m)
    body = {
        **unsigned(d),
        "format_version": 1,
        "generator_version": 1,
        "layers": [{"seeds": [11, 12, 13, 14, 15, 16, 17, 18], "floats": e["floats"]} for e in d["layers"]],
    }
    return body


def test_old_checkpoint_refused_naming_both_versions(tmp_path):
    msg = refused(
        tmp_path,
        old_checkpoint(),
        r"format_version 1 \(generator_version 1\) is not supported: this build reads format_version 2 "
        r"with generator_version 2",
    )
    assert msg.startswith(str(tmp_path / "bad.json"))
    # the new format with the old generator
    d = checkpoint_dict(trained_model())
    refused(
        tmp_path,
        {**d, "generator_version": 1},
        r"generator 'philox4x32-10' version 1 is not supported.*version 2",
    )
    refused(tmp_path, {**d, "format_version": 99}, "format_version 99")
    refused(tmp_path, {**d, "generator": "mt19937"}, "generator 'mt19937'")


def test_edited_content_fails_checksum(tmp_path):
    d = checkpoint_dict(trained_model())
    d["layers"][0]["floats"] = checkpoint_dict(trained_model(seed=1))["layers"][0]["floats"]
    refused(tmp_path, d, "sha256")


def test_mismatched_shapes(tmp_path):
    d = unsigned(checkpoint_dict(trained_model()))
    d["layers"][1]["floats"] = d["layers"][0]["floats"][:8]
    refused(tmp_path, d, r"layers\[1\].floats")
    d = unsigned(checkpoint_dict(trained_model()))
    d["layers"] = d["layers"][:2]
    refused(tmp_path, d, "spec has 3 layers, file has 2")
    d = unsigned(checkpoint_dict(trained_model()))
    d["spec"]["rank"] = 17  # the seeds and floats were written for rank 16
    refused(
        tmp_path,
        d,
        r"layers\[0\].seeds: rank 17 needs 21 seeds \(c0..c16, mask, scale, shift, bias\), got 20",
    )


def with_seeds(k, seeds, spec=SPEC):
    d = unsigned(checkpoint_dict(trained_model(spec)))
    d["layers"][k]["seeds"] = seeds
    return d


def test_bad_seeds_name_the_layer_and_value(tmp_path):
    m = trained_model()
    good = list(m.layers[2].get_seeds())
    # wrong count for the rank, packed and as a list
    short = pack_seeds(good[:-1], 16)
    msg = refused(
        tmp_path, with_seeds(2, short), r"layers\[2\].seeds: rank 16 needs 20 seeds .* got 19 \(value '"
    )
    assert short[:20] in msg
    refused(
        tmp_path, with_seeds(2, good + [5]), r"layers\[2\].seeds: rank 16 needs 20 seeds .* got 21 \(value \["
    )
    # a duplicated component
    dup = good.copy()
    dup[5] = dup[1]
    refused(
        tmp_path,
        with_seeds(2, pack_seeds(dup, 16)),
        rf"layers\[2\].seeds.c5: component seed {dup[1]} is already held by slot c1 of layer 2",
    )
    # out of range: a list value at seed_bits 16, a packed value at seed_bits 63
    wide = good.copy()
    wide[16] = 2**16
    refused(tmp_path, with_seeds(2, wide), r"layers\[2\].seeds.mask: seed 65536 is outside \[0, 2\*\*16\)")
    spec63 = SPEC.model_copy(update={"seed_bits": 63})
    big = list(trained_model(spec63).layers[0].get_seeds())
    big[3] = 2**64 - 1
    refused(
        tmp_path,
        with_seeds(0, pack_seeds(big, 64), spec63),
        r"layers\[0\].seeds.c3: seed 18446744073709551615 is outside \[0, 2\*\*63\)",
    )
    # bad base64, a length that is not whole seeds, values of the wrong type
    refused(
        tmp_path,
        with_seeds(1, "not base64!"),
        r"layers\[1\].seeds: not base64 packed seeds \(value 'not base64!'\)",
    )
    odd = base64.b64encode(bytes(39)).decode()
    refused(
        tmp_path, with_seeds(1, odd), r"layers\[1\].seeds: 39 bytes is not a whole number of 2-byte seeds"
    )
    refused(
        tmp_path,
        with_seeds(1, good[:4] + [1.5] + good[5:]),
        r"layers\[1\].seeds\[4\]: expected an integer seed, got 1.5",
    )
    refused(tmp_path, with_seeds(1, {"a": 1}), r"layers\[1\].seeds: expected packed seeds .* got \{'a': 1\}")
    refused(tmp_path, with_seeds(1, None), r"layers\[1\].seeds: expected packed seeds .* got None")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.json")


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.json"
    old = trained_model(seed=1)
    save_checkpoint(old, path)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="cannot write .*disk full"):
        save_checkpoint(trained_model(seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
    assert load_checkpoint(path).get_seeds() == old.get_seeds()


def test_an_lm_checkpoint_generates_text_and_a_classifier_is_refused(tmp_path):
    from germinator_dist.core.metrics import generate_text
    from germinator_dist.errors import SpecError

    lm = ModelSpec(kind="lm", d_model=16, d_ff=16, n_blocks=1, context=8, rank=4, vocab_size=256)
    save_checkpoint(build_model(lm), tmp_path / "lm.json")
    text = generate_text(tmp_path / "lm.json", "def ", 12, 1.0, seed=3)
    assert text.startswith("def ") and len(text.encode("utf-8", errors="replace")) >= 4
    assert text == generate_text(tmp_path / "lm.json", "def ", 12, 1.0, seed=3)  # seeded sampling
    mlp = ModelSpec(hidden=(8,), rank=2, input_dim=4, num_classes=3)
    save_checkpoint(build_model(mlp), tmp_path / "mlp.json")
    with pytest.raises(SpecError, match="generate needs a language model"):
        generate_text(tmp_path / "mlp.json", "x", 4, 1.0, seed=0)

"""examples/use_model.py: an exported checkpoint as an ordinary torch module (classifier and byte LM)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core.checkpoint import save_checkpoint
from germinator_dist.core.data import load_digits_dataset
from germinator_dist.core.model import build_model

ROOT = Path(__file__).resolve().parents[2]
spec_ = importlib.util.spec_from_file_location("use_model", ROOT / "examples" / "use_model.py")
use_model = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(use_model)


def _moved(model):
    """The model with layer 0's first component seed and all its floats changed: a checkpoint that
    differs from what the spec alone builds."""
    layer = model.layers[0]
    seeds = list(layer.get_seeds())
    seeds[0] = max(seeds[: layer.rank]) + 1
    floats = [v + 0.01 * i for i, v in enumerate(layer.get_floats())]
    model.set_layer(0, seeds=seeds, floats=floats)
    return model


@pytest.fixture
def classifier(tmp_path):
    spec = ModelSpec(hidden=(32,), rank=4, seed_bits=16).resolved(**load_digits_dataset().dims())
    path = tmp_path / "model.json"
    save_checkpoint(_moved(build_model(spec)), path)
    return path


@pytest.fixture
def lm(tmp_path):
    spec = ModelSpec(kind="lm", d_model=16, d_ff=32, n_blocks=1, context=16, rank=4, vocab_size=256)
    path = tmp_path / "lm.json"
    save_checkpoint(_moved(build_model(spec)), path)
    return path


def test_a_classifier_checkpoint_runs_as_a_module(classifier, capsys):
    out = use_model.main([str(classifier), "--device", "cpu"])
    assert out["logits_shape"] == [359, 10] and 0.0 <= out["accuracy"] <= 1.0
    assert out["regenerated"] is True
    model = use_model.load(str(classifier), "cpu")
    assert isinstance(model, torch.nn.Module) and not model.training
    # the state is seeds and floats only: (rank + 4) seeds and the floats of each layer
    state = model.state_dict()
    assert {t.dtype for n, t in state.items() if n.endswith(".seeds")} == {torch.int64}
    assert out["seeds"] == sum(layer.n_seeds for layer in model.layers)
    assert out["floats"] == model.num_floats() < out["regenerated_weights"] // 50
    assert all(n.endswith(".seeds") or t.is_floating_point() for n, t in state.items())
    # the same weights from the same seeds, and the spec alone builds another model until the state loads
    assert torch.equal(use_model.weight_of(model, 0), use_model.weight_of(model, 0))
    x = load_digits_dataset().x_test[:16]
    assert not torch.equal(build_model(model.spec)(x), model(x))
    assert use_model.regenerated_from_seeds(model, x)
    assert "same outputs: True" in capsys.readouterr().out


def test_an_lm_checkpoint_gives_next_byte_probabilities(lm):
    out = use_model.main([str(lm), "--prompt", "def f", "--device", "cpu"])
    probs = torch.tensor(out["next_byte_probs"])
    assert probs.shape == (256,) and torch.all(probs >= 0) and abs(float(probs.sum()) - 1) < 1e-5
    assert out["regenerated"] is True
    model = use_model.load(str(lm), "cpu")
    direct = model(torch.tensor([list(b"def f")]))[0, -1].softmax(-1)  # (vocab,)
    assert torch.allclose(use_model.next_byte_probs(model, b"def f"), direct)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_the_model_runs_on_the_gpu_with_the_same_outputs(classifier):
    cpu, gpu = use_model.load(str(classifier), "cpu"), use_model.load(str(classifier))
    assert gpu.layers[0].alpha.device.type == "cuda"
    x = load_digits_dataset().x_test[:16]
    got, want = use_model.classify(gpu, x).cpu(), use_model.classify(cpu, x)  # (16, 10) each
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

"""SeedLinear matches DESIGN.md section 2's formula; seeds are buffers, floats the only parameters."""

import math

import pytest
import torch

from germinator_dist import prng
from germinator_dist.errors import SpecError
from germinator_dist.layers import ROLE, SeedLinear

SEEDS = (11, 22, 33, 44, 55, 66, 77, 88)


def reference_weight(layer: SeedLinear, lam: torch.Tensor) -> torch.Tensor:
    """DESIGN.md's formula, literally, for one lam (r,)."""
    s = dict(zip(("a1", "b1", "a2", "b2", "mask", "scale", "shift", "bias"), layer.get_seeds()))
    o, i, r, st = layer.out_features, layer.in_features, layer.rank, layer.stream
    gen = lambda n, shape: prng.int_tensor(s[n], ROLE[n], st, shape, layer.int_dtype)  # noqa: E731
    A1, B1, A2, B2 = gen("a1", (o, r)), gen("b1", (r, i)), gen("a2", (o, r)), gen("b2", (r, i))
    M = prng.bernoulli_mask(s["mask"], ROLE["mask"], st, (o, i), layer.mask_density)
    S, T = gen("scale", (o, i)), gen("shift", (o, i))
    W1 = A1 @ torch.diag(lam) @ B1
    W2 = A2 @ torch.diag(lam) @ B2
    return layer.alpha * layer.c * ((M * W1 + (1 - M) * W2) * (1 + layer.sigma_s * S) + layer.sigma_t * T)


@pytest.mark.parametrize("int_dtype", ["int8", "uint8"])
def test_forward_matches_formula_without_experts(int_dtype):
    layer = SeedLinear(40, 24, 8, int_dtype=int_dtype, seeds=SEEDS, stream=3)
    with torch.no_grad():
        layer.alpha.fill_(1.7)
        layer.beta.fill_(-0.4)
        layer.g.copy_(torch.linspace(-1, 2, 8))
    x = torch.randn(5, 40)
    w = reference_weight(layer, layer.g.detach())
    b = prng.int_tensor(88, ROLE["bias"], 3, (24,), int_dtype)
    expected = x @ w.T + layer.beta * b
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_expert_routing_by_token_modulo():
    layer = SeedLinear(12, 6, 4, splits=(2, 3), seeds=SEEDS, stream=1)
    with torch.no_grad():
        layer.experts.copy_(torch.randn(5, 4))
    x = torch.randn(10, 12)
    tokens = torch.arange(10) * 7 + 1
    out = layer(x, tokens)
    b = prng.int_tensor(88, ROLE["bias"], 1, (6,), "int8")
    for n, t in enumerate(tokens.tolist()):
        lam = layer.g + layer.experts[t % 2] + layer.experts[2 + t % 3]  # g + e[0][t%2] + e[1][t%3]
        w = reference_weight(layer, lam.detach())
        torch.testing.assert_close(out[n], x[n] @ w.T + layer.beta * b, rtol=1e-5, atol=1e-5)
    with pytest.raises(SpecError, match="token_ids"):
        layer(x)


def test_embed_equals_forward_on_one_hot():
    layer = SeedLinear(30, 8, 4, splits=(3,), seeds=SEEDS, fan_in_norm=False)
    with torch.no_grad():
        layer.experts.copy_(torch.randn(3, 4))
    tokens = torch.tensor([[0, 5, 29], [7, 7, 1]])
    one_hot = torch.nn.functional.one_hot(tokens, 30).float()
    torch.testing.assert_close(layer.embed(tokens), layer(one_hot, tokens), rtol=1e-5, atol=1e-5)


def test_only_floats_are_parameters_and_gradients_reach_them():
    layer = SeedLinear(16, 8, 4, splits=(2,), seeds=SEEDS)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"alpha", "beta", "g", "experts"}
    assert "seeds" in dict(layer.named_buffers())
    assert layer.num_floats == 2 + 4 * 3 == len(layer.get_floats()) == len(layer.float_names())
    loss = layer(torch.randn(6, 16), torch.arange(6)).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_floats_round_trip_and_seed_change_changes_weights():
    layer = SeedLinear(16, 8, 4, splits=(2,), seeds=SEEDS)
    floats = tuple(float(v) for v in torch.randn(layer.num_floats))
    layer.set_floats(floats)
    assert layer.get_floats() == tuple(torch.tensor(floats).tolist())
    x = torch.randn(3, 16)
    before = layer(x, torch.arange(3))
    layer.set_seeds((11, 22, 33, 44, 56, 66, 77, 88))  # only the mask seed
    assert not torch.allclose(before, layer(x, torch.arange(3)))


def test_activation_scale_at_init():
    layer = SeedLinear(512, 512, 16, seeds=SEEDS)
    y = layer(torch.randn(256, 512))
    assert 0.3 < float(y.detach().std()) < 3.0


def test_reduce_seed_bits():
    layer = SeedLinear(8, 4, 2, seed_bits=16, seeds=(300, 1, 2, 3, 4, 5, 6, 65535))
    layer.reduce_seed_bits(8)
    assert layer.get_seeds() == (300 & 255, 1, 2, 3, 4, 5, 6, 255)
    with pytest.raises(SpecError, match="seed_bits"):
        layer.reduce_seed_bits(16)


def test_bad_input_names_field_and_value():
    with pytest.raises(SpecError, match=r"seeds.mask: seed 256 is outside \[0, 2\*\*8\)"):
        SeedLinear(8, 4, 2, seed_bits=8, seeds=(1, 2, 3, 4, 256, 6, 7, 8))
    with pytest.raises(SpecError, match="seeds.a1: seed -3"):
        SeedLinear(8, 4, 2, seeds=(-3, 2, 3, 4, 5, 6, 7, 8))
    with pytest.raises(SpecError, match="expected 8 seeds"):
        SeedLinear(8, 4, 2, seeds=(1, 2))
    with pytest.raises(SpecError, match="rank"):
        SeedLinear(8, 4, 0)
    with pytest.raises(SpecError, match="seed_bits"):
        SeedLinear(8, 4, 2, seed_bits=12)
    layer = SeedLinear(8, 4, 2, seeds=SEEDS)
    with pytest.raises(SpecError, match="expects 4 floats, got 3"):
        layer.set_floats([1.0, 2.0, 3.0])
    with pytest.raises(SpecError, match="non-finite"):
        layer.set_floats([1.0, math.nan, 3.0, 4.0])
    assert layer.get_seeds() == SEEDS  # unchanged by the failed calls

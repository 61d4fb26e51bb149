"""SeedLinear matches the layer formula of docs/layout.md (rank-stacked components, one seed each);
seeds are buffers, floats the only parameters."""

import math
import random

import pytest
import torch

from germinator_dist.core import prng
from germinator_dist.core.layers import ROLE, SeedLinear, component_phi
from germinator_dist.errors import SpecError


def seeds_for(rank: int, base: int = 11) -> tuple[int, ...]:
    """rank distinct component seeds, then mask, scale, shift, bias."""
    return (*(base + 7 * k for k in range(rank)), 55, 66, 77, 88)


def reference_weight(layer: SeedLinear, lam: torch.Tensor) -> torch.Tensor:
    """The layer formula, literally, for one lam (r,): every component generated alone, in its slot."""
    seeds = layer.get_seeds()
    o, i, r, st = layer.out_features, layer.in_features, layer.rank, layer.stream
    mask, scale, shift, _ = seeds[r:]
    gen = lambda seed, name, shape: prng.int_tensor(seed, ROLE[name], st, shape, layer.int_dtype)  # noqa: E731
    A1 = torch.stack([gen(seeds[k], "a1", (o,)) for k in range(r)], dim=1)  # (out, r)
    B1 = torch.stack([gen(seeds[k], "b1", (i,)) for k in range(r)])  # (r, in)
    A2 = torch.stack([gen(seeds[k], "a2", (o,)) for k in range(r)], dim=1)
    B2 = torch.stack([gen(seeds[k], "b2", (i,)) for k in range(r)])
    M = prng.bernoulli_mask(mask, ROLE["mask"], st, (o, i), layer.mask_density)
    S, T = gen(scale, "scale", (o, i)), gen(shift, "shift", (o, i))
    W1 = A1 @ torch.diag(lam) @ B1
    W2 = A2 @ torch.diag(lam) @ B2
    return layer.alpha * layer.c * ((M * W1 + (1 - M) * W2) * (1 + layer.sigma_s * S) + layer.sigma_t * T)


def bias_of(layer: SeedLinear) -> torch.Tensor:
    seed = layer.get_seeds()[-1]
    return prng.int_tensor(seed, ROLE["bias"], layer.stream, (layer.out_features,), layer.int_dtype)


@pytest.mark.parametrize("trial", range(6))
def test_forward_matches_formula_random_shapes_ranks_experts(trial):
    rng = random.Random(trial)
    inp, out, rank = rng.randint(1, 50), rng.randint(1, 40), rng.randint(1, 12)
    splits = tuple(rng.randint(1, 4) for _ in range(rng.randint(0, 2)))
    int_dtype = rng.choice(["int8", "uint8"])
    comps = rng.sample(range(1 << 16), rank)
    seeds = (*comps, *(rng.randrange(1 << 16) for _ in range(4)))
    layer = SeedLinear(inp, out, rank, splits, int_dtype=int_dtype, seeds=seeds, stream=rng.randint(0, 9))
    with torch.no_grad():
        layer.alpha.fill_(rng.uniform(0.5, 2))
        layer.beta.fill_(rng.uniform(-1, 1))
        layer.g.copy_(torch.randn(rank))
        layer.experts.copy_(torch.randn(sum(splits), rank))
    n = 7
    x = torch.randn(n, inp)
    tokens = torch.arange(n) * 5 + 3
    got = layer(x, tokens) if splits else layer(x)
    for row, t in enumerate(tokens.tolist()):
        lam, off = layer.g.detach().clone(), 0
        for e in splits:
            lam += layer.experts.detach()[off + t % e]
            off += e
        w = reference_weight(layer, lam)
        want = x[row] @ w.T + layer.beta * bias_of(layer)
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-5)


def test_component_does_not_depend_on_slot_but_on_layer():
    a = SeedLinear(20, 12, 3, seeds=(5, 6, 7, 1, 2, 3, 4), stream=2)
    b = SeedLinear(20, 12, 3, seeds=(7, 5, 6, 1, 2, 3, 4), stream=2)  # the same seeds, other slots
    c = SeedLinear(20, 12, 3, seeds=(5, 6, 7, 1, 2, 3, 4), stream=3)  # another layer
    fa, fb, fc = a.generate(), b.generate(), c.generate()
    torch.testing.assert_close(fa.a1[:, 0], fb.a1[:, 1])  # seed 5: slot 0 in a, slot 1 in b
    torch.testing.assert_close(fa.b2[2], fb.b2[0])  # seed 7
    assert not torch.equal(fa.a1, fc.a1)
    # the same component set in another order gives the same weight (the floats follow their seeds)
    with torch.no_grad():
        a.g.copy_(torch.tensor([1.0, 2.0, 3.0]))
        b.g.copy_(torch.tensor([3.0, 1.0, 2.0]))
    x = torch.randn(4, 20)
    torch.testing.assert_close(a(x), b(x))


def test_component_phi_is_the_rank_one_contribution():
    layer = SeedLinear(30, 10, 4, seeds=seeds_for(4), stream=1)
    with torch.no_grad():
        layer.g.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    full = layer.weight(layer.generate(), layer.g.unsqueeze(0))[0]
    fixed = layer.generate()
    comp = layer.make_components([layer.get_seeds()[1]], "cpu")[layer.get_seeds()[1]]
    phi = component_phi(fixed.f1, fixed.f2, comp)
    with torch.no_grad():
        layer.g[1] = 0.0
    without = layer.weight(layer.generate(), layer.g.unsqueeze(0))[0]
    torch.testing.assert_close(full, without + layer.alpha * layer.c * (-1.0) * phi, rtol=1e-5, atol=1e-6)


def test_expert_routing_by_token_modulo():
    layer = SeedLinear(12, 6, 4, splits=(2, 3), seeds=seeds_for(4), stream=1)
    with torch.no_grad():
        layer.experts.copy_(torch.randn(5, 4))
    x = torch.randn(10, 12)
    tokens = torch.arange(10) * 7 + 1
    out = layer(x, tokens)
    for n, t in enumerate(tokens.tolist()):
        lam = layer.g + layer.experts[t % 2] + layer.experts[2 + t % 3]  # g + e[0][t%2] + e[1][t%3]
        w = reference_weight(layer, lam.detach())
        torch.testing.assert_close(out[n], x[n] @ w.T + layer.beta * bias_of(layer), rtol=1e-5, atol=1e-5)
    with pytest.raises(SpecError, match="token_ids"):
        layer(x)


def test_embed_equals_forward_on_one_hot():
    layer = SeedLinear(30, 8, 4, splits=(3,), seeds=seeds_for(4), fan_in_norm=False)
    with torch.no_grad():
        layer.experts.copy_(torch.randn(3, 4))
    tokens = torch.tensor([[0, 5, 29], [7, 7, 1]])
    one_hot = torch.nn.functional.one_hot(tokens, 30).float()
    torch.testing.assert_close(layer.embed(tokens), layer(one_hot, tokens), rtol=1e-5, atol=1e-5)


def test_generate_with_cache_matches_and_reuses_components():
    layer = SeedLinear(24, 16, 5, seeds=seeds_for(5))
    plain = layer.generate()
    layer.cache = {}
    first = layer.generate()
    n_before = len(layer.cache)
    swapped = list(layer.get_seeds())
    swapped[2] = 9999
    layer.set_seeds(swapped)
    second = layer.generate()
    assert len(layer.cache) == n_before + 1  # one new component, everything else from the cache
    for name in ("a1", "b1", "a2", "b2", "f1", "f2", "t", "bias"):
        torch.testing.assert_close(getattr(plain, name), getattr(first, name))
    torch.testing.assert_close(second.a1[:, [0, 1, 3, 4]], plain.a1[:, [0, 1, 3, 4]])
    assert not torch.equal(second.a1[:, 2], plain.a1[:, 2])


def test_only_floats_are_parameters_and_gradients_reach_them():
    layer = SeedLinear(16, 8, 4, splits=(2,), seeds=seeds_for(4))
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"alpha", "beta", "g", "experts"}
    assert "seeds" in dict(layer.named_buffers())
    assert layer.num_floats == 2 + 4 * 3 == len(layer.get_floats()) == len(layer.float_names())
    loss = layer(torch.randn(6, 16), torch.arange(6)).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_floats_round_trip_and_seed_change_changes_weights():
    layer = SeedLinear(16, 8, 4, splits=(2,), seeds=seeds_for(4))
    floats = tuple(float(v) for v in torch.randn(layer.num_floats))
    layer.set_floats(floats)
    assert layer.get_floats() == tuple(torch.tensor(floats).tolist())
    x = torch.randn(3, 16)
    for slot in (1, 4):  # a component, then the mask seed
        before = layer(x, torch.arange(3))
        seeds = list(layer.get_seeds())
        seeds[slot] += 1000
        layer.set_seeds(seeds)
        assert not torch.allclose(before, layer(x, torch.arange(3)))


def test_activation_scale_at_init():
    layer = SeedLinear(512, 512, 16, seeds=seeds_for(16))
    y = layer(torch.randn(256, 512))
    assert 0.3 < float(y.detach().std()) < 3.0


def test_reduce_seed_bits():
    layer = SeedLinear(8, 4, 2, seed_bits=16, seeds=(300, 1, 2, 3, 4, 65535))
    layer.reduce_seed_bits(8)
    assert layer.get_seeds() == (300 & 255, 1, 2, 3, 4, 255)
    with pytest.raises(SpecError, match="seed_bits"):
        layer.reduce_seed_bits(16)
    clash = SeedLinear(8, 4, 2, seed_bits=16, seeds=(300, 300 & 255, 2, 3, 4, 5))
    with pytest.raises(SpecError, match="seeds.c1: component seed 44 is already held by slot c0"):
        clash.reduce_seed_bits(8)
    assert clash.seed_bits == 16 and clash.get_seeds()[0] == 300  # unchanged


def test_bad_input_names_field_and_value():
    with pytest.raises(SpecError, match=r"seeds.mask: seed 256 is outside \[0, 2\*\*8\)"):
        SeedLinear(8, 4, 2, seed_bits=8, seeds=(1, 2, 256, 6, 7, 8))
    with pytest.raises(SpecError, match="seeds.c0: seed -3"):
        SeedLinear(8, 4, 2, seeds=(-3, 2, 3, 4, 5, 6))
    with pytest.raises(SpecError, match="expects 6 seeds"):
        SeedLinear(8, 4, 2, seeds=(1, 2))
    with pytest.raises(SpecError, match="seeds.c2: component seed 5 is already held by slot c0"):
        SeedLinear(8, 4, 3, seeds=(5, 6, 5, 1, 1, 1, 1))  # layer seeds may repeat, components not
    with pytest.raises(SpecError, match="rank"):
        SeedLinear(8, 4, 0)
    with pytest.raises(SpecError, match="seed_bits"):
        SeedLinear(8, 4, 2, seed_bits=12)
    layer = SeedLinear(8, 4, 2, seeds=seeds_for(2))
    with pytest.raises(SpecError, match="expects 4 floats, got 3"):
        layer.set_floats([1.0, 2.0, 3.0])
    with pytest.raises(SpecError, match="non-finite"):
        layer.set_floats([1.0, math.nan, 3.0, 4.0])
    with pytest.raises(SpecError, match="already held"):
        layer.set_seeds((11, 11, 1, 2, 3, 4))
    assert layer.get_seeds() == seeds_for(2)  # unchanged by the failed calls

"""Models built from a ModelSpec: stages, staged re-runs, streaming, specs that refuse bad input."""

import pytest
import torch
from pydantic import ValidationError

from germinator_dist.config import ModelSpec, load_model_spec
from germinator_dist.core.model import Batch, GerminatorLM, GerminatorMLP, build_model, initial_seeds
from germinator_dist.errors import SpecError

MLP = ModelSpec(input_dim=20, hidden=(32, 16), num_classes=5, rank=4)
LM = ModelSpec(kind="lm", vocab_size=64, d_model=16, d_ff=24, n_blocks=2, context=12, rank=4, splits=(2, 3))


def test_mlp_shapes_and_loss():
    m = build_model(MLP)
    assert isinstance(m, GerminatorMLP) and len(m.layers) == 3
    x, y = torch.randn(7, 20), torch.randint(0, 5, (7,))
    assert m(x).shape == (7, 5)
    assert torch.isfinite(m.loss(Batch(x, y)))
    assert m.num_floats() == 3 * (2 + 4)


def test_lm_shapes_routing_and_staged_run():
    m = build_model(LM)
    assert isinstance(m, GerminatorLM) and len(m.layers) == 1 + 2 * 2 + 1
    tok = torch.randint(0, 64, (3, 12))
    logits = m(tok)
    assert logits.shape == (3, 12, 64)
    # the state entering layer k, reused for the rest, gives the same logits
    for k in range(len(m.layers)):
        state = m.run(m.initial_state(tok), 0, k)
        torch.testing.assert_close(m.run(state, k)["logits"], logits)


def test_lm_is_causal():
    m = build_model(LM)
    tok = torch.randint(0, 64, (1, 12))
    changed = tok.clone()
    changed[0, 8] = (changed[0, 8] + 1) % 64
    a, b = m(tok), m(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_layers_hold_rank_plus_four_seeds():
    for spec in (MLP, LM, MLP.model_copy(update={"rank": 33})):
        m = build_model(spec)
        assert all(len(seeds) == spec.rank + 4 for seeds in m.get_seeds())
        assert all(layer.n_seeds == spec.rank + 4 for layer in m.layers)
        assert all(len(set(layer.component_seeds())) == spec.rank for layer in m.layers)
        assert m.get_seeds() == [initial_seeds(spec, k) for k in range(len(m.layers))]


def test_initial_seeds_deterministic_distinct_and_in_range():
    s = initial_seeds(MLP, 0)
    assert len(s) == MLP.rank + 4 and s == initial_seeds(MLP, 0) and s != initial_seeds(MLP, 1)
    assert all(0 <= v < 2**16 for v in s) and len(set(s[: MLP.rank])) == MLP.rank
    wide = MLP.model_copy(update={"seed_bits": 63})
    assert any(v >= 2**32 for layer in range(3) for v in initial_seeds(wide, layer))
    other = build_model(MLP.model_copy(update={"init_seed": 5}))
    assert other.get_seeds() != build_model(MLP).get_seeds()
    # the layer seeds come from a stream of their own: the same at any rank
    assert initial_seeds(MLP.model_copy(update={"rank": 40}), 2)[-4:] == initial_seeds(MLP, 2)[-4:]


@pytest.mark.parametrize("rank", [200, 256])
def test_initial_seeds_distinct_even_in_a_narrow_seed_space(rank):
    spec = MLP.model_copy(update={"seed_bits": 8, "rank": rank})
    for layer in range(3):
        s = initial_seeds(spec, layer)
        comps = s[:rank]
        assert len(s) == rank + 4 and len(set(comps)) == rank and all(0 <= v < 256 for v in s)
        assert s == initial_seeds(spec, layer)  # deterministic
    if rank == 256:  # every seed of the space, once
        assert sorted(initial_seeds(spec, 0)[:rank]) == list(range(256))
    m = build_model(spec)  # the layers accept them (no duplicate component)
    assert all(len(set(layer.component_seeds())) == rank for layer in m.layers)


def test_rank_above_the_seed_space_is_refused():
    spec = MLP.model_copy(update={"seed_bits": 8, "rank": 257})
    with pytest.raises(SpecError, match=r"rank: 257 .*seed_bits=8"):
        initial_seeds(spec, 0)
    with pytest.raises(SpecError, match="rank: 257"):
        build_model(spec)


def test_duplicate_component_refused_by_set_layer():
    m = build_model(MLP)
    before = m.get_seeds()
    with pytest.raises(SpecError, match=r"seeds.c3: component seed 1 is already held by slot c0 of layer 1"):
        m.set_layer(1, seeds=(1, 2, 3, 1, 9, 9, 9, 9))
    assert m.get_seeds() == before  # nothing half-set
    m.set_layer(1, seeds=(1, 2, 3, 4, 9, 9, 9, 9))  # the layer seeds may repeat
    with pytest.raises(SpecError, match=r"expects 8 seeds"):
        m.set_layer(1, seeds=(1, 2, 3, 4, 5, 6, 7))


def test_components_are_slot_free():
    """A component belongs to its seed, not its slot: permuting component seeds together with their rank
    scalars g leaves the model's function unchanged."""
    m = build_model(MLP)
    x = torch.randn(6, 20)
    with torch.no_grad():
        for layer in m.layers:
            layer.g.copy_(torch.randn(layer.rank))
        before = m(x)
        layer = m.layers[1]
        seeds, g = list(layer.get_seeds()), layer.g.clone()
        perm = [2, 0, 3, 1]
        layer.set_seeds([seeds[i] for i in perm] + seeds[4:])
        layer.g.copy_(g[perm])
        torch.testing.assert_close(m(x), before)
        layer.g.copy_(g)  # the seeds moved but their g did not: another function
        assert not torch.allclose(m(x), before)


def test_fixed_override_changes_only_that_layer():
    m = build_model(MLP)
    x = torch.randn(4, 20)
    alt = m.layers[1].generate(seeds=(1, 2, 3, 4, 5, 6, 7, 8))
    state = m.run(m.initial_state(x), 0, 1)
    out = m.run(state, 1, fixed={1: alt})["logits"]
    m.layers[1].set_seeds((1, 2, 3, 4, 5, 6, 7, 8))
    torch.testing.assert_close(out, m(x))


def test_streaming_cache_flag_gives_same_outputs():
    m = build_model(MLP)
    x = torch.randn(4, 20)
    streamed = m(x)
    m.set_cache(True)
    torch.testing.assert_close(m(x), streamed)
    assert all(layer.cache for layer in m.layers)
    m.set_cache(False)
    assert all(layer.cache is None for layer in m.layers)


def test_reduce_seed_bits_updates_spec():
    m = build_model(MLP.model_copy(update={"seed_bits": 32}))
    m.reduce_seed_bits(8)
    assert m.spec.seed_bits == 8 and all(s < 256 for seeds in m.get_seeds() for s in seeds)
    assert all(len(set(seeds[: MLP.rank])) == MLP.rank for seeds in m.get_seeds())


def test_reduce_seed_bits_refuses_components_that_would_collide():
    m = build_model(MLP.model_copy(update={"seed_bits": 16}))
    m.set_layer(0, seeds=(5, 5 + 256, 7, 8, 1, 2, 3, 4))  # c0 and c1 agree in their low 8 bits
    with pytest.raises(SpecError, match="seeds.c1: component seed 5 is already held by slot c0"):
        m.reduce_seed_bits(8)


def test_spec_resolution_and_errors():
    spec = ModelSpec(hidden=(8,))
    with pytest.raises(SpecError, match="model.input_dim"):
        build_model(spec)
    resolved = spec.resolved(input_dim=64, num_classes=10)
    assert resolved.input_dim == 64 and resolved.num_classes == 10
    with pytest.raises(SpecError, match="model.input_dim: spec says 64 but the data has 32"):
        resolved.resolved(input_dim=32)
    with pytest.raises(SpecError, match=r"model.seed_bits: .*\(value 12\)"):
        load_model_spec({"seed_bits": 12})
    with pytest.raises(SpecError, match=r"model.hiden: Extra inputs are not permitted"):
        load_model_spec({"hiden": [4]})
    with pytest.raises(SpecError, match="model.splits"):
        load_model_spec({"kind": "mlp", "splits": [2]})
    with pytest.raises(SpecError, match="init_seed"):
        load_model_spec({"seed_bits": 8, "init_seed": 256})
    with pytest.raises(ValidationError):
        spec.rank = 3  # frozen

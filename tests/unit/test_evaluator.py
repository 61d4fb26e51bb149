"""LayerEvaluator: every loss it reports is the model's own loss for those seeds, whatever path it takes
(built weights for layers without experts, the generic path with experts, refit), and its caches follow the
snapshot. Also the batched generator it uses: the same bits as one call per tensor."""

import math
import random

import pytest
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core import prng
from germinator_dist.core.data import load_digits_dataset, load_text_dataset
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError
from germinator_dist.records import duplicate_component
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.stage_scorer import StageScorer


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def model_loss(spec, batch, seeds, floats, k=None, cand=None, cand_floats=None) -> float:
    """The loss the plain model computes (no evaluator), with layer k's seeds/floats replaced."""
    model = build_model(spec)
    for j, layer in enumerate(model.layers):
        layer.set_seeds(cand if j == k and cand is not None else seeds[j])
        layer.set_floats(cand_floats if j == k and cand_floats is not None else floats[j])
    with torch.no_grad():
        return float(model.loss(batch))


def mutants(seeds, rng: random.Random, seed_bits: int = 16):
    """Candidates that change one slot (each slot once: components, mask, scale, shift, bias alone), two
    slots (a component and the mask), two components, and every slot; never a duplicate component."""

    def redraw(slots):
        while True:
            c = list(seeds)
            for slot in slots:
                c[slot] = rng.randrange(1 << seed_bits)
            if duplicate_component(c) is None:
                return tuple(c)

    r = len(seeds) - 4
    out = [redraw([slot]) for slot in range(len(seeds))]
    out += [redraw([0, r]), redraw([0, r - 1]), redraw(range(len(seeds)))]
    out.append(tuple(seeds))  # the incumbent itself as a candidate
    return out


def trained_floats(model, rng: random.Random):
    """Floats away from their initial values, so that folding alpha*c into the parts is exercised."""
    out = []
    for layer in model.layers:
        moved = [v * (1 + 0.3 * rng.uniform(-1, 1)) for v in layer.get_floats()]
        out.append(tuple(torch.tensor(moved).tolist()))  # float32 values, as a layer holds them
    return out


@pytest.mark.parametrize("k, activation", [(0, "relu"), (1, "relu"), (2, "relu"), (1, "gelu"), (0, "tanh")])
def test_mlp_losses_equal_the_models_loss_for_every_kind_of_candidate(digits, k, activation):
    spec = ModelSpec(hidden=(48, 40), rank=6, activation=activation).resolved(**digits.dims())
    batch = digits.fitness_batch(200)
    rng = random.Random(k)
    model = build_model(spec)
    seeds, floats = model.get_seeds(), trained_floats(model, rng)
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(seeds, floats, versions=(1, 1, 1))
    cands = mutants(seeds[k], rng)
    for _ in range(2):  # the second pass comes from the caches (incumbent parts, LRU): same numbers
        res = ev.evaluate(k, cands)
        assert res.incumbent_loss == pytest.approx(model_loss(spec, batch, seeds, floats), rel=1e-5)
        for cand, loss in zip(cands, res.losses):
            assert loss == pytest.approx(model_loss(spec, batch, seeds, floats, k, cand), rel=1e-5)
        assert res.losses[-1] == pytest.approx(res.incumbent_loss, rel=1e-6)
        assert res.floats == (tuple(floats[k]),) * len(cands)  # no refit: floats as given
    assert isinstance(ev._scorers[k], StageScorer)  # a classifier stage takes the scorer's hot loop
    assert ev.model.layers[k].get_seeds() == seeds[k]  # restored after the call


@pytest.mark.parametrize("splits", [(2, 3), ()])
def test_language_model_takes_the_generic_path_with_the_same_losses(splits):
    data = load_text_dataset()
    spec = ModelSpec(kind="lm", d_model=16, d_ff=24, n_blocks=1, context=12, rank=4, splits=splits)
    spec = spec.resolved(**data.dims())
    batch = data.fitness_batch(6, spec.context)
    model = build_model(spec)
    rng = random.Random(5)
    seeds, floats = model.get_seeds(), trained_floats(model, rng)
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(seeds, floats, versions=(1,) * len(seeds))
    for k in (0, 2, len(seeds) - 1):
        cands = mutants(seeds[k], rng)[::3]
        res = ev.evaluate(k, cands)
        for cand, loss in zip(cands, res.losses):
            assert loss == pytest.approx(model_loss(spec, batch, seeds, floats, k, cand), rel=1e-5)
        assert ev._scorers[k] is None  # (B, T, d) activations: not a classifier stage


def test_refit_returns_floats_whose_loss_is_the_reported_one(digits):
    spec = ModelSpec(hidden=(32,), rank=4).resolved(**digits.dims())
    batch = digits.fitness_batch(128)
    model = build_model(spec)
    seeds, floats = model.get_seeds(), model.get_floats()
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(seeds, floats, versions=(3, 3))
    cands = mutants(seeds[0], random.Random(1))[:3]
    plain = ev.evaluate(0, cands)
    refit = ev.evaluate(0, cands, refit_steps=5, refit_lr=0.05)
    assert refit.incumbent_loss < plain.incumbent_loss  # Adam steps on the same batch lower its loss
    for cand, loss, fl in zip(cands, refit.losses, refit.floats):
        assert fl != tuple(floats[0])
        assert loss == pytest.approx(model_loss(spec, batch, seeds, floats, 0, cand, fl), rel=1e-5)
    # the evaluator's own layer is back at the snapshot; a no-refit call after it gives the same numbers
    assert ev.model.layers[0].get_floats() == tuple(floats[0])
    assert ev.evaluate(0, cands).losses == plain.losses


def test_a_new_snapshot_replaces_every_cached_part(digits):
    spec = ModelSpec(hidden=(32, 32), rank=4).resolved(**digits.dims())
    batch = digits.fitness_batch(128)
    model = build_model(spec)
    rng = random.Random(2)
    seeds, floats = model.get_seeds(), model.get_floats()
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(seeds, floats, versions=(1, 1, 1))
    cands = mutants(seeds[1], rng)
    ev.evaluate(1, cands)
    # new floats for the searched layer and a downstream one, new seeds upstream: all of it must show
    seeds2 = [mutants(s, rng)[-2] if j == 0 else s for j, s in enumerate(seeds)]  # every slot redrawn
    floats2 = trained_floats(model, rng)
    ev.load_snapshot(seeds2, floats2, versions=(2, 2, 2))
    res = ev.evaluate(1, cands)
    assert res.versions == (2, 2, 2)
    assert res.incumbent_loss == pytest.approx(model_loss(spec, batch, seeds2, floats2), rel=1e-5)
    for cand, loss in zip(cands, res.losses):
        assert loss == pytest.approx(model_loss(spec, batch, seeds2, floats2, 1, cand), rel=1e-5)


def test_snapshots_that_change_one_layer_keep_only_what_that_layer_does_not_touch(digits):
    spec = ModelSpec(hidden=(32, 24), rank=4).resolved(**digits.dims())
    batch = digits.fitness_batch(96)
    model = build_model(spec)
    rng = random.Random(3)
    seeds, floats = list(model.get_seeds()), list(trained_floats(model, rng))
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(seeds, floats, versions=(1, 1, 1))
    cands = mutants(seeds[1], rng)
    ev.evaluate(1, cands)
    x_before = ev._state_entering(1)["h"]
    r = spec.rank
    w12_part = ev._parts[1][1][("w12", *seeds[1][:r])]
    steps = [  # (layer, new seeds or None, new floats or None)
        (1, cands[r], None),  # a commit of the searched layer: its mask changes, floats stay
        (2, None, trained_floats(model, rng)[2]),  # the trainer publishes a downstream layer's floats
        (1, None, trained_floats(model, rng)[1]),  # ... and the searched layer's floats
        (0, mutants(seeds[0], rng)[0], None),  # an upstream commit
    ]
    for v, (j, new_seeds, new_floats) in enumerate(steps, start=2):
        seeds[j] = new_seeds or seeds[j]
        floats[j] = new_floats or floats[j]
        ev.load_snapshot(seeds, floats, versions=(v, v, v))
        cands = mutants(seeds[1], rng)
        res = ev.evaluate(1, cands)
        assert res.incumbent_loss == pytest.approx(model_loss(spec, batch, seeds, floats), rel=1e-5)
        for cand, loss in zip(cands, res.losses):
            assert loss == pytest.approx(model_loss(spec, batch, seeds, floats, 1, cand), rel=1e-5)
        if v == 2:  # layer 1's own commit: its input and its unchanged factor product are reused as they are
            assert ev._state_entering(1)["h"] is x_before
            assert ev._parts[1][1][("w12", *seeds[1][:r])] is w12_part
            assert ("f", seeds[1][r], seeds[1][r + 1]) in ev._parts[1][1]  # the new mask part
            assert len(ev._parts[1][1]) == 4  # only the incumbent's parts are kept
    assert ev._state_entering(1)["h"] is not x_before  # the upstream commit changed layer 1's input


def test_tensor_cache_stays_within_its_budget(digits):
    spec = ModelSpec(hidden=(128,), rank=8).resolved(**digits.dims())
    ev = LayerEvaluator(spec, digits.fitness_batch(64), tensor_cache_mb=1.0)
    model = build_model(spec)
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1, 1))
    rng = random.Random(0)
    for _ in range(12):
        ev.evaluate(0, [mutants(model.get_seeds()[0], rng)[-2] for _ in range(4)])
        assert ev._tensor_bytes <= 2**20


def test_out_of_range_candidate_is_refused_before_anything_runs(digits):
    spec = ModelSpec(hidden=(16,), rank=2).resolved(**digits.dims())
    model = build_model(spec)
    ev = LayerEvaluator(spec, digits.fitness_batch(32))
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1, 1))
    good = model.get_seeds()[0]
    with pytest.raises(SpecError, match="seeds.mask"):
        ev.evaluate(0, [good, good[:2] + (1 << 16,) + good[3:]])
    with pytest.raises(SpecError, match="seeds.c1: component seed"):
        ev.evaluate(0, [good, (good[0], good[0]) + good[2:]])
    other = (good[0] + 1, *good[1:])  # a valid candidate before a bad one: the layer must not keep it
    with pytest.raises(SpecError, match="seeds.c1: component seed"):
        ev.evaluate(0, [other, (good[0], good[0]) + good[2:]])
    assert ev.model.layers[0].get_seeds() == good and ev._tensor_bytes == 0


# ---- the batched generator ------------------------------------------------------------------------------
REQUESTS = [(5, 1, 0, (256, 16)), (2**40 + 3, 2, 1, (16, 256)), (77, 3, 2, (128, 96)), (9, 8, 1, (10,))]


@pytest.mark.parametrize("compiled", [True, False])
def test_many_tensors_in_one_call_have_the_same_bits(monkeypatch, compiled):
    monkeypatch.setenv("GERMINATOR_PRNG_COMPILE", "1" if compiled else "0")
    for int_dtype in ("int8", "uint8"):
        for req, got in zip(REQUESTS, prng.int_tensors(REQUESTS, int_dtype)):
            assert torch.equal(got, prng.int_tensor(*req, int_dtype)), (req, int_dtype)
    for dtype in (torch.float32, torch.bool):
        for req, got in zip(REQUESTS, prng.bernoulli_masks(REQUESTS, 0.3, dtype=dtype)):
            assert got.dtype == dtype and torch.equal(got, prng.bernoulli_mask(*req, 0.3, dtype=dtype))
    assert prng.int_tensors([]) == [] and prng.bernoulli_masks([], 0.5) == []


def test_layer_tensors_and_components_match_generate():
    from germinator_dist.core.layers import SeedLinear

    layer = SeedLinear(40, 24, 3, seeds=tuple(range(1, 8)))
    other = tuple(range(100, 107))
    tensors = layer.make_tensors([("mask", 103), ("scale", 104), ("shift", 105), ("bias", 106)], "cpu")
    comps = layer.make_components(other[:3], "cpu")
    layer.cache = {}
    fixed = layer.generate(seeds=other)
    raw = {(k[0], k[1]): v for k, v in layer.cache.items()}
    assert all(torch.equal(tensors[key], raw[key]) for key in tensors)
    for k, seed in enumerate(other[:3]):
        assert torch.equal(fixed.a1[:, k], comps[seed][0]) and torch.equal(fixed.b2[k], comps[seed][3])


def test_batched_generator_bad_input():
    with pytest.raises(SpecError, match="int_dtype"):
        prng.int_tensors(REQUESTS, "int16")
    with pytest.raises(SpecError, match="mask_density"):
        prng.bernoulli_masks(REQUESTS, 1.5)
    with pytest.raises(SpecError, match="seed"):
        prng.int_tensors([(-1, 1, 0, (4,))])
    assert not math.isnan(float(prng.int_tensors(REQUESTS)[0].sum()))

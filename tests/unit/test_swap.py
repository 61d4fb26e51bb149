"""Swap search in the worker: the gradient screen is the first-order effect of a candidate component, and
every verified swap's loss is the plain model's loss with that slot replaced."""

import pytest
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core.data import load_digits_dataset, load_text_dataset
from germinator_dist.core.layers import component_phi
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError
from germinator_dist.records import CandidateBlock, LayerEntry, SlotTask, SwapResult, SwapTask
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.search.swap_proposer import SwapConfig, SwapProposer, expand_block


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def trained(spec, batch, steps=60):
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def swapped_loss(spec, model, batch, k, slot, seed, slot_floats) -> float:
    """The plain model's loss with layer k's slot holding ``seed`` and its floats (g, then experts)."""
    other = build_model(spec)
    for j, layer in enumerate(other.layers):
        layer.set_seeds(model.layers[j].get_seeds())
        layer.set_floats(model.layers[j].get_floats())
    layer = other.layers[k]
    seeds = list(layer.get_seeds())
    seeds[slot] = seed
    layer.set_seeds(seeds)
    with torch.no_grad():
        layer.g[slot] = slot_floats[0]
        layer.experts[:, slot] = torch.tensor(slot_floats[1:])
        return float(other.loss(batch))


def test_screen_score_is_the_first_order_effect(digits):
    """d/dt L(W_incumbent + t alpha c Phi_s) at t = 0 is alpha c <G, Phi_s>: the screen, by autograd."""
    spec = ModelSpec(hidden=(32,), rank=6).resolved(**digits.dims())
    batch = digits.fitness_batch(128)
    model = trained(spec, batch, 20)
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1, 1))
    k, seeds = 0, [4242, 17, 60001]
    assert not set(seeds) & set(model.layers[k].get_seeds())
    scores = ev._swap_scorer(k, "screen").screen(seeds)  # (3,)
    layer = ev.model.layers[k]
    scale = float(layer.alpha * layer.c)
    fixed = layer.generate()
    for seed, score in zip(seeds, scores.tolist()):
        phi = component_phi(fixed.f1, fixed.f2, layer.make_components([seed], "cpu")[seed])
        m = build_model(spec)
        for j, lay in enumerate(m.layers):
            lay.set_seeds(model.layers[j].get_seeds())
            lay.set_floats(model.layers[j].get_floats())
            lay.requires_grad_(False)
        t = torch.zeros((), requires_grad=True)  # the new component's unscaled rank scalar, at 0
        m.layers[k].probe = t * scale * phi
        m.loss(batch).backward()
        assert float(t.grad) == pytest.approx(scale * score, rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("mode", ["screen", "loss"])
def test_verified_swaps_equal_the_models_loss_mlp(digits, mode):
    spec = ModelSpec(hidden=(48, 32), rank=8).resolved(**digits.dims())
    batch = digits.fitness_batch(256)
    model = trained(spec, batch)
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1, 1, 1))
    with torch.no_grad():
        incumbent = float(model.loss(batch))
    found = 0
    for k in range(3):
        slots = tuple(
            SlotTask(slot=s, slot_gen=0, block=CandidateBlock(kind="range", start=1000 * s, count=256))
            for s in (0, 5)
        )
        res = ev.swap(SwapTask(layer=k, slots=slots, mode=mode, top_k=3), seed_bits=16)
        assert res.incumbent_loss == pytest.approx(incumbent, rel=1e-5)
        for sw in res.swaps:
            assert sw.verified == 3  # the layer's own seeds in the range are dropped, never screened
            assert (256 - 8 <= sw.screened <= 256) if mode == "screen" else sw.screened == 0
            if sw.seed is None:
                continue
            found += 1
            assert sw.loss < res.incumbent_loss and len(sw.slot_floats) == 1
            want = swapped_loss(spec, model, batch, k, sw.slot, sw.seed, sw.slot_floats)
            assert sw.loss == pytest.approx(want, rel=1e-4)
        assert ev.model.layers[k].get_seeds() == model.layers[k].get_seeds()  # restored
    if mode == "screen":
        assert found >= 1  # a trained rank-8 model: some screened component beats the weakest slots


def test_verified_swaps_equal_the_models_loss_lm():
    data = load_text_dataset()
    spec = ModelSpec(kind="lm", d_model=16, d_ff=32, n_blocks=1, rank=4, splits=(2,), context=16).resolved(
        **data.dims()
    )
    batch = data.fitness_batch(8, spec.context)
    model = trained(spec, batch, 15)
    ev = LayerEvaluator(spec, batch)
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1,) * len(model.layers))
    for k in (0, 2, 3):
        slots = (SlotTask(slot=1, slot_gen=0, block=CandidateBlock(kind="draw", start=k + 7, count=64)),)
        res = ev.swap(SwapTask(layer=k, slots=slots, top_k=2), seed_bits=16)
        sw = res.swaps[0]
        if sw.seed is not None:
            assert len(sw.slot_floats) == 1 + 2 and sw.slot_floats[1:] == (0.0, 0.0)
            want = swapped_loss(spec, model, batch, k, 1, sw.seed, sw.slot_floats)
            assert sw.loss == pytest.approx(want, rel=1e-4)


def test_swap_refuses_a_slot_outside_the_rank(digits):
    spec = ModelSpec(hidden=(16,), rank=2).resolved(**digits.dims())
    model = build_model(spec)
    ev = LayerEvaluator(spec, digits.fitness_batch(32))
    ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(1, 1))
    bad = SwapTask(
        layer=0, slots=(SlotTask(slot=2, slot_gen=0, block=CandidateBlock(kind="range", start=0, count=4)),)
    )
    with pytest.raises(SpecError, match="slot 2 is outside"):
        ev.swap(bad, 16)


def entry(rank, g, gens=None, seeds=None):
    seeds = seeds or tuple(range(100, 100 + rank)) + (1, 2, 3, 4)
    return LayerEntry(layer=0, seeds=seeds, floats=(1.0, 0.1, *g), gens=gens or ())


def test_proposer_ranges_are_disjoint_per_slot_state_and_resume():
    prop = SwapProposer(SwapConfig(candidates=1000, slots_per_call=1), layer=0, rank=4, seed_bits=8)
    e = entry(4, (1.0, 0.1, 2.0, 3.0))
    seen = []
    for _ in range(3):  # the weakest slot (1) gets 256 values in ranges that never overlap
        task = prop.ask(e)
        assert task is not None and task.slots[0].slot == 1
        seen += expand_block(task.slots[0].block, 8).tolist()
        prop.tell(SwapResult(layer=0, versions=(), incumbent_loss=1.0, swaps=()), [])
        if len(seen) >= 256:
            break
    assert sorted(seen) == list(range(256))
    nxt = prop.ask(e)  # slot 1 is exhausted at its generation: the next weakest
    assert nxt.slots[0].slot == 0
    saved = prop.state_dict()
    again = SwapProposer(SwapConfig(candidates=1000), layer=0, rank=4, seed_bits=8)
    again.load_state_dict(saved)
    assert again.ask(e).slots[0].slot == 2  # resumed: slots 1 and 0 are not screened again
    # slot 1 changed (a swap was accepted): a new state, screened again
    e2 = entry(4, (1.0, 0.1, 2.0, 3.0), gens=(0, 1, 0, 0, 0, 0, 0, 0))
    assert again.ask(e2).slots[0].slot == 1
    with pytest.raises(SpecError, match="rank"):
        SwapProposer(SwapConfig(), layer=0, rank=5, seed_bits=8).load_state_dict(saved)


def test_proposer_round_robin_and_draws_for_wide_seeds():
    prop = SwapProposer(SwapConfig(slot_choice="round_robin", slots_per_call=2, candidates=8), 0, 3, 63)
    e = entry(3, (1.0, 1.0, 1.0))
    order = [tuple(s.slot for s in prop.ask(e).slots) for _ in range(3)]
    assert order == [(0, 1), (2, 0), (1, 2)]
    task = prop.ask(e)
    block = task.slots[0].block
    assert block.kind == "draw" and len(set(expand_block(block, 63))) == 8
    assert all(0 <= s < 2**63 for s in expand_block(block, 63))


def test_proposer_calls_are_cut_to_a_budget_limit():
    prop = SwapProposer(SwapConfig(candidates=1000, slots_per_call=2), layer=0, rank=4, seed_bits=16)
    e = entry(4, (1.0, 2.0, 3.0, 4.0))
    assert prop.call_size() == 2000
    task = prop.ask(e, limit=300)
    assert [s.block.count for s in task.slots] == [150, 150]
    assert prop.ask(e, limit=0) is None
    loss = SwapProposer(SwapConfig(mode="loss", top_k=3), layer=0, rank=4, seed_bits=16)
    assert loss.call_size() == 3 and loss.ask(e).slots[0].block.kind == "draw"


def test_a_stored_spec_round_trips_with_the_swap_search_on():
    from germinator_dist.config import JobSpec, parse_job_spec

    spec = parse_job_spec({"mode": "hybrid", "search": {"swap": {"candidates": 64}}})
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec  # every field set, all defaults


def test_proposer_skips_slots_with_a_call_in_flight():
    prop = SwapProposer(SwapConfig(candidates=64), layer=0, rank=4, seed_bits=16)
    e = entry(4, (1.0, 0.1, 2.0, 3.0))
    assert prop.ask(e).slots[0].slot == 1  # the weakest
    assert prop.ask(e, busy={1}).slots[0].slot == 0  # the next weakest while slot 1 has a call out
    assert prop.ask(e, busy={0, 1, 2, 3}) is None

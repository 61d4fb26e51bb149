"""The scale trainer's core: learning, non-finite steps, sync by version, the publish loop, bad configs."""

import math
import threading

import pytest
import torch

from germinator_dist.config import ModelSpec
from germinator_dist.core.data import load_digits_dataset, load_text_dataset, stdlib_text_files
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import CommitOutcome, JobState, LayerEntry, PublishOutcome, Snapshot
from germinator_dist.train.optimizers import lr_at
from germinator_dist.train.trainer import ScaleTrainer, TrainerConfig, load_trainer_config, run_trainer


@pytest.fixture(scope="module", autouse=True)
def eager_prng():
    """These layers are tiny: the eager generator (same bits) beats compiling the fused kernel first."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GERMINATOR_PRNG_COMPILE", "0")
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def spec(digits):
    return ModelSpec(hidden=(64,), rank=8).resolved(**digits.dims())


def make_trainer(spec, data, **cfg):
    cfg = {"lr": 0.03, "batch_size": 128, "steps_per_publish": 10, **cfg}
    return ScaleTrainer(spec, data, cfg, data.fitness_batch(512), seed=0)


class MemoryTable:
    """An in-memory stand-in for the seed table with its slot-level rules (docs/layout.md): a publish
    merges by slot generation, a whole-vector commit bumps the generations of the slots it changes."""

    def __init__(self, spec, job="j"):
        model = build_model(spec)
        self.job, self.state = job, JobState.RUNNING
        self.rows = [
            LayerEntry(layer=k, seeds=s, floats=f, gens=(0,) * len(s))
            for k, (s, f) in enumerate(zip(model.get_seeds(), model.get_floats()))
        ]
        self.published: list[tuple[int, int]] = []  # (layer, new version)
        self.before_publish = None  # hook: called with (layer) before each CAS

    def snapshot(self, job):
        return Snapshot(job=job, epoch=sum(r.version for r in self.rows), layers=tuple(self.rows))

    def get_state(self, job):
        return self.state

    def publish_floats(self, job, layer, floats, loss, gens):
        if self.before_publish is not None:
            self.before_publish(layer)
        if self.state.terminal:
            raise TableError(f"job {job!r} is {self.state}")
        row = self.rows[layer]
        r = row.rank
        if tuple(gens[r:]) != row.gens[r:]:
            return PublishOutcome(outcome=CommitOutcome.STALE, version=row.version)
        kept = tuple(k for k in range(r) if gens[k] != row.gens[k])
        merged = list(floats)
        for k in kept:  # the table keeps its own floats of swapped slots (g and every expert entry)
            for i in range(2 + k, len(merged), r):
                merged[i] = row.floats[i]
        self.rows[layer] = row.model_copy(
            update={"floats": tuple(merged), "loss": loss, "version": row.version + 1}
        )
        self.published.append((layer, row.version + 1))
        return PublishOutcome(outcome=CommitOutcome.ACCEPTED, kept=kept, version=row.version + 1)

    def commit_seeds(self, layer, seeds):
        """What a whole-vector search commit does: new seeds, their slots' generations + 1, version + 1."""
        row = self.rows[layer]
        gens = tuple(g + (a != b) for g, a, b in zip(row.gens, row.seeds, seeds))
        self.rows[layer] = row.model_copy(
            update={"seeds": tuple(seeds), "gens": gens, "version": row.version + 1}
        )

    def commit_swap(self, layer, slot, seed, g):
        """What a swap does: slot's seed and g (experts zero), its generation + 1, version + 1."""
        row = self.rows[layer]
        r = row.rank
        seeds, floats, gens = list(row.seeds), list(row.floats), list(row.gens)
        seeds[slot], gens[slot] = seed, gens[slot] + 1
        for i in range(2 + slot, len(floats), r):
            floats[i] = 0.0
        floats[2 + slot] = g
        self.rows[layer] = row.model_copy(
            update={
                "seeds": tuple(seeds),
                "floats": tuple(floats),
                "gens": tuple(gens),
                "version": row.version + 1,
            }
        )


# ---- learning -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "adopt"])
def test_both_optimizers_reduce_the_fitness_loss_on_digits(spec, digits, optimizer):
    trainer = make_trainer(spec, digits, optimizer=optimizer, lr=0.1)
    trainer.sync(MemoryTable(spec).snapshot("j"))
    before = trainer.fitness_loss()
    stats = trainer.train(80)
    after = trainer.fitness_loss()
    assert stats.steps == 80 and stats.skipped == 0 and math.isfinite(stats.loss)
    assert after < before - 0.15, (before, after)  # 20 floats in all: slow but steady
    val = trainer.validation()
    assert val.accuracy is not None and val.accuracy > 0.15 and val.bits_per_byte is None


def test_fitness_loss_is_the_evaluators_loss(spec, digits):
    from germinator_dist.search.evaluator import LayerEvaluator

    trainer = make_trainer(spec, digits, eval_batch_size=100)  # chunked: same mean
    table = MemoryTable(spec)
    trainer.sync(table.snapshot("j"))
    trainer.train(5)
    ev = LayerEvaluator(spec, digits.fitness_batch(512))
    ev.load_snapshot(trainer.model.get_seeds(), trainer.model.get_floats(), (1, 2))
    assert trainer.fitness_loss() == pytest.approx(ev.full_loss(), rel=1e-5)


def test_language_model_validation_reports_bits_per_byte():
    data = load_text_dataset(stdlib_text_files()[:2])
    lm = ModelSpec(kind="lm", d_model=16, d_ff=16, n_blocks=1, context=16, rank=4, splits=(2,))
    lm = lm.resolved(**data.dims())
    trainer = ScaleTrainer(lm, data, {"batch_size": 8, "val_limit": 16}, data.fitness_batch(8, 16))
    trainer.sync(MemoryTable(lm).snapshot("j"))
    assert trainer.train(2).steps == 2
    val = trainer.validation()
    assert val.bits_per_byte == pytest.approx(val.loss / math.log(2)) and val.accuracy is None
    assert len(trainer.proposals()) == len(trainer.model.layers)


# ---- non-finite losses, gradients and updates --------------------------------------------------------------


def test_nan_gradient_step_is_skipped_and_counted(spec, digits):
    trainer = make_trainer(spec, digits)
    floats = trainer.model.get_floats()
    hook = trainer.model.layers[0].alpha.register_hook(lambda g: g * float("nan"))
    stats = trainer.train(3)
    hook.remove()
    assert (stats.steps, stats.skipped) == (0, 3)
    assert trainer.model.get_floats() == floats
    assert trainer.train(1).steps == 1 and trainer.model.get_floats() != floats


def test_nan_and_inf_losses_are_skipped(spec, digits, monkeypatch):
    trainer = make_trainer(spec, digits)
    floats = trainer.model.get_floats()
    for bad in (float("nan"), float("inf")):
        monkeypatch.setattr(
            trainer.model, "loss", lambda batch, bad=bad: torch.tensor(bad, requires_grad=True)
        )
        stats = trainer.train(2)
        assert (stats.steps, stats.skipped) == (0, 2) and math.isnan(stats.loss)
    assert trainer.model.get_floats() == floats and trainer.skipped == 4


def test_non_finite_update_is_reverted(spec, digits):
    trainer = make_trainer(spec, digits)
    trainer.train(2)
    floats = trainer.model.get_floats()
    step = trainer.optimizer.step

    def poisoned():
        step()
        trainer.model.layers[1].g.data[0] = float("inf")

    trainer.optimizer.step = poisoned
    stats = trainer.train(1)
    assert (stats.steps, stats.skipped) == (0, 1)
    assert trainer.model.get_floats() == floats


def test_nothing_is_proposed_with_a_non_finite_fitness_loss(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)
    trainer.sync(table.snapshot("j"))
    layer = trainer.model.layers[0]
    layer.set_floats([3e38, *layer.get_floats()[1:]])  # finite floats, overflowing activations
    assert trainer.proposals() == [] and trainer.nonfinite_losses == 1
    assert not math.isfinite(trainer.last_fitness_loss)
    # the next sync goes back to the table's floats for every layer
    assert trainer.sync(table.snapshot("j")) == [0, 1]
    assert math.isfinite(trainer.fitness_loss())


# ---- sync, publish, reject ---------------------------------------------------------------------------------


def test_sync_reloads_only_changed_layers_and_resets_their_moments(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)
    assert trainer.sync(table.snapshot("j")) == [0, 1]
    assert trainer.sync(table.snapshot("j")) == []
    trainer.train(3)
    p0, p1 = trainer.layer_params[0], trainer.layer_params[1]
    assert all(trainer.optimizer.state[p] for p in p0 + p1)
    new_seeds = tuple(s ^ 1 for s in table.rows[1].seeds)
    table.commit_seeds(1, new_seeds)
    trainer.model.layers[1].cache["marker"] = "stale tensor"
    assert trainer.sync(table.snapshot("j")) == [1]
    assert trainer.model.layers[1].get_seeds() == new_seeds
    assert trainer.model.layers[1].get_floats() == table.rows[1].floats
    assert "marker" not in trainer.model.layers[1].cache  # the old seeds' tensors are dropped
    assert all(trainer.optimizer.state[p] for p in p0) and not any(p in trainer.optimizer.state for p in p1)


def test_sync_refuses_a_snapshot_that_does_not_fit(spec, digits):
    trainer = make_trainer(spec, digits)
    snap = MemoryTable(spec).snapshot("j")
    with pytest.raises(SpecError, match="snapshot.layers"):
        trainer.sync(snap.model_copy(update={"layers": snap.layers[:1]}))
    bad = snap.layers[1].model_copy(update={"floats": (1.0,), "version": 5})
    with pytest.raises(SpecError, match=r"snapshot.layers\[1\].floats"):
        trainer.sync(snap.model_copy(update={"layers": (snap.layers[0], bad)}))
    assert trainer._versions == [None, None]  # nothing was loaded


def test_proposals_carry_versions_and_published_or_rejected_layers_follow_the_table(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)
    with pytest.raises(RuntimeError, match="sync"):
        trainer.proposals()
    trainer.sync(table.snapshot("j"))
    assert trainer.proposals() == []  # nothing trained yet: the table already has these floats
    trainer.train(5)
    props = trainer.proposals()
    assert [(p.layer, p.expected_version) for p in props] == [(0, 0), (1, 0)]
    assert len({p.loss for p in props}) == 1 and math.isfinite(props[0].loss)
    table.commit_seeds(1, tuple(s ^ 2 for s in table.rows[1].seeds))  # the driver wins layer 1 meanwhile
    for p in props:
        res = table.publish_floats("j", p.layer, p.floats, p.loss, p.gens)
        if res.outcome == "accepted":
            trainer.published(p.layer, res.version)
        else:
            trainer.rejected(p.layer)
    assert table.rows[0].version == 1 and table.rows[1].version == 1
    assert trainer.sync(table.snapshot("j")) == [1]  # layer 0 is ours already; layer 1 is reloaded
    assert trainer.model.layers[1].get_seeds() == table.rows[1].seeds


def test_a_swapped_slot_is_loaded_alone_with_fresh_moments_and_kept_by_the_publish(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)
    trainer.sync(table.snapshot("j"))
    trainer.train(10)  # Adam moments exist for every float
    layer = trainer.model.layers[0]
    ours = layer.get_floats()
    new_seed = max(table.rows[0].seeds[: layer.rank]) + 1
    props = trainer.proposals()
    table.commit_swap(0, slot=3, seed=new_seed, g=-0.7)  # the search swaps slot 3 meanwhile
    res = table.publish_floats("j", 0, props[0].floats, props[0].loss, props[0].gens)
    assert res.outcome == "accepted" and res.kept == (3,)
    assert table.rows[0].floats[2 + 3] == pytest.approx(-0.7)  # the swap's g survived the publish
    trainer.published(0, res.version)
    assert trainer.sync(table.snapshot("j")) == [0]
    assert trainer.slot_reloads == 1
    assert layer.get_seeds()[3] == new_seed and float(layer.g[3]) == pytest.approx(-0.7)
    got = layer.get_floats()
    assert got[:5] == ours[:5] and got[6:] == ours[6:]  # alpha, beta and every other slot: still ours
    state = trainer.optimizer.state[layer.g]
    others = [0, 1, 2, *range(4, layer.rank)]
    assert float(state["exp_avg"][3]) == 0.0  # a fresh first moment ...
    # ... and the peers' mean second moment: a zero one would make the next steps many times lr
    assert float(state["exp_avg_sq"][3]) == pytest.approx(float(state["exp_avg_sq"][others].mean()))
    assert float(state["exp_avg"].abs().sum()) > 0  # the other slots keep their moments
    g_before = float(layer.g[3])
    trainer.train(1)
    assert abs(float(layer.g[3]) - g_before) <= 3 * trainer.config.lr  # no oversized first step
    trainer.train(3)
    assert trainer.proposals()[0].gens == table.rows[0].gens  # trained against the swapped slot now


# ---- the loop ---------------------------------------------------------------------------------------------


def test_loop_publishes_every_round_until_the_step_budget_ends(spec, digits):
    trainer = make_trainer(spec, digits, total_steps=25, schedule="cosine")
    table = MemoryTable(spec)
    seen = []
    result = run_trainer(trainer, table, "j", on_round=seen.append)
    assert result.stop_reason == "budget" and result.rounds == 3 and trainer.step_count == 25
    assert result.accepted == 6 and result.stale == 0 and result.reloaded == 2
    assert [r.version for r in table.rows] == [3, 3]
    assert table.rows[0].loss == pytest.approx(result.fitness_loss)
    assert [r.rounds for r in seen] == [1, 2, 3] and result.validation is not None
    assert result.lr == pytest.approx(lr_at(trainer.config, 24))


def test_loop_reloads_a_layer_the_search_changed_and_never_overwrites_its_seeds(spec, digits):
    trainer = make_trainer(spec, digits, total_steps=30)
    table = MemoryTable(spec)
    driver_seeds = tuple(s ^ 5 for s in table.rows[1].seeds)

    def driver_commits_once(layer):
        if layer == 1 and table.rows[1].seeds != driver_seeds:
            table.commit_seeds(1, driver_seeds)

    table.before_publish = driver_commits_once
    result = run_trainer(trainer, table, "j")
    assert result.stale == 1 and result.accepted == 5 and result.reloaded == 3
    assert table.rows[1].seeds == driver_seeds == trainer.model.layers[1].get_seeds()


def test_a_cancelled_job_stops_the_loop(spec, digits):
    trainer = make_trainer(spec, digits)  # no step budget: only the job's state ends it
    table = MemoryTable(spec)

    def cancel_after_two(progress):
        if progress.rounds == 2:
            table.state = JobState.CANCELLED

    result = run_trainer(trainer, table, "j", on_round=cancel_after_two)
    assert result.stop_reason == "cancelled" and result.rounds == 2 and trainer.step_count == 20


def test_a_job_that_ends_during_a_round_gets_nothing_published(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)
    calls = []

    def state(job):
        calls.append(job)
        return JobState.RUNNING if len(calls) < 2 else JobState.SUCCEEDED

    table.get_state = state
    result = run_trainer(trainer, table, "j")
    assert result.stop_reason == "succeeded" and result.rounds == 1 and table.published == []


def test_a_job_cancelled_between_check_and_publish_stops_cleanly(spec, digits):
    trainer = make_trainer(spec, digits)
    table = MemoryTable(spec)

    def cancel(layer):
        table.state = JobState.CANCELLED

    table.before_publish = cancel
    result = run_trainer(trainer, table, "j")
    assert result.stop_reason == "cancelled" and table.published == []


def test_stop_event_and_wall_clock_budget_end_the_loop(spec, digits):
    stop = threading.Event()
    stop.set()
    assert run_trainer(make_trainer(spec, digits), MemoryTable(spec), "j", stop).stop_reason == "stopped"
    now = [0.0]

    def clock():
        now[0] += 1.0  # one second per reading
        return now[0]

    trainer = ScaleTrainer(
        spec, digits, {"budget_s": 12, "steps_per_publish": 5}, digits.fitness_batch(64), clock=clock
    )
    result = run_trainer(trainer, MemoryTable(spec), "j")
    assert result.stop_reason == "budget" and 0 < trainer.step_count < 12


def test_seed_first_delay_keeps_the_trainer_off_the_table_then_trains(spec, digits):
    import time

    trainer = make_trainer(spec, digits, start_delay_s=0.6, total_steps=20)
    table = MemoryTable(spec)
    searched = (*range(9, 9 + spec.rank), 9, 9, 9, 9)
    first_publish = []
    table.before_publish = lambda layer: first_publish.append(time.monotonic()) if not first_publish else None
    threading.Timer(0.2, table.commit_seeds, (0, searched)).start()  # the search commits during the wait
    t0 = time.monotonic()
    result = run_trainer(trainer, table, "j")
    assert first_publish and first_publish[0] - t0 >= 0.6
    assert result.stop_reason == "budget" and result.accepted == 4  # 2 rounds x 2 layers
    assert trainer.model.layers[0].get_seeds() == searched == table.rows[0].seeds  # trained from them


def test_a_job_cancelled_during_the_delay_returns_at_once_with_nothing_published(spec, digits):
    import time

    trainer = make_trainer(spec, digits, start_delay_s=30)
    table = MemoryTable(spec)
    threading.Timer(0.3, lambda: setattr(table, "state", JobState.CANCELLED)).start()
    t0 = time.monotonic()
    result = run_trainer(trainer, table, "j")
    assert result.stop_reason == "cancelled" and time.monotonic() - t0 < 5
    assert table.published == [] and trainer.step_count == 0


# ---- config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"optimizer": "sgd"}, "trainer.optimizer"),
        ({"lr": 0}, "trainer.lr"),
        ({"lr": 11}, "trainer.lr"),
        ({"lr": float("nan")}, "trainer.lr"),
        ({"lr": True}, "trainer.lr"),
        ({"steps_per_publish": 0}, "trainer.steps_per_publish"),
        ({"total_steps": -5}, "trainer.total_steps"),
        ({"total_steps": 2.5}, "trainer.total_steps"),
        ({"budget_s": float("inf")}, "trainer.budget_s"),
        ({"start_delay_s": -1}, "trainer.start_delay_s"),
        ({"betas": [0.9, 1.0]}, "trainer.betas.1"),
        ({"grad_clip": 0}, "trainer.grad_clip"),
        ({"batch_size": 0}, "trainer.batch_size"),
        ({"schedule": "cosine"}, "trainer.schedule"),
        ({"schedule": "step"}, "trainer.schedule"),
        ({"warmup_steps": 5}, "trainer.warmup_steps"),
        ({"schedule": "linear_warmup_cosine", "total_steps": 5, "warmup_steps": 5}, "trainer.warmup_steps"),
        ({"min_lr_ratio": 2}, "trainer.min_lr_ratio"),
        ({"lr_max": 1}, "trainer.lr_max"),
    ],
)
def test_invalid_config_is_refused_with_the_field_named(bad, field):
    with pytest.raises(SpecError) as err:
        load_trainer_config(bad)
    msg = str(err.value)
    assert msg.startswith(field + ":") and "value" in msg and "\n" not in msg, msg


def test_config_defaults_and_schedule():
    assert load_trainer_config(None) == TrainerConfig()
    with pytest.raises(SpecError, match="trainer: expected a mapping"):
        load_trainer_config([1])
    c = load_trainer_config(
        {"lr": 1.0, "schedule": "linear_warmup_cosine", "total_steps": 110, "warmup_steps": 10}
    )
    assert [lr_at(c, s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(c, 60) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_at(c, 110) == pytest.approx(0.05) and lr_at(c, 500) == pytest.approx(0.05)
    timed = load_trainer_config({"lr": 1.0, "schedule": "cosine", "budget_s": 10, "min_lr_ratio": 0})
    assert lr_at(timed, 0, 5.0) == pytest.approx(0.5) and lr_at(timed, 0, 20.0) == pytest.approx(0.0)

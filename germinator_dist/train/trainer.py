"""The scale trainer's core: gradient steps on every layer's float scalars with the seeds fixed.

``ScaleTrainer`` holds one model and follows the seed table through three calls a wrapper makes in turn:
``sync(snapshot)`` (load layers whose version moved), ``train(n)`` (Adam or ADOPT, LR schedule, gradient
clipping; a step with a non-finite loss, gradient or update is skipped and counted) and ``proposals()``
(each layer's floats with the version they were trained against, and the fitness loss: the table's loss).
The wrapper offers each proposal as a compare-and-set and reports back with ``published``/``rejected``.

``run_trainer`` is that loop against any ``FloatTable`` (table_protocol.py; the Redis table fits it); the
Ray actor only constructs the trainer and calls it. Pure core: torch and pydantic, never ray or redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from germinator_dist.config import ModelSpec, TrainerConfig, load_trainer_config
from germinator_dist.core.data import Dataset
from germinator_dist.core.model import Batch, GerminatorModel, build_model
from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import (
    CommitOutcome,
    FloatPublication,
    JobState,
    Snapshot,
    TrainerProgress,
    TrainStats,
    Validation,
)
from germinator_dist.table_protocol import FloatTable
from germinator_dist.train.optimizers import lr_at, make_optimizer


class ScaleTrainer:
    """Trains every layer's floats with the seeds fixed, against versions of the seed table.

    Raises SpecError for a spec that does not fit the data, or a bad config.
    """

    def __init__(
        self,
        spec: ModelSpec,
        dataset: Dataset,
        config: TrainerConfig | dict | None,  # a dict is checked by load_trainer_config
        fitness_batch: Batch,
        device: str | torch.device = "cpu",
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (spec.kind == "lm") != (dataset.kind == "text"):
            raise SpecError(
                f"model.kind: {spec.kind!r} does not fit {dataset.kind} data (value {spec.kind!r})"
            )
        self.spec, self.dataset, self.config = spec, dataset, load_trainer_config(config)
        self.device = torch.device(device)
        self.model: GerminatorModel = build_model(spec).to(self.device)
        self.model.set_cache(True)  # fixed seeds: their generated tensors are reused across steps
        self.fitness_batch = fitness_batch.to(self.device)
        n = len(self.model.layers)
        self.layer_params = [[p for p in layer.parameters() if p.numel()] for layer in self.model.layers]
        self.params = [p for ps in self.layer_params for p in ps]
        self.optimizer = make_optimizer(self.config, self.params)
        self._gen = torch.Generator().manual_seed(seed)
        self._clock, self._t0 = clock, None
        self._versions: list[int | None] = [None] * n  # the table version each layer's floats stem from
        self._gens: list[tuple[int, ...] | None] = [None] * n  # the slot generations they were trained on
        self.slot_reloads = 0  # component slots loaded from the table after a swap (their moments reset)
        self._table_floats: list[tuple[float, ...] | None] = [None] * n  # the floats the table holds then
        self._force: set[int] = set()  # layers to reload at the next sync whatever their version
        self.step_count = 0  # steps attempted (the schedule's and total_steps' clock)
        self.applied = self.skipped = self.nonfinite_losses = 0
        self.last_fitness_loss = math.nan
        self._proposed: dict[int, tuple[float, ...]] = {}  # the floats of the last proposals, by layer

    # ---- budget -------------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return 0.0 if self._t0 is None else self._clock() - self._t0

    @property
    def done(self) -> bool:
        """True when total_steps or budget_s is used up."""
        c = self.config
        return (c.total_steps is not None and self.step_count >= c.total_steps) or (
            c.budget_s is not None and self.elapsed >= c.budget_s
        )

    def round_steps(self) -> int:
        """Steps for the next round: steps_per_publish, fewer when total_steps is nearly used up."""
        c = self.config
        left = math.inf if c.total_steps is None else c.total_steps - self.step_count
        return int(max(0, min(c.steps_per_publish, left)))

    # ---- table side ---------------------------------------------------------------------------------
    def sync(self, snapshot: Snapshot) -> list[int]:
        """Follow the table (docs/layout.md). A layer seen for the first time, rejected since, or whose layer
        seeds (mask, scale, shift, bias) changed is loaded whole and its optimizer state reset. A layer
        whose component slots were swapped loads only those slots (seed, g_k and the slot's expert entries)
        and resets only their moments; the trainer's own floats of the other slots stay. Returns the layers
        that changed. Raises SpecError (checked before any change) if the snapshot does not fit the model."""
        layers = self.model.layers
        if len(snapshot.layers) != len(layers):
            raise SpecError(
                f"snapshot.layers: job {snapshot.job!r} has {len(snapshot.layers)} layers, the model "
                f"{len(layers)} (value {len(snapshot.layers)})"
            )
        for k, e in enumerate(snapshot.layers):
            if e.layer != k:
                raise SpecError(f"snapshot.layers: position {k} holds layer {e.layer} (value {e.layer})")
        todo = [
            e
            for k, e in enumerate(snapshot.layers)
            if k in self._force or self._versions[k] != e.version or self._gens[k] != e.generations
        ]
        for e in todo:
            layer = layers[e.layer]
            if len(e.floats) != layer.num_floats or not all(math.isfinite(v) for v in e.floats):
                raise SpecError(
                    f"snapshot.layers[{e.layer}].floats: expected {layer.num_floats} finite floats "
                    f"(value {len(e.floats)} floats)"
                )
            if len(e.seeds) != layer.n_seeds or any(s >= 1 << layer.seed_bits for s in e.seeds):
                raise SpecError(
                    f"snapshot.layers[{e.layer}].seeds: expected {layer.n_seeds} seeds in "
                    f"[0, 2**{layer.seed_bits}) (value {list(e.seeds)})"
                )
        changed = []
        for e in todo:
            k, layer, r = e.layer, layers[e.layer], layers[e.layer].rank
            old = self._gens[k]
            whole = k in self._force or old is None or old[r:] != e.generations[r:]
            slots = [] if whole else [j for j in range(r) if old[j] != e.generations[j]]
            if slots and not self._floats_kept(k, e, slots):  # a whole-vector commit brought floats too
                whole, slots = True, []
            if whole:
                if tuple(e.seeds) != layer.get_seeds():
                    layer.set_seeds(e.seeds)
                    layer.cache = {}  # drop the old seeds' tensors
                layer.set_floats(e.floats)
                for p in self.layer_params[k]:
                    self.optimizer.state.pop(p, None)  # fresh moments for new floats
                self._table_floats[k] = tuple(layer.get_floats())
            elif slots:
                self._load_slots(k, e, slots)
            self._versions[k], self._gens[k] = e.version, e.generations
            if whole or slots:
                changed.append(k)
        self._force.clear()
        return changed

    def _floats_kept(self, k: int, e, slots: list[int]) -> bool:
        """Whether row ``e`` holds, outside ``slots``, the floats the table had when we last saw it (a swap
        changes only its slot's floats; a whole-vector seed commit may bring floats of its own)."""
        known = self._table_floats[k]
        if known is None or len(known) != len(e.floats):
            return False
        r = self.model.layers[k].rank
        own = {i for j in slots for i in range(2 + j, len(known), r)}  # g[j] and its expert entries
        return all(a == b for i, (a, b) in enumerate(zip(known, e.floats)) if i not in own)

    def _load_slots(self, k: int, e, slots: list[int]) -> None:
        """Take component ``slots`` of layer k from the table row ``e`` (swapped there) and restart their
        optimizer moments: first moment 0, second moment the mean of the layer's other entries (a zero
        second moment would make the slot's first steps many times the learning rate); everything else of
        the layer stays as trained here."""
        layer, r = self.model.layers[k], self.model.layers[k].rank
        seeds = list(layer.get_seeds())
        dropped = [seeds[j] for j in slots]
        for j in slots:
            seeds[j] = e.seeds[j]
        layer.set_seeds(seeds)  # the generated tensors of kept components stay in the cache
        if layer.cache is not None:  # forget the swapped-out components
            for key in [key for key in layer.cache if key[0] == "comp" and key[1] in dropped]:
                del layer.cache[key]
        experts = torch.tensor(e.floats[2 + r :], dtype=torch.float32).reshape(-1, r)  # (sum e, r)
        with torch.no_grad():
            for j in slots:
                layer.g[j] = e.floats[2 + j]
                layer.experts[:, j] = experts[:, j].to(layer.experts.device)
        others = [j for j in range(r) if j not in slots]
        for p in (layer.g, layer.experts):
            for name, value in self.optimizer.state.get(p, {}).items():
                if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                    continue
                if "sq" in name and others:  # (r,) or (sum e, r): the slots' columns
                    value[..., slots] = value[..., others].mean()
                else:
                    value[..., slots] = 0
        self._table_floats[k] = tuple(e.floats)
        self.slot_reloads += len(slots)

    def published(self, layer: int, new_version: int) -> None:
        """The table accepted this layer's proposal and is now at ``new_version`` (with our floats for every
        slot it did not keep; kept slots are loaded by the next sync, which sees their generations)."""
        self._versions[layer] = new_version
        self._table_floats[layer] = self._proposed.get(layer, self._table_floats[layer])

    def rejected(self, layer: int) -> None:
        """The table refused this layer's proposal: reload it from the table at the next sync."""
        self._force.add(layer)

    # ---- training -----------------------------------------------------------------------------------
    def train(self, n_steps: int) -> TrainStats:
        """Up to ``n_steps`` steps (fewer when the budget ends). Raises ValueError for n_steps < 0."""
        if n_steps < 0:
            raise ValueError(f"n_steps: expected >= 0, got {n_steps}")
        t0 = time.perf_counter()
        if self._t0 is None:
            self._t0 = self._clock()
        applied = skipped = 0
        loss = math.nan
        lr = lr_at(self.config, self.step_count, self.elapsed)
        for _ in range(n_steps):
            if self.done:
                break
            lr = lr_at(self.config, self.step_count, self.elapsed)
            step_loss = self._step(lr)
            self.step_count += 1
            if step_loss is None:
                skipped += 1
            else:
                applied, loss = applied + 1, step_loss
        self.applied += applied
        self.skipped += skipped
        return TrainStats(steps=applied, skipped=skipped, loss=loss, lr=lr, seconds=time.perf_counter() - t0)

    def _step(self, lr: float) -> float | None:
        """One step; the minibatch loss, or None when skipped (nothing changed)."""
        batch = self.dataset.train_batch(self.config.batch_size, self.spec.context, self._gen).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.loss(batch)  # () mean cross-entropy
        if loss.requires_grad:
            loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = get_total_norm(grads) if grads else torch.zeros((), device=self.device)  # ()
        if not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.config.grad_clip is not None:
            clip_grads_with_norm_(self.params, self.config.grad_clip, norm)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        before = [p.detach().clone() for p in self.params]
        self.optimizer.step()
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            with torch.no_grad():
                for p, b in zip(self.params, before):
                    p.copy_(b)
            self.optimizer.state.clear()  # the moments are poisoned too
            return None
        return float(loss.detach())

    # ---- measurements -------------------------------------------------------------------------------
    @torch.no_grad()
    def _mean_loss(self, batches) -> tuple[float, int, int]:
        """Mean cross-entropy (nats) over batches, with the count of targets and of correct argmaxes."""
        total, count, correct = 0.0, 0, 0
        for b in batches:
            logits = self.model(b.inputs.to(self.device))  # (B, C) or (B, T, V)
            y = b.targets.to(self.device)
            total += float(self.model.loss_from_logits(logits, y)) * y.numel()
            count += y.numel()
            correct += int((logits.argmax(-1) == y).sum())
        return (total / count if count else math.nan), count, correct

    def _chunks(self, batch: Batch, limit: int | None = None):
        n = len(batch) if limit is None else min(limit, len(batch))
        size = self.config.eval_batch_size
        for a in range(0, n, size):
            yield Batch(batch.inputs[a : min(a + size, n)], batch.targets[a : min(a + size, n)])

    def fitness_loss(self) -> float:
        """The table's loss: the full model's mean cross-entropy (nats) on the fitness batch, no grad."""
        self.last_fitness_loss = self._mean_loss(self._chunks(self.fitness_batch))[0]
        return self.last_fitness_loss

    def validation(self) -> Validation:
        """Held-out loss on the validation split carved from the training data (never the test split):
        with accuracy for a classifier, bits/byte for an LM."""
        c = self.config
        if self.dataset.kind == "text":
            batches = self.dataset.test_batches(
                c.eval_batch_size, self.spec.context, limit=c.val_limit, split="validation"
            )
            loss, _, _ = self._mean_loss(batches)
            return Validation(loss=loss, bits_per_byte=loss / math.log(2))
        x, y = self.dataset.split("validation")
        loss, count, correct = self._mean_loss(self._chunks(Batch(x, y), c.val_limit))
        return Validation(loss=loss, accuracy=correct / count if count else math.nan)

    def validation_loss(self) -> float:
        return self.validation().loss

    def proposals(self) -> list[FloatPublication]:
        """Each layer's floats (those changed since the table last had them) with the version they were
        trained against, and the fitness loss. A non-finite loss proposes nothing, is counted, and makes
        the next sync reload every layer. Raises RuntimeError before the first sync."""
        if any(v is None for v in self._versions):
            raise RuntimeError("ScaleTrainer.proposals: call sync(snapshot) first")
        loss = self.fitness_loss()
        floats = [tuple(layer.get_floats()) for layer in self.model.layers]
        if not math.isfinite(loss) or not all(math.isfinite(v) for fl in floats for v in fl):
            self.nonfinite_losses += 1
            self._force.update(range(len(floats)))
            return []
        out = [
            FloatPublication(
                layer=k, expected_version=self._versions[k], floats=fl, loss=loss, gens=self._gens[k]
            )
            for k, fl in enumerate(floats)
            if k not in self._force and fl != self._table_floats[k]
        ]
        self._proposed = {p.layer: p.floats for p in out}
        return out


StopSignal = Callable[[], bool] | object | None  # a callable, or anything with is_set() (threading.Event)


def _stopped(stop: StopSignal) -> bool:
    if stop is None:
        return False
    return bool(stop.is_set()) if hasattr(stop, "is_set") else bool(stop())


def run_trainer(
    trainer: ScaleTrainer,
    table: FloatTable,
    job: str,
    stop: StopSignal = None,
    *,
    on_round: Callable[[TrainerProgress], None] | None = None,
    validate_every: int = 1,
) -> TrainerProgress:
    """After ``start_delay_s``, loop sync -> train(steps_per_publish) -> publish until the job is terminal,
    ``stop`` is set or the budget is used up; returns the totals (``stop_reason`` says why it ended). After
    every round ``on_round`` gets the totals (heartbeat/progress hook). A job found terminal after a round
    publishes nothing. Raises what the table raises (a TableError only when the job is still live)."""
    t0 = time.perf_counter()
    n = dict(rounds=0, accepted=0, stale=0, not_better=0, reloaded=0)
    field = {
        CommitOutcome.ACCEPTED: "accepted",
        CommitOutcome.STALE: "stale",
        CommitOutcome.NOT_BETTER: "not_better",
    }
    validation, stats, reason = None, None, ""

    def totals(reason: str = "") -> TrainerProgress:
        return TrainerProgress(
            **n,
            steps=trainer.applied,
            skipped_steps=trainer.skipped,
            nonfinite_losses=trainer.nonfinite_losses,
            train_loss=stats.loss if stats else math.nan,
            fitness_loss=trainer.last_fitness_loss,
            lr=stats.lr if stats else 0.0,
            validation=validation,
            seconds=time.perf_counter() - t0,
            stop_reason=reason,
        )

    def terminal() -> str:
        state = JobState(table.get_state(job))
        return state.value.lower() if state.terminal else ""

    wait_until = time.monotonic() + trainer.config.start_delay_s
    while (left := wait_until - time.monotonic()) > 0:  # seed first: the search has the table to itself
        if reason := terminal() or ("stopped" if _stopped(stop) else ""):
            return totals(reason)
        time.sleep(min(0.2, left))
    while True:
        reason = terminal() or ("stopped" if _stopped(stop) else "") or ("budget" if trainer.done else "")
        if reason:
            break
        n["reloaded"] += len(trainer.sync(table.snapshot(job)))
        stats = trainer.train(trainer.round_steps())
        proposals = trainer.proposals()
        if n["rounds"] % max(1, validate_every) == 0:
            validation = trainer.validation()
        n["rounds"] += 1
        reason = terminal()  # a job that ended meanwhile gets nothing more
        for p in [] if reason else proposals:
            try:
                res = table.publish_floats(job, p.layer, p.floats, p.loss, p.gens)
            except TableError:
                if reason := terminal():
                    break
                raise
            outcome = CommitOutcome(res.outcome)
            n[field.get(outcome, "stale")] += 1
            if outcome is CommitOutcome.ACCEPTED:
                trainer.published(p.layer, res.version)
            else:
                trainer.rejected(p.layer)
        if reason:
            break
        if on_round is not None:
            on_round(totals())
    return totals(reason)

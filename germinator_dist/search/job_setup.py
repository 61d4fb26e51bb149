"""Job lifecycle helpers shared by the CLI, the Ray job runner and the tests (no Ray, no Redis imports).

They work with any object that has SeedTable's methods.
"""

from __future__ import annotations

import math

from germinator_dist.config import JobSpec
from germinator_dist.core import prng
from germinator_dist.core.data import load_dataset
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError
from germinator_dist.records import LayerEntry
from germinator_dist.search.evaluator import LayerEvaluator


def resolve_job(spec: JobSpec):
    """Load the data and fill in the model dimensions it determines. Returns (spec, dataset)."""
    dataset = load_dataset(spec.data)
    model = spec.model.resolved(**dataset.dims())
    model.require_resolved()
    n_layers = len(model.layer_shapes())
    layers = spec.search.layers or ()
    for k in layers:
        if k >= n_layers:
            raise SpecError(
                f"search.layers: the model has layers 0..{n_layers - 1}, there is no layer {k} "
                f"(value {list(layers)})"
            )
    if len(set(layers)) != len(layers):
        raise SpecError(f"search.layers: a layer is named twice (value {list(layers)})")
    return spec.model_copy(update={"model": model}), dataset


def fitness_batch(spec: JobSpec, dataset):
    """The fixed batch the table's loss is defined on (same for every evaluator and the trainer)."""
    f = spec.fitness
    return dataset.fitness_batch(f.batch_size, spec.model.context, f.seed, f.split)


def create_job(
    table, spec: JobSpec, *, resume: bool = False, lease: tuple[str, float] | None = None
) -> tuple[JobSpec, object]:
    """Resolve the spec against its data, and write the job (spec and initial layer rows) to the table.

    The initial rows hold the spec's initial seeds and floats with their measured loss. ``lease`` =
    (owner, ttl seconds): the new job's driver lease, taken in the same write. Returns the resolved spec
    (with its job id) and the dataset. Raises SpecError, TableError (existing id).
    """
    spec, dataset = resolve_job(spec.with_id())
    model = build_model(spec.model)
    with prng.eager():  # one forward pass: compiling the generator kernel would cost ~10 s here
        ev = LayerEvaluator(spec.model, fitness_batch(spec, dataset))
        ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(0,) * len(model.layers))
        loss = ev.full_loss()
    if not math.isfinite(loss):
        raise SpecError(f"model: the initial model's loss is not finite ({loss}); check the data scale")
    rows = [
        LayerEntry(layer=k, seeds=s, floats=f, loss=loss, version=0, writer="init")
        for k, (s, f) in enumerate(zip(model.get_seeds(), model.get_floats()))
    ]
    table.create_job(
        spec.job,
        spec.model_dump_json(),
        rows,
        spec.workers.initial_count,
        resume=resume,
        seed_bits=spec.model.seed_bits,
        lease=lease,
    )
    return spec, dataset


def model_from_snapshot(spec: JobSpec, snap):
    """A model holding the table's current seeds and floats."""
    model = build_model(spec.model)
    for k, e in enumerate(snap.layers):
        model.set_layer(k, seeds=e.seeds, floats=e.floats)
    return model

"""One job's lifecycle, the parts without Ray or Redis (docs/architecture.md, "One job, from submit to
commit").

1. ``register_job`` (the client, ``submit``): the spec, checked (``check_job_spec``), goes to the table as a
   PENDING job with no rows; nothing is loaded, so the client needs no access to the data.
2. ``prepare_job`` (the runner, on the cluster, as the holder of the job's driver lease): loads the data
   once, fills in the dimensions it determines, measures the initial model's loss on the fitness batch and
   writes the initial rows with the resolved spec (``SeedTable.init_rows``). A resumed job has its rows
   already: they are kept, and the data must still give the model the stored dimensions.

``create_job`` does both in one process (tests, benchmarks, in-process jobs). Every function works on any
table with ``table_protocol.JobRegistry``'s methods.
"""

from __future__ import annotations

import math
import uuid

from pydantic import ValidationError

from germinator_dist.config import JobSpec, format_validation_error
from germinator_dist.core import prng
from germinator_dist.core.data import Dataset, load_dataset
from germinator_dist.core.model import build_model
from germinator_dist.errors import SpecError, TableError
from germinator_dist.records import LayerEntry
from germinator_dist.search.evaluator import LayerEvaluator
from germinator_dist.table_protocol import JobRegistry


def check_job_spec(spec: JobSpec) -> JobSpec:
    """What the search checks in a spec on top of ``config.parse_job_spec``: the proposer's name and
    settings, ``search.slots`` and the rank against the seed width (every layer has the model's rank, so
    one check covers them). Builds no proposer, loads no data. Returns ``spec``. Raises SpecError naming
    ``search.<field>`` or ``model.<field>`` and the value."""
    if spec.mode == "train":
        return spec
    from germinator_dist.search.proposers import check_proposer, proposer_fields

    try:
        check_proposer(spec.search.proposer, **proposer_fields(spec, layer_seeds=None))
    except SpecError as exc:
        named = str(exc).startswith(("search.", "model."))
        raise SpecError(str(exc) if named else f"search.{exc}") from None
    return spec


def stored_spec(table: JobRegistry, job: str) -> JobSpec:
    """The job's spec as stored in the table. Raises TableError naming the job and the bad field."""
    raw = table.get_spec(job)
    try:
        return JobSpec.model_validate_json(raw)
    except ValidationError as exc:
        first = format_validation_error(exc).splitlines()[0]
        raise TableError(f"job {job}: the stored spec is not a valid job spec: {first}") from None
    except RecursionError:
        raise TableError(f"job {job}: the stored spec is nested too deeply") from None


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


def initial_rows(spec: JobSpec, dataset: Dataset) -> list[LayerEntry]:
    """The initial model's rows: the spec's initial seeds and floats, each layer with the model's loss on the
    fitness batch. ``spec`` must be resolved. Raises SpecError when that loss is not finite."""
    model = build_model(spec.model)
    with prng.eager():  # one forward pass: compiling the generator kernel would cost ~10 s here
        ev = LayerEvaluator(spec.model, fitness_batch(spec, dataset))
        ev.load_snapshot(model.get_seeds(), model.get_floats(), versions=(0,) * len(model.layers))
        loss = ev.full_loss()
    if not math.isfinite(loss):
        raise SpecError(f"model: the initial model's loss is not finite ({loss}); check the data scale")
    return [
        LayerEntry(layer=k, seeds=s, floats=f, loss=loss, version=0, writer="init")
        for k, (s, f) in enumerate(zip(model.get_seeds(), model.get_floats()))
    ]


def register_job(table: JobRegistry, spec: JobSpec, *, lease: tuple[str, float] | None = None) -> JobSpec:
    """Write the job to the table as PENDING with its spec and no rows; loads no data. ``lease`` = (owner,
    ttl seconds): the job's driver lease, taken in the same write. Returns the spec with its job id.
    Raises SpecError, TableError (the id exists)."""
    spec = check_job_spec(spec).with_id()
    table.create_job(
        spec.job,
        spec.model_dump_json(),
        (),
        spec.workers.initial_count,
        seed_bits=spec.model.seed_bits,
        lease=lease,
    )
    return spec


def prepare_job(table: JobRegistry, job: str, owner: str) -> tuple[JobSpec, Dataset]:
    """The runner's first step, as the holder ``owner`` of the job's driver lease: load the data once,
    resolve the stored spec against it and, for a job without rows, measure and write its initial rows
    (``init_rows``, with the resolved spec). Returns (the resolved spec, the dataset).

    Raises SpecError (data that cannot be loaded, a searched layer the model lacks, data whose dimensions
    differ from the stored model's: ``model.input_dim: spec says 64 but the data has 65``), TableError.
    """
    spec, dataset = resolve_job(stored_spec(table, job))
    if table.job_info(job).n_layers == 0:
        table.init_rows(job, owner, spec.model_dump_json(), initial_rows(spec, dataset))
    return spec, dataset


def create_job(table: JobRegistry, spec: JobSpec) -> tuple[JobSpec, Dataset]:
    """Register the job and write its initial rows in this process: ``register_job`` then ``prepare_job``
    under a short-lived lease of its own, given back at the end. Returns (the resolved spec, the
    dataset). When preparing fails (the data, the layers) the job is deleted again: nothing is left.
    Raises SpecError, TableError (an existing id)."""
    owner = f"setup-{uuid.uuid4().hex[:12]}"
    spec = register_job(table, spec, lease=(owner, 300.0))
    try:
        prepared = prepare_job(table, spec.job, owner)
    except BaseException:
        table.delete_job(spec.job, owner=owner)
        raise
    table.release_lease(spec.job, owner)
    return prepared


def model_from_snapshot(spec: JobSpec, snap):
    """A model holding the table's current seeds and floats."""
    model = build_model(spec.model)
    for k, e in enumerate(snap.layers):
        model.set_layer(k, seeds=e.seeds, floats=e.floats)
    return model

"""Specs, data and checkpoints that validate but cannot run, or imply huge allocations, are refused up front
with one line naming the field and value (docs/security.md, "Sizes"); malformed files never end in a
traceback."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

from germinator_dist import config as bounds
from germinator_dist.config import (
    MAX_SPEC_BYTES,
    MAX_YAML_NODES,
    ModelSpec,
    load_job_spec,
    load_model_spec,
    parse_job_spec,
)
from germinator_dist.core.checkpoint import _digest, checkpoint_dict, load_checkpoint, save_checkpoint
from germinator_dist.core.data import load_arrays_dataset, load_text_dataset
from germinator_dist.core.metrics import evaluate_checkpoint, generate_text
from germinator_dist.core.model import build_model
from germinator_dist.errors import CheckpointError, SpecError
from germinator_dist.search.job_setup import resolve_job

SMALL = {"model": {"hidden": [8], "rank": 2}, "search": {"swap": None}}


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def spec_file(tmp_path, doc, name="job.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


# --- the spec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"hidden": [1_000_000_000]}, "model.hidden.0"),
        ({"hidden": [8] * (bounds.MAX_DEPTH + 1)}, "model.hidden"),
        ({"input_dim": 4096, "hidden": [8192], "num_classes": 10}, "model.hidden: layer 0"),
        ({"input_dim": 64, "hidden": [4096], "rank": 4096, "num_classes": 10}, "model.rank: layer 0"),
        ({"kind": "lm", "context": 1 << 20}, "model.context"),
        ({"kind": "lm", "splits": [4096, 4096], "rank": 4096}, "model.splits"),
        ({"init_seed": True}, "model.init_seed"),
        ({"hidden": [True]}, "model.hidden.0"),
        ({"rank": True}, "model.rank"),
        ({"sigma_s": True}, "model.sigma_s"),
    ],
)
def test_model_sizes_are_bounded_and_integers_strict(model, field):
    with pytest.raises(SpecError) as err:
        load_model_spec(model)
    assert err.value.args[0].startswith(field), err.value


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"fitness": {"seed": True}}, "fitness.seed"),
        ({"search": {"rng_seed": True, "swap": None}}, "search.rng_seed"),
        ({"search": {"layers": [5, -1], "swap": None}}, "search.layers.1"),
        ({"search": {"layers": [], "swap": None}}, "search.layers"),
        ({"workers": {"gpus": float("inf")}}, "workers.gpus"),
        ({"workers": {"cpus": 1e9}}, "workers.cpus"),
    ],
)
def test_job_fields_strict_and_bounded(section, field):
    with pytest.raises(SpecError) as err:
        parse_job_spec({**SMALL, **section})
    assert str(err.value).startswith(field), err.value


def test_search_layers_checked_against_the_model():
    spec = parse_job_spec({**SMALL, "search": {"layers": [5], "swap": None}})  # valid on its own
    with pytest.raises(SpecError, match=r"search.layers: the model has layers 0..1, there is no layer 5"):
        resolve_job(spec)
    with pytest.raises(SpecError, match="search.layers: a layer is named twice"):
        resolve_job(parse_job_spec({**SMALL, "search": {"layers": [1, 1], "swap": None}}))
    assert resolve_job(parse_job_spec({**SMALL, "search": {"layers": [1], "swap": None}}))[
        0
    ].search.layers == (1,)


def test_a_yaml_alias_bomb_is_refused_fast(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = spec_file(tmp_path, "\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    start = time.monotonic()
    with pytest.raises(SpecError, match=f"expands to more than {MAX_YAML_NODES} YAML nodes") as err:
        load_job_spec(path)
    assert time.monotonic() - start < 2.0
    one_line(err)
    with pytest.raises(SpecError, match="expands to more than"):  # an alias that contains itself
        load_job_spec(spec_file(tmp_path, "a: &a [*a]\n", "cycle.yaml"))
    # anchors and aliases within the bound still work
    doc = "model: &m {hidden: [8], rank: 2}\nsearch: {swap: null}\n"
    assert load_job_spec(spec_file(tmp_path, doc, "ok.yaml")).model.hidden == (8,)


def test_spec_file_size_binary_and_directory(tmp_path):
    big = spec_file(tmp_path, "# " + "x" * MAX_SPEC_BYTES + "\n", "big.yaml")
    with pytest.raises(SpecError, match=f"larger than the bound of {MAX_SPEC_BYTES} bytes"):
        load_job_spec(big)
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SpecError, match="is not UTF-8 text") as err:
        load_job_spec(binary)
    one_line(err)
    with pytest.raises(SpecError, match="Is a directory"):
        load_job_spec(tmp_path)


# --- data ---------------------------------------------------------------------------------------------


def npz(tmp_path, name="d.npz", n=40, **arrays):
    rng = np.random.default_rng(0)
    base = {"X": rng.normal(size=(n, 3)), "y": np.arange(n) % 3}
    base.update(arrays)
    path = tmp_path / name
    np.savez(path, **base)
    return path


@pytest.mark.parametrize(
    ("y", "pattern"),
    [
        (
            np.full(40, 2**64 - 1, dtype=np.uint64),
            r"data.y: labels must lie in \[0, 65535\].*max 18446744073709551615",
        ),
        (np.arange(40) * 25_000_000, r"data.y: labels must lie in \[0, 65535\].*max 975000000"),
        (np.zeros(40, dtype=np.int64), r"data.y: the training labels .* hold a single class \(value 0\)"),
        (np.full(40, 7), r"single class \(value 7\)"),
    ],
)
def test_labels_bounded_and_at_least_two_classes(tmp_path, y, pattern):
    with pytest.raises(SpecError, match=pattern) as err:
        load_arrays_dataset(npz(tmp_path, y=y))
    one_line(err)


def test_a_test_class_the_training_labels_lack_counts_in_num_classes(tmp_path):
    yt = np.array([0, 1, 5, 2])
    ds = load_arrays_dataset(npz(tmp_path, X_test=np.zeros((4, 3)), y_test=yt))
    assert ds.dims()["num_classes"] == 6  # a model built for this data can score its test split


def test_a_directory_is_not_reported_missing(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(SpecError, match="is a directory, not a file"):
        load_arrays_dataset(tmp_path / "dir.npz")
    with pytest.raises(SpecError, match="data.paths: .* is a directory"):
        load_text_dataset([tmp_path])
    with pytest.raises(SpecError, match="data.path: no such file"):
        load_arrays_dataset(tmp_path / "missing.npz")


# --- checkpoints --------------------------------------------------------------------------------------

MLP = ModelSpec(input_dim=3, hidden=(8,), num_classes=3, rank=2)


def signed(d: dict) -> dict:
    body = {k: v for k, v in d.items() if k != "sha256"}
    return {**body, "sha256": _digest(body)}


def write_json(tmp_path, data, name="m.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_the_digest_is_required(tmp_path):
    d = checkpoint_dict(build_model(MLP))
    del d["sha256"]
    with pytest.raises(CheckpointError, match="sha256: missing"):
        load_checkpoint(write_json(tmp_path, d))


def test_a_tiny_checkpoint_implying_a_huge_model_is_refused_before_allocation(tmp_path):
    d = checkpoint_dict(build_model(MLP))
    d["spec"]["hidden"] = [10**6]
    path = write_json(tmp_path, signed(d))
    assert path.stat().st_size < 2000
    with pytest.raises(
        CheckpointError, match=r"spec: model.hidden.0: Input should be less than or equal to 65536"
    ):
        load_checkpoint(path)
    d["spec"]["hidden"] = [8192]
    d["spec"]["input_dim"] = 4096
    with pytest.raises(
        CheckpointError, match=r"spec: model.hidden: layer 0 \(4096 -> 8192\) has 33554432 weights"
    ):
        load_checkpoint(write_json(tmp_path, signed(d)))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": ' + "9" * 100_000 + "}", "not a checkpoint"),
        ('{"a": 1', "truncated or not JSON"),
    ],
)
def test_malformed_json_is_one_line(tmp_path, text, pattern):
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_checkpoint(write_json(tmp_path, text))
    one_line(err)


def test_meta_data_that_is_not_a_data_spec(tmp_path):
    path = tmp_path / "m.json"
    save_checkpoint(build_model(MLP), path, meta={"data": 5})
    with pytest.raises(CheckpointError, match=r"meta.data: .*\(value 5\); pass --data") as err:
        evaluate_checkpoint(path)
    one_line(err)
    d = signed({**checkpoint_dict(build_model(MLP)), "meta": [1]})
    with pytest.raises(CheckpointError, match=r"meta: expected an object, got \[1\]"):
        load_checkpoint(write_json(tmp_path, d, "m2.json"))


def test_evaluate_data_with_a_class_beyond_the_model(tmp_path):
    path = tmp_path / "m.json"
    save_checkpoint(build_model(MLP), path)  # num_classes 3
    data = npz(tmp_path, X_test=np.zeros((4, 3)), y_test=np.array([0, 1, 2, 7]))
    with pytest.raises(SpecError, match="--data: the model has num_classes=3 but the data has 8"):
        evaluate_checkpoint(path, str(data))


@pytest.mark.parametrize("where", ["", "missing/x.json", "dir"])
def test_save_checkpoint_to_a_bad_path_names_it_and_leaves_nothing(tmp_path, where, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="output: ") as err:
        save_checkpoint(build_model(MLP), where)
    one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"] and not any((tmp_path / "dir").iterdir())


LM = ModelSpec(kind="lm", vocab_size=256, d_model=8, d_ff=8, n_blocks=1, context=8, rank=2)


def test_generate_refuses_bad_temperature_and_non_byte_vocabulary(tmp_path):
    path = tmp_path / "lm.json"
    save_checkpoint(build_model(LM), path)
    assert len(generate_text(path, "ab", 3, 0.8, 0)) >= 3
    for t in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(SpecError, match="--temperature: must be a finite number > 0"):
            generate_text(path, "ab", 3, t, 0)
    with pytest.raises(SpecError, match="--bytes"):
        generate_text(path, "ab", -1, 0.8, 0)
    wide = tmp_path / "wide.json"
    save_checkpoint(build_model(LM.model_copy(update={"vocab_size": 300})), wide)
    with pytest.raises(SpecError, match=r"model.vocab_size: generate samples bytes .* \(value 300\)"):
        generate_text(wide, "ab", 3, 0.8, 0)

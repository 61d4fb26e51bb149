"""Data sets that exist on every machine, plus the user's own: digits, ``.npz`` arrays, text files.

Nothing downloads: ``digits`` is scikit-learn's bundled copy; the built-in text corpus is a fixed list of
the Python standard library's own ``.py`` files. Every loader validates what it reads and raises a
SpecError naming the field (``data.path``, ``data.X`` ...) and the value.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from germinator_dist.config import MAX_WIDTH, DataSpec
from germinator_dist.core.model import Batch
from germinator_dist.errors import SpecError

MAX_ARRAY_BYTES = 4 << 30  # one array of a user's .npz, uncompressed (docs/security.md, "Sizes")
MAX_TEXT_BYTES = 1 << 30  # the text files of a text data set, together

# A fixed list, so the corpus is the same text wherever the same Python version runs.
STDLIB_FILES = (
    "argparse.py",
    "dataclasses.py",
    "functools.py",
    "inspect.py",
    "pathlib.py",
    "subprocess.py",
    "typing.py",
    "json/decoder.py",
    "json/encoder.py",
    "logging/__init__.py",
    "collections/__init__.py",
    "textwrap.py",
    "string.py",
    "shutil.py",
    "tempfile.py",
    "enum.py",
    "heapq.py",
    "bisect.py",
)
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2  # of the training rows (or of each file's training text): the validation split


@dataclass
class Dataset:
    """Train/validation/test tensors. Classifiers: X (n, d) float32, y (n,) int64. LMs: tokens (n,) int64.

    The validation split is carved from the training data (fixed and seeded): model selection, early
    stopping and the search's fitness may use it; the test split serves only the final metric.
    """

    kind: str  # "vectors" or "text"
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    name: str = ""
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x, y) of split ``name``: train, validation or test. Raises SpecError for another name."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "validation":
            if self.x_val is None:
                raise SpecError(f"fitness.split: data set {self.name!r} has no validation split")
            return self.x_val, self.y_val
        if name == "test":
            return self.x_test, self.y_test
        raise SpecError(f"split: expected 'train', 'validation' or 'test', got {name!r}")

    def dims(self) -> dict[str, int]:
        """The model dimensions the data determines (for ModelSpec.resolved)."""
        if self.kind == "text":
            return {"vocab_size": 256}
        labels = [int(y.max()) for y in (self.y_train, self.y_test) if y is not None and y.numel()]
        return {"input_dim": int(self.x_train.shape[1]), "num_classes": max(labels) + 1}

    def fitness_batch(self, size: int, context: int = 64, seed: int = 0, split: str = "train") -> Batch:
        """The fixed batch every evaluator and the trainer measure the table's loss on, from ``split``
        (train or validation; never test).

        Classifiers: the first ``size`` rows of a seeded permutation of the split (all of it when
        size >= n). LMs: ``size`` windows of ``context`` tokens at seeded positions.
        Raises SpecError for the test split or a split the data set lacks.
        """
        if split == "test":
            raise SpecError("fitness.split: the test split serves only the final metric (value 'test')")
        x, y = self.split(split)
        g = torch.Generator().manual_seed(seed)
        if self.kind == "text":
            return _windows(x, size, context, g)
        idx = torch.randperm(x.shape[0], generator=g)[: min(size, x.shape[0])]
        return Batch(x[idx], y[idx])

    def train_batch(self, size: int, context: int, g: torch.Generator) -> Batch:
        """A random minibatch from the training split."""
        if self.kind == "text":
            return _windows(self.x_train, size, context, g)
        idx = torch.randint(0, self.x_train.shape[0], (size,), generator=g)
        return Batch(self.x_train[idx], self.y_train[idx])

    def test_batches(
        self, size: int = 4096, context: int = 64, limit: int | None = None, split: str = "test"
    ):
        """Consecutive batches over the test split (or ``split``; LM: non-overlapping windows)."""
        x, y = self.split(split)
        if self.kind == "text":
            t = x
            n = (t.numel() - 1) // context
            if limit is not None:
                n = min(n, limit)
            starts = torch.arange(n) * context
            for a in range(0, n, size):
                s = starts[a : a + size]
                win = torch.stack([t[i : i + context + 1] for i in s.tolist()])  # (b, T+1)
                yield Batch(win[:, :-1], win[:, 1:])
            return
        for a in range(0, x.shape[0], size):
            yield Batch(x[a : a + size], y[a : a + size])


def _windows(tokens: torch.Tensor, size: int, context: int, g: torch.Generator) -> Batch:
    if tokens.numel() <= context + 1:
        raise SpecError(f"data: text has {tokens.numel()} bytes, needs more than context+1 = {context + 1}")
    starts = torch.randint(0, tokens.numel() - context - 1, (size,), generator=g)  # (B,)
    offsets = torch.arange(context + 1)  # (T+1,)
    win = tokens[starts.unsqueeze(1) + offsets]  # (B, T+1)
    return Batch(win[:, :-1], win[:, 1:])


def _split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * TEST_FRACTION)))
    return perm[n_test:], perm[:n_test]


def _with_validation(name, x, y, xt, yt, seed: int = 1) -> Dataset:
    """A vectors Dataset whose validation split is a fixed, seeded VAL_FRACTION of the training rows."""
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_val = max(1, int(round(x.shape[0] * VAL_FRACTION))) if x.shape[0] > 2 else 0
    tr, va = perm[n_val:], perm[:n_val]
    return Dataset("vectors", x[tr], y[tr], xt, yt, name=name, x_val=x[va], y_val=y[va])


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), pixels scaled to [0, 1], fixed 80/20 split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    tr, te = _split(len(x))
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    return _with_validation("digits", x[tr], y[tr], x[te], y[te])


def _check_xy(x, y, xname: str, yname: str, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise SpecError(f"data.{xname}: expected shape (n, d) in {path}, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise SpecError(f"data.{xname}: expected finite numbers in {path}, got dtype {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise SpecError(
            f"data.{yname}: expected shape ({x.shape[0]},) to match {xname} in {path}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise SpecError(
            f"data.{yname}: expected non-negative integer labels in {path}, got dtype {y.dtype}"
            f"{'' if not np.issubdtype(y.dtype, np.integer) else f' min {y.min()}'}"
        )
    if x.shape[1] > MAX_WIDTH:
        raise SpecError(f"data.{xname}: {x.shape[1]} columns in {path}, above the bound {MAX_WIDTH}")
    if y.size and int(y.max()) >= MAX_WIDTH:  # compared as Python ints: a uint64 label never wraps
        raise SpecError(
            f"data.{yname}: labels must lie in [0, {MAX_WIDTH - 1}] (num_classes is max(label) + 1) in "
            f"{path}, got max {int(y.max())}"
        )
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y.astype(np.int64), dtype=torch.int64)


def load_arrays_dataset(path: str | Path) -> Dataset:
    """A user's ``.npz`` with ``X`` (n, d), integer ``y`` (n,), optional ``X_test``/``y_test``.

    Without a test split, a fixed 20% of the rows is held out. Raises SpecError naming the problem.
    """
    path = Path(path)
    _check_file(path, "data.path")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "zip"):
                raise ValueError("not an .npz archive")
            for info in z.zip.infolist():  # sizes from the archive's directory, before anything is inflated
                if info.file_size > MAX_ARRAY_BYTES:
                    raise SpecError(
                        f"data.{info.filename.removesuffix('.npy')}: {info.file_size} bytes in "
                        f"{str(path)!r}, above the bound of {MAX_ARRAY_BYTES} bytes per array"
                    )
            arrays = {k: z[k] for k in z.files}
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise SpecError(f"data.path: cannot read {str(path)!r} as .npz ({type(exc).__name__})") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise SpecError(f"data.{key}: missing from {str(path)!r} (has {sorted(arrays)})")
    x, y = _check_xy(arrays["X"], arrays["y"], "X", "y", str(path))
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise SpecError(f"data.X_test: X_test and y_test must come together in {str(path)!r}")
    if "X_test" in arrays:
        xt, yt = _check_xy(arrays["X_test"], arrays["y_test"], "X_test", "y_test", str(path))
        if xt.shape[1] != x.shape[1]:
            raise SpecError(f"data.X_test: has {xt.shape[1]} columns, X has {x.shape[1]} in {str(path)!r}")
        return _check_classes(_with_validation(path.name, x, y, xt, yt), path)
    tr, te = _split(x.shape[0])
    return _check_classes(_with_validation(path.name, x[tr], y[tr], x[te], y[te]), path)


def _check_file(path: Path, field: str) -> None:
    """Raise SpecError naming ``field`` unless ``path`` is a readable regular file (says which it is not)."""
    if path.is_dir():
        raise SpecError(f"{field}: {str(path)!r} is a directory, not a file")
    if not path.exists():
        raise SpecError(f"{field}: no such file: {str(path)!r}")
    if not path.is_file():
        raise SpecError(f"{field}: {str(path)!r} is not a regular file")


def _check_classes(ds: Dataset, path: Path) -> Dataset:
    """Refuse labels a classifier cannot train on: fewer than two classes in the training rows."""
    classes = torch.unique(ds.y_train)
    if classes.numel() < 2:
        raise SpecError(
            f"data.y: the training labels in {str(path)!r} hold a single class (value "
            f"{int(classes[0]) if classes.numel() else None}); a classifier needs at least 2"
        )
    return ds


def stdlib_text_files() -> list[Path]:
    """The fixed list of standard-library files that form the built-in corpus (those present)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / f for f in STDLIB_FILES if (root / f).is_file()]


def load_text_dataset(paths: list[str | Path] | None = None) -> Dataset:
    """Bytes of text files (default: the stdlib corpus): per file, the last 10% is the test split and the
    10% before it the validation split.

    Raises SpecError on a missing or empty file.
    """
    files = [Path(p) for p in paths] if paths else stdlib_text_files()
    if not files:
        raise SpecError("data.paths: no text files found")
    train, valid, test = [], [], []
    total = 0
    for f in files:
        _check_file(f, "data.paths")
        total += f.stat().st_size
        if total > MAX_TEXT_BYTES:
            raise SpecError(f"data.paths: the files hold more than the bound of {MAX_TEXT_BYTES} bytes")
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise SpecError(f"data.paths: cannot read {str(f)!r} ({exc.strerror})") from None
        if len(raw) < 100:
            raise SpecError(f"data.paths: {str(f)!r} has {len(raw)} bytes; need at least 100")
        cut, vcut = int(len(raw) * 0.9), int(len(raw) * 0.8)
        train.append(raw[:vcut])
        valid.append(raw[vcut:cut])
        test.append(raw[cut:])
    to_t = lambda chunks: torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).to(torch.int64)  # noqa: E731
    name = f"{len(files)} text files"
    return Dataset("text", to_t(train), None, to_t(test), None, name=name, x_val=to_t(valid))


def load_dataset(data: DataSpec) -> Dataset:
    """Load the data a DataSpec names. Raises SpecError for missing or malformed files."""
    if data.kind == "digits":
        return load_digits_dataset()
    if data.kind == "arrays":
        return load_arrays_dataset(data.path)
    return load_text_dataset(list(data.paths) or None)

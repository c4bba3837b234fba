"""CIFAR-10 from a local directory in the standard python-pickle batch format.

The batches are pickles; they are read by an unpickler that builds numpy arrays and plain
containers only, so a planted or damaged batch file is an error, never code that runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from qcompile.data.base import Dataset, normalized
from qcompile.errors import QCompileError, clip

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
EXPECTED = ", ".join((*TRAIN_FILES, TEST_FILE))


# What a CIFAR-10 batch pickle may build: numpy arrays and dtypes (and, in protocol-2 files,
# bytes via _codecs.encode). Any other global (os.system, a class with a __reduce__) is
# refused, so a batch file cannot run code.
SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name}: not array data")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # any malformed pickle: report the file, whatever broke
        raise QCompileError(
            f"cifar10: {path} is not a CIFAR-10 python batch (dict with b'data' N x 3072 "
            f"uint8 and b'labels'): {type(e).__name__}: {clip(str(e))}"
        ) from None
    if len(data) != len(labels):
        raise QCompileError(f"cifar10: {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


def find_root(directory: str) -> Path:
    """The directory holding the batches: ``directory`` or its ``cifar-10-batches-py``."""
    if not directory:
        raise QCompileError(f"cifar10 needs --data-dir, a directory with {EXPECTED}")
    root = Path(directory)
    try:
        for cand in (root, root / "cifar-10-batches-py"):
            if all((cand / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
                return cand
        missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (root / f).is_file()]
    except OSError as e:  # a name too long, ...
        raise QCompileError(
            f"cifar10: cannot use --data-dir {clip(directory)} ({e.strerror or e})"
        ) from None
    raise QCompileError(
        f"cifar10: {clip(str(root))} lacks {', '.join(missing)}; expected {EXPECTED} "
        "(the python version of CIFAR-10, or its cifar-10-batches-py folder)"
    )


def load_cifar10(directory: str) -> Dataset:
    """Train on data_batch_1..5, test on test_batch; random crop + flip while training."""
    root = find_root(directory)
    parts = [_read_batch(root / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(root / TEST_FILE)
    for name, y in (("train", train_y), ("test", test_y)):
        if y.size and (y.min() < 0 or y.max() > 9):
            raise QCompileError(f"cifar10: {name} labels outside 0..9 in {root}")
    return normalized("cifar10", train_x, train_y, test_x, test_y, 10, augment=True)


def write_batches(
    directory: str | Path, images: np.ndarray, labels: np.ndarray, n_test: int
) -> None:
    """Write ``images`` ``[N, 3, 32, 32]`` uint8 as CIFAR-10 batch files (for tests and demos)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    train_x, test_x = images[n_test:], images[:n_test]
    train_y, test_y = labels[n_test:], labels[:n_test]
    chunks = np.array_split(np.arange(len(train_x)), len(TRAIN_FILES))
    for name, idx in zip(TRAIN_FILES, chunks, strict=True):
        _write(root / name, train_x[idx], train_y[idx])
    _write(root / TEST_FILE, test_x, test_y)


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with path.open("wb") as f:
        pickle.dump({b"data": x.reshape(len(x), -1), b"labels": [int(v) for v in y]}, f)

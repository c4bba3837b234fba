"""Datasets: embedded splits, CIFAR-10 batch files and ImageFolder trees."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qcompile.data import DATASETS, Dataset, dataset_shape, load_dataset
from qcompile.data.cifar10 import write_batches
from qcompile.errors import QCompileError


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


def _raw(x: torch.Tensor, ds: Dataset) -> torch.Tensor:
    """Undo the per-channel normalisation back to the dataset's raw units."""
    mean = torch.tensor(ds.mean, dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(ds.std, dtype=torch.float64)[None, :, None, None]
    return x.double() * std + mean


# ----------------------------------------------------------------------------- embedded


@pytest.mark.parametrize(
    ("name", "in_shape", "n_train", "n_test"),
    [("digits", (1, 8, 8), 1438, 359), ("mnist5k", (1, 28, 28), 4000, 1000)],
)
def test_embedded_shapes_and_sizes(
    name: str,
    in_shape: tuple[int, int, int],
    n_train: int,
    n_test: int,
    request: pytest.FixtureRequest,
) -> None:
    ds: Dataset = request.getfixturevalue(name)
    assert ds.name == name
    assert ds.in_shape == in_shape
    assert ds.num_classes == 10
    assert ds.train_x.shape == (n_train, *in_shape)
    assert ds.test_x.shape == (n_test, *in_shape)
    assert ds.train_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64
    assert ds.train_y.shape == (n_train,) and ds.test_y.shape == (n_test,)
    for y in (ds.train_y, ds.test_y):
        assert set(y.tolist()) == set(range(10))
    assert ds.augment is False


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_embedded_split_is_fixed(name: str, request: pytest.FixtureRequest) -> None:
    first: Dataset = request.getfixturevalue(name)
    second = load_dataset(name)
    assert torch.equal(first.train_x, second.train_x)
    assert torch.equal(first.train_y, second.train_y)
    assert torch.equal(first.test_x, second.test_x)
    assert torch.equal(first.test_y, second.test_y)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_embedded_split_is_stratified(name: str, request: pytest.FixtureRequest) -> None:
    ds: Dataset = request.getfixturevalue(name)
    totals = Counter(ds.train_y.tolist()) + Counter(ds.test_y.tolist())
    test_counts = Counter(ds.test_y.tolist())
    for cls, total in totals.items():
        assert test_counts[cls] == round(0.2 * total), cls


def test_mnist5k_has_500_images_per_class(mnist5k: Dataset) -> None:
    assert Counter(mnist5k.test_y.tolist()) == dict.fromkeys(range(10), 100)
    assert Counter(mnist5k.train_y.tolist()) == dict.fromkeys(range(10), 400)


def _image_keys(images: torch.Tensor) -> list[tuple[int, ...]]:
    return sorted(tuple(v.round().long().flatten().tolist()) for v in images)


def test_split_train_and_test_are_disjoint(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images).double()
    recovered = torch.cat([_raw(digits.train_x, digits), _raw(digits.test_x, digits)])[:, 0]
    # Every original image appears exactly once across the two splits.
    assert recovered.shape == raw.shape
    assert _image_keys(recovered) == _image_keys(raw)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_train_split_is_normalised(name: str, request: pytest.FixtureRequest) -> None:
    ds: Dataset = request.getfixturevalue(name)
    mean = ds.train_x.double().mean(dim=(0, 2, 3))
    std = ds.train_x.double().std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4)
    assert len(ds.mean) == len(ds.std) == ds.in_shape[0]
    assert all(s > 0 for s in ds.std)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(QCompileError, match="unknown dataset 'cifar100'") as info:
        load_dataset("cifar100")
    for name in DATASETS:
        assert name in str(info.value)


# ----------------------------------------------------------------------------- cifar10


def _cifar_arrays(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(n) % 10
    return images, labels


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar10_from_batch_files(tmp_path: Path, subfolder: str) -> None:
    images, labels = _cifar_arrays()
    write_batches(tmp_path / subfolder if subfolder else tmp_path, images, labels, n_test=10)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.name == "cifar10"
    assert ds.in_shape == (3, 32, 32)
    assert ds.num_classes == 10
    assert ds.augment is True
    assert ds.train_x.shape == (50, 3, 32, 32)
    assert ds.test_x.shape == (10, 3, 32, 32)
    # test_batch holds the first 10 images; data_batch_1..5 the rest, in order.
    assert torch.equal(ds.test_y, torch.from_numpy(labels[:10]))
    assert torch.equal(ds.train_y, torch.from_numpy(labels[10:]))
    assert torch.equal(_raw(ds.test_x, ds).round().to(torch.uint8), torch.from_numpy(images[:10]))
    assert torch.equal(_raw(ds.train_x, ds).round().to(torch.uint8), torch.from_numpy(images[10:]))
    expected_mean = images[10:].astype(np.float64).mean(axis=(0, 2, 3))
    assert np.allclose(ds.mean, expected_mean)


@pytest.mark.parametrize("make_dir", [False, True])
def test_cifar10_missing_or_empty_directory(tmp_path: Path, make_dir: bool) -> None:
    root = tmp_path / "cifar"
    if make_dir:
        root.mkdir()
    with pytest.raises(QCompileError) as info:
        load_dataset("cifar10", str(root))
    msg = str(info.value)
    assert "data_batch_1" in msg
    assert "test_batch" in msg
    assert str(root) in msg


def test_cifar10_partial_directory_names_missing_file(tmp_path: Path) -> None:
    images, labels = _cifar_arrays()
    write_batches(tmp_path, images, labels, n_test=10)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(QCompileError, match=r"lacks data_batch_4;"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "not_a_dict"])
def test_cifar10_corrupt_batch_names_file(tmp_path: Path, corruption: str) -> None:
    images, labels = _cifar_arrays()
    write_batches(tmp_path, images, labels, n_test=10)
    bad = tmp_path / "data_batch_3"
    if corruption == "garbage":
        bad.write_bytes(b"this is not a pickle")
    elif corruption == "truncated":
        bad.write_bytes(bad.read_bytes()[:1000])
    else:
        bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(QCompileError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_labels_out_of_range(tmp_path: Path) -> None:
    images, labels = _cifar_arrays()
    labels = labels.copy()
    labels[-1] = 10
    write_batches(tmp_path, images, labels, n_test=10)
    with pytest.raises(QCompileError, match=r"labels outside 0\.\.9"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_directory_datasets_need_data_dir(name: str) -> None:
    with pytest.raises(QCompileError, match="--data-dir"):
        load_dataset(name)


# ----------------------------------------------------------------------------- imagefolder

# Created in non-alphabetical order; each class is a solid colour so labels can be checked.
COLOURS = {"zebra": (200, 10, 10), "apple": (10, 200, 10), "mango": (10, 10, 200)}


def _write_images(
    folder: Path, colour: tuple[int, int, int], n: int, size: tuple[int, int]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, colour).save(folder / f"img{i}.png")


def _label_colours(ds: Dataset, x: torch.Tensor, y: torch.Tensor) -> dict[int, tuple[int, ...]]:
    raw = _raw(x, ds).round().long()
    out: dict[int, tuple[int, ...]] = {}
    for label in y.unique().tolist():
        imgs = raw[y == label]
        pixel = tuple(imgs[0, :, 0, 0].tolist())
        assert (imgs == imgs[0, :, 0, 0][None, :, None, None]).all()
        out[label] = pixel
    return out


def test_imagefolder_flat_layout(tmp_path: Path) -> None:
    for i, (cls, colour) in enumerate(COLOURS.items()):
        _write_images(tmp_path / cls, colour, 6, (20 + 7 * i, 13 + 5 * i))
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    ds = load_dataset("imagefolder", str(tmp_path), image_size=16)
    assert ds.name == "imagefolder"
    assert ds.num_classes == 3
    assert ds.in_shape == (3, 16, 16)
    assert ds.augment is True
    # 80/20 per class: round(6 * 0.2) = 1 test image per class.
    assert len(ds.train_y) == 15 and len(ds.test_y) == 3
    assert Counter(ds.test_y.tolist()) == {0: 1, 1: 1, 2: 1}
    assert Counter(ds.train_y.tolist()) == {0: 5, 1: 5, 2: 5}
    # Labels follow alphabetical class order: apple=0, mango=1, zebra=2.
    expected = {i: COLOURS[c] for i, c in enumerate(sorted(COLOURS))}
    assert _label_colours(ds, ds.train_x, ds.train_y) == expected
    assert _label_colours(ds, ds.test_x, ds.test_y) == expected


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_imagefolder_train_test_layout(tmp_path: Path, test_name: str) -> None:
    for cls in ("zebra", "apple"):
        _write_images(tmp_path / "train" / cls, COLOURS[cls], 6, (40, 24))
        _write_images(tmp_path / test_name / cls, COLOURS[cls], 2, (9, 11))
    ds = load_dataset("imagefolder", str(tmp_path), image_size=8)
    assert ds.num_classes == 2
    assert ds.in_shape == (3, 8, 8)
    assert ds.train_x.shape == (12, 3, 8, 8)
    assert ds.test_x.shape == (4, 3, 8, 8)
    expected = {0: COLOURS["apple"], 1: COLOURS["zebra"]}
    assert _label_colours(ds, ds.train_x, ds.train_y) == expected
    assert _label_colours(ds, ds.test_x, ds.test_y) == expected


def test_imagefolder_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "data.txt"
    file.write_text("x")
    with pytest.raises(QCompileError, match="is not a directory"):
        load_dataset("imagefolder", str(file))
    with pytest.raises(QCompileError, match="is not a directory"):
        load_dataset("imagefolder", str(tmp_path / "missing"))


def test_imagefolder_single_class(tmp_path: Path) -> None:
    _write_images(tmp_path / "only", COLOURS["apple"], 6, (10, 10))
    with pytest.raises(QCompileError, match="at least 2 class folders"):
        load_dataset("imagefolder", str(tmp_path))


def test_imagefolder_unreadable_image(tmp_path: Path) -> None:
    for cls in ("apple", "mango"):
        _write_images(tmp_path / cls, COLOURS[cls], 3, (10, 10))
    bad = tmp_path / "mango" / "broken.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(QCompileError, match="cannot read image") as info:
        load_dataset("imagefolder", str(tmp_path))
    assert str(bad) in str(info.value)


def test_imagefolder_mismatched_train_test_classes(tmp_path: Path) -> None:
    for cls in ("apple", "mango"):
        _write_images(tmp_path / "train" / cls, COLOURS[cls], 2, (10, 10))
    _write_images(tmp_path / "test" / "apple", COLOURS["apple"], 2, (10, 10))
    with pytest.raises(QCompileError, match="class folders differ"):
        load_dataset("imagefolder", str(tmp_path))


def test_dataset_shape_without_reading_examples(tmp_path: Path) -> None:
    """What freeze needs: the shapes agree with the loaded datasets, and cifar10's needs no
    directory at all (so a checkpoint naming one makes qcompile open no file)."""
    from qcompile.data import SHAPES, dataset_shape

    for name in ("digits", "mnist5k"):
        ds = load_dataset(name)
        assert dataset_shape(name) == SHAPES[name] == (ds.in_shape, ds.num_classes)
    assert dataset_shape("cifar10", str(tmp_path / "nowhere")) == ((3, 32, 32), 10)
    for cls in ("cat", "dog", "emu"):
        (tmp_path / "img" / cls).mkdir(parents=True)
    assert dataset_shape("imagefolder", str(tmp_path / "img"), 48) == ((3, 48, 48), 3)


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        import os

        return (os.mkdir, (self.marker,))


def test_cifar10_batch_cannot_run_code(tmp_path: Path) -> None:
    """The batches are pickles: one that would call os.mkdir is refused, and nothing runs."""
    import pickle

    images, labels = _cifar_arrays()
    write_batches(tmp_path, images, labels, n_test=10)
    marker = tmp_path / "ran"
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Planted(marker)}))
    with pytest.raises(QCompileError, match=r"data_batch_3.*refusing to build posix\.mkdir"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_batches_of_any_protocol_load(tmp_path: Path, protocol: int) -> None:
    """The restricted unpickler accepts what numpy arrays pickle to in every protocol."""
    import pickle

    images, labels = _cifar_arrays()
    write_batches(tmp_path, images, labels, n_test=10)
    for f in tmp_path.iterdir():
        batch = pickle.loads(f.read_bytes())
        f.write_bytes(pickle.dumps(batch, protocol=protocol))
    assert len(load_dataset("cifar10", str(tmp_path)).test_y) == 10


def test_jets_are_deterministic_and_balanced() -> None:
    """The synthetic jet-tagging set: 16 features, 5 classes, drawn from a fixed seed."""
    a, b = load_dataset("jets"), load_dataset("jets")
    assert a.in_shape == (16, 1, 1) and a.num_classes == 5
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert Counter(a.test_y.tolist()) == dict.fromkeys(range(5), 400)
    assert dataset_shape("jets") == ((16, 1, 1), 5)

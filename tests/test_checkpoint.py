"""Checkpoints: atomic writes, weights-only loading and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from qcompile.checkpoint import (
    CHECKPOINT_VERSION,
    FORMAT,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from qcompile.errors import QCompileError


class Custom:
    """Not a tensor or a plain container: weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.value = 3


def _payload() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    return {
        "recipe": {"model": {"name": "lenet"}, "train": {"milestones": [0.5, 0.75]}},
        "epoch": 4,
        "model": {
            "conv.weight": torch.randn(4, 1, 3, 3, generator=gen),
            "bn.num_batches_tracked": torch.tensor(12),
        },
        "optimizer": {"state": {0: {"exp_avg": torch.randn(5, generator=gen)}}, "lr": 0.01},
        "rng": torch.get_rng_state(),
    }


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, _payload())
    return path


def _error(path: Path) -> str:
    with pytest.raises(QCompileError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg
    return msg


def test_round_trip(saved: Path) -> None:
    original = _payload()
    ckpt = load_checkpoint(saved)
    assert ckpt["format"] == FORMAT
    assert ckpt["version"] == CHECKPOINT_VERSION
    assert ckpt["epoch"] == 4
    assert ckpt["recipe"] == original["recipe"]
    assert ckpt["model"].keys() == original["model"].keys()
    for key, tensor in original["model"].items():
        assert torch.equal(ckpt["model"][key], tensor)
    assert torch.equal(
        ckpt["optimizer"]["state"][0]["exp_avg"], original["optimizer"]["state"][0]["exp_avg"]
    )
    assert torch.equal(ckpt["rng"], original["rng"])


def test_loadable_with_weights_only(saved: Path) -> None:
    raw = torch.load(saved, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT
    assert torch.equal(raw["model"]["conv.weight"], _payload()["model"]["conv.weight"])


def test_write_leaves_no_temp_files(saved: Path) -> None:
    save_checkpoint(saved, {**_payload(), "epoch": 5})  # overwrite in place
    assert os.listdir(saved.parent) == ["checkpoint.pt"]
    assert load_checkpoint(saved)["epoch"] == 5


def test_failed_write_keeps_previous_file(saved: Path) -> None:
    before = saved.read_bytes()

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a checkpoint")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(saved, fail)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["checkpoint.pt"]


def test_unpicklable_payload_keeps_previous_file(saved: Path) -> None:
    before = saved.read_bytes()
    with pytest.raises(TypeError, match="cannot pickle 'generator' object"):
        save_checkpoint(saved, {**_payload(), "model": (i for i in range(3))})
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["checkpoint.pt"]


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "absent.pt")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 8)
    assert "corrupt, truncated or not a PyTorch checkpoint" in _error(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert "corrupt" in _error(path)


def test_truncated_checkpoint(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(saved)


def test_foreign_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"a": 1}, path)
    assert f"not a qcompile checkpoint (no format tag '{FORMAT}')" in _error(path)


def test_foreign_tensor_file(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    assert "not a qcompile checkpoint" in _error(path)


def test_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.pt"
    torch.save({"format": FORMAT, "version": 1, "recipe": {}, "epoch": 0, "model": Custom()}, path)
    assert "holds pickled Python objects" in _error(path)


def test_future_version(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    payload = {"format": FORMAT, "version": CHECKPOINT_VERSION + 1, **_payload()}
    torch.save(payload, path)
    msg = _error(path)
    assert f"format version {CHECKPOINT_VERSION + 1}" in msg
    assert "upgrade qcompile" in msg


def test_non_integer_version(tmp_path: Path) -> None:
    path = tmp_path / "weird.pt"
    torch.save({"format": FORMAT, "version": "1", **_payload()}, path)
    assert "format version '1'" in _error(path)


@pytest.mark.parametrize("key", ["model", "epoch", "recipe"])
def test_missing_key(tmp_path: Path, key: str) -> None:
    path = tmp_path / "partial.pt"
    payload = _payload()
    del payload[key]
    save_checkpoint(path, payload)
    assert f"lacks '{key}'" in _error(path)


def test_damaged_archive_member(saved: Path) -> None:
    """A zip whose tensor data is cut still fails cleanly, not with torch's traceback."""
    import zipfile

    with zipfile.ZipFile(saved) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    damaged = saved.with_name("damaged.pt")
    with zipfile.ZipFile(damaged, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob if not name.endswith("data.pkl") else blob[: len(blob) // 2])
    assert "corrupt or truncated" in _error(damaged)

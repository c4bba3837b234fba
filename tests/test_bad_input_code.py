"""No code runs from a data file: nothing named inside a .qir, checkpoint or artifact is
imported or unpickled unless the user names it on the command line. Each case plants code
(a factory module, a pickle, a shared library) that would create a marker file if it ran,
and checks the marker never appears (issue 13, part 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qcompile.builder import build
from qcompile.checkpoint import save_checkpoint
from qcompile.fileio import sha256_file
from qcompile.freeze import freeze_model
from qcompile.ir import qir
from qcompile.recipe import load_recipe
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.bad_inputs import Fixtures, Planted, assert_refused, run_main


@pytest.fixture(scope="module")
def planted(bad: Fixtures, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints and models that name planted code, next to the session's fixtures."""
    root = tmp_path_factory.mktemp("planted")
    factory = f"{bad.evil / 'evil.py'}:make"
    payload = torch.load(bad.ckpt, weights_only=True)
    payload.pop("version")
    payload["recipe"]["model"]["name"] = factory
    save_checkpoint(root / "factory.pt", payload)
    # a cifar10-shaped run whose recipe points at the planted batches
    recipe = load_recipe(None, {"data.name": "cifar10", "data.dir": str(bad.evil / "cifar")})
    torch.manual_seed(0)
    model = build(recipe, (3, 32, 32), 10)
    model.train()
    model(torch.randn(4, 3, 32, 32))
    save_checkpoint(root / "cifar.pt", {"recipe": recipe.to_dict(), "epoch": 1,
                                        "model": model.state_dict()})  # fmt: skip
    torch.save({"format": "qcompile-checkpoint", "recipe": Planted(bad.marker)}, root / "pkl.pt")
    np.save(root / "obj.npy", np.array([Planted(bad.marker)] * 2), allow_pickle=True)
    # .qir files whose metadata name the planted checkpoint and data directory
    q = quantize(build_model("lenet", (3, 32, 32), 10), wbits=4, abits=4)
    q.train()
    q(torch.randn(4, 3, 32, 32))
    meta = {"data": "cifar10", "data_dir": str(bad.evil / "cifar"),
            "checkpoint": str(root / "factory.pt"),
            "checkpoint_sha256": sha256_file(root / "factory.pt"),
            "recipe": json.dumps(payload["recipe"])}  # fmt: skip
    qir.save(freeze_model(q.eval(), (3, 32, 32), "lenet", meta), root / "cifar.qir")
    np.save(root / "x32.npy", np.zeros((2, 3, 32, 32), np.float32))
    return {p.stem + p.suffix.replace(".", "_"): p for p in root.iterdir()}


# (arguments with {placeholders}, words of the one error line)
REFUSED = [
    (["freeze", "{factory_pt}", "-o", "{tmp}/m.qir"], ["evil.py:make", "pass --model"]),
    (["freeze", "{pkl_pt}", "-o", "{tmp}/m.qir"], ["holds pickled Python objects"]),
    (["simulate", "{cifar_qir}", "--checkpoint", "{factory_pt}", "--inputs", "{x32_npy}"],
     ["trained with the model factory", "pass --model"]),
    (["simulate", "{cifar_qir}", "--checkpoint", "{pkl_pt}"], ["not the checkpoint"]),
    (["simulate", "{cifar_qir}"], ["cifar10 needs --data-dir"]),
    (["simulate", "{cifar_qir}", "--data", "cifar10"], ["cifar10 needs --data-dir"]),
    (["simulate", "{cifar_qir}", "--data-dir", "{evil}/cifar"],
     ["not a CIFAR-10 python batch", "refusing to build posix.mkdir"]),
    (["simulate", "{qir}", "--inputs", "{obj_npy}"], ["holds dtype object"]),
    (["train", "--data", "cifar10", "--data-dir", "{evil}/cifar", "--out", "{tmp}/run"],
     ["refusing to build posix.mkdir"]),
    (["inspect", "{factory_pt}"], ["not a .qir file"]),
]  # fmt: skip


def _args(args: list[str], planted: dict[str, Path], bad: Fixtures, tmp: Path) -> list[str]:
    values = {**{k: str(v) for k, v in planted.items()}, "tmp": str(tmp), "evil": bad.evil,
              "qir": bad.qir}  # fmt: skip
    return [a.format(**values) for a in args]


@pytest.mark.parametrize(("args", "needles"), REFUSED, ids=lambda v: " ".join(v)[:40])
def test_planted_code_is_refused(args, needles, planted, bad: Fixtures, tmp_path: Path) -> None:
    r = run_main(_args(args, planted, bad, tmp_path))
    assert_refused(r, *needles)
    assert not bad.marker.exists()
    assert sorted(tmp_path.iterdir()) == []


def test_qir_names_are_not_followed(planted, bad: Fixtures) -> None:
    """A .qir naming a planted checkpoint, recipe and data directory simulates on the user's
    inputs without touching any of them."""
    r = run_main(["simulate", planted["cifar_qir"], "--inputs", planted["x32_npy"], "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["acc_fakequant"] is None
    assert not bad.marker.exists()


def test_freeze_reads_no_data_file(planted, bad: Fixtures, tmp_path: Path) -> None:
    """Freezing needs the dataset's shape only: a checkpoint whose recipe points at planted
    cifar10 batches freezes without opening them, and records the checkpoint's SHA-256."""
    r = run_main(["freeze", planted["cifar_pt"], "-o", tmp_path / "m.qir"])
    assert r.code == 0, r.stderr
    meta = qir.load(tmp_path / "m.qir").meta()
    assert meta["checkpoint_sha256"] == sha256_file(planted["cifar_pt"])
    assert not bad.marker.exists()


def test_model_named_on_the_command_line_is_used(bad: Fixtures, tmp_path: Path) -> None:
    """--model is the user's own choice of code: a factory file they name is imported."""
    f = tmp_path / "mine.py"
    f.write_text("from qcompile.zoo import build_model\n"
                 "def make(in_shape, num_classes):\n"
                 "    return build_model('lenet', in_shape, num_classes)\n")  # fmt: skip
    r = run_main(["freeze", bad.ckpt, "--model", f"{f}:make", "-o", tmp_path / "m.qir"])
    assert r.code == 0, r.stderr
    assert (tmp_path / "m.qir").is_file()
